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

from ..errors import ConfigError
from ..store.read.operations import DataOperations

if TYPE_CHECKING:  # pragma: no cover
    from .recorder import Recorder

__all__ = ["SessionHandle"]


class SessionHandle(DataOperations):
    """Control and inspect one training session (through its :class:`~onthefly.session.recorder.Recorder`)."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._data_lock = threading.Lock()
        self._con = None

    @property
    def dir(self):
        """The session folder (``<home>/sessions/<id>``), opened on first use."""
        return self._recorder.dir

    # -- control ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The session's state: ``{state, step, epoch, session, run, project, pid, ...}``."""
        return self._recorder.status()

    def pause(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Pause at the next batch boundary; returns once paused (or after ``timeout`` s)."""
        control = self._recorder.control
        control.request_pause()
        if control.state == "running" and not control.on_training_thread():
            control.wait_for_state(("paused", "finished", "idle"), timeout)
        return self.status()

    def resume(self, *, epochs: int | None = None) -> dict[str, Any]:
        """Continue a paused run. After the run finished (while a dashboard keeps it
        open), continues training for ``epochs`` more epochs (default 1)."""
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise ConfigError(f"resume(epochs=...) takes a positive integer, got {epochs!r}")
        control = self._recorder.control
        extend = (epochs or 1) if self._recorder.waiting_for_more_work else 0
        was_paused = control.state == "paused"
        control.request_resume(extend_epochs=extend)
        if was_paused and not control.on_training_thread():
            control.wait_for_state(("running", "testing", "finished"), 10.0)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop training at the next batch boundary; ``fit`` then returns."""
        self._recorder.control.request_stop()
        return self.status()

    def test(self, *, split: str = "test") -> dict[str, Any]:
        """Evaluate the current model on the ``test`` (or ``val``) loader and record it.

        Leaves the model mode, RNG states and data order as they were: a test in
        the middle of training does not change the run's result.
        """
        if split not in ("test", "val"):
            raise ConfigError(f"test(split=...) takes 'test' or 'val', got {split!r}")
        recorder = self._recorder
        return recorder.run_operation("test", lambda: recorder.test(split))

    def checkpoint(self) -> dict[str, Any]:
        """Save model, optimizer, scheduler, scaler, RNG and data position now."""
        recorder = self._recorder
        return recorder.run_operation("checkpoint", lambda: recorder.take_checkpoint("manual"))

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

        recorder = self._recorder
        checkpoint = (lambda: recorder.take_checkpoint("export")) if recorder.fitting and recorder.run_id else None

        def snapshot():
            files = recorder.files()
            recorder.flush()
            return snapshot_session(files, checkpoint=checkpoint)

        return write_bundle(recorder.run_operation("export", snapshot), path=path)

    # -- for the dashboard link -------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a (re)connecting dashboard gets first: the state and the runs."""
        return {"state": self.status(), "runs": self._recorder.runs()}

    # -- internals ---------------------------------------------------------------
    def _writable_catalog(self):
        return self._recorder.files().catalog

    def _connection(self):
        from ..store.read.query import connect, refresh

        recorder = self._recorder
        folder = recorder.files().dir
        recorder.flush()
        if self._con is None:
            self._con = connect(folder)
        else:
            refresh(self._con, folder)
        return self._con
