"""``trainer.session``: every operation on a training session, in one place.

The dashboard link calls exactly these methods (each is also an RPC method of
docs/protocol.md), so a notebook, a script thread and the dashboard share one
implementation. Methods are safe to call from any thread while ``fit`` runs
and after it returns. Operations that need the model (``test``,
``checkpoint``) run on the training thread at its next batch boundary; the
rest answer on the caller's thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, OnTheFlyError
from ..store.read.operations import DataOperations

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

__all__ = ["SessionHandle"]

_OP_TIMEOUT = 600.0


class SessionHandle(DataOperations):
    """Control and inspect one training session."""

    def __init__(self, trainer: "Trainer") -> None:
        self._trainer = trainer
        self._data_lock = threading.Lock()
        self._con = None

    # -- control ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The session's state: ``{state, step, epoch, session, run, project, pid, ...}``."""
        return self._trainer._status()

    def pause(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Pause at the next batch boundary; returns once paused (or after ``timeout`` s)."""
        t = self._trainer
        t._control.request_pause()
        if t._control.state == "running" and not t._control.on_training_thread():
            t._control.wait_for_state(("paused", "finished", "idle"), timeout)
        return self.status()

    def resume(self, *, epochs: int | None = None) -> dict[str, Any]:
        """Continue a paused run. After the run finished (while a dashboard keeps it
        open), continues training for ``epochs`` more epochs (default 1)."""
        t = self._trainer
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise ConfigError(f"resume(epochs=...) takes a positive integer, got {epochs!r}")
        extend = (epochs or 1) if t._finished_waiting else 0
        was_paused = t._control.state == "paused"
        t._control.request_resume(extend_epochs=extend)
        if was_paused and not t._control.on_training_thread():
            t._control.wait_for_state(("running", "testing", "finished"), 10.0)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop training at the next batch boundary; ``fit`` then returns."""
        self._trainer._control.request_stop()
        return self.status()

    def test(self, *, split: str = "test") -> dict[str, Any]:
        """Evaluate the current model on the ``test`` (or ``val``) loader and record it.

        Leaves the model mode, RNG states and data order as they were: a test in
        the middle of training does not change the run's result.
        """
        if split not in ("test", "val"):
            raise ConfigError(f"test(split=...) takes 'test' or 'val', got {split!r}")
        return self._on_training_thread("test", lambda: self._trainer._run_test(split))

    def checkpoint(self) -> dict[str, Any]:
        """Save model, optimizer, scheduler, scaler, RNG and data position now."""
        return self._on_training_thread("checkpoint", lambda: self._trainer._save_checkpoint("manual"))

    # -- data (query, report, slice, export_slice: DataOperations) --------------
    def export(self, *, path: str) -> dict[str, Any]:
        """Write the whole session (catalog, shards, checkpoints) to a ``.zip`` bundle at ``path``.

        While a model is being trained, the current run first gets a fresh
        checkpoint with optimizer state (other runs keep their latest); the
        training thread waits only for that checkpoint, a flush and a cheap
        staging step (hard links), and the zip is written on the calling
        thread. Returns ``{path, bytes, session, runs, files}``.
        """
        from ..store.bundle.export import snapshot_session, write_bundle

        t = self._trainer
        checkpoint = (lambda: t._save_checkpoint("export")) if t._fitting and t._position().run_id else None
        def snapshot():
            t._release_rows()
            return snapshot_session(t._require_store(), checkpoint=checkpoint)

        snapshot = self._on_training_thread("export", snapshot)
        return write_bundle(snapshot, path=path)

    # -- for the dashboard link -------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a (re)connecting dashboard gets first: the state and the runs."""
        return {"state": self.status(), "runs": self._trainer._runs_payload()}

    # -- internals ---------------------------------------------------------------
    def _writable_catalog(self):
        return self._trainer._require_store().catalog

    def _connection(self):
        from ..store.read.query import connect, refresh

        store = self._trainer._require_store()
        self._trainer._release_rows()
        store.settle()
        if self._con is None:
            self._con = connect(store.dir)
        else:
            refresh(self._con, store.dir)
        return self._con

    def _on_training_thread(self, name: str, run):
        t = self._trainer
        control = t._control
        future = None if control.on_training_thread() else control.submit(name, run)
        if future is None:
            with t._model_lock:
                return run()
        try:
            return future.result(timeout=_OP_TIMEOUT)
        except TimeoutError as exc:  # pragma: no cover - a step longer than the timeout
            raise OnTheFlyError(f"{name} did not start within {_OP_TIMEOUT:.0f} s: the current step is still running") from exc
