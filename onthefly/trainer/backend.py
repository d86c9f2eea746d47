"""What every training integration shares: the session store, the dashboard
link, pause/resume/stop control, events, and the payloads the dashboard gets.

The native ``Trainer`` and the Lightning callback both extend
``TrainingSession``; ``trainer.session`` (``SessionHandle``) talks to either
through the methods below, so every operation has one implementation.
Subclasses provide ``_position()``, ``_run_test(split)`` and
``_save_checkpoint(reason)``.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import sys
import threading
import time
from typing import Any

from .. import distributed as dist
from .._version import __version__
from ..protocol import payloads
from ..store.lifecycle import SessionStore, Store
from .console import Console
from .control import Controller
from .held import HeldBatch, Holding, merged
from .session import SessionHandle

__all__ = ["TrainingSession", "Position", "written_in_background"]

_HEARTBEAT = 5.0  # seconds between the words rank 0 sends the other ranks while paused


def written_in_background(reason: str) -> bool:
    """Whether a checkpoint taken for ``reason`` is written while training goes on.

    The automatic epoch checkpoints are: nobody waits for them, and on a big
    model their write and fsync would stall every epoch. The ones a caller
    waits for (manual, pause, export, final) are written before the call
    returns.

    Example:
        >>> written_in_background("epoch"), written_in_background("manual")
        (True, False)
    """
    return reason == "epoch"


class Position:
    """Where training is: the run, optimizer steps done, epochs finished."""

    __slots__ = ("run_id", "step", "epoch", "max_epochs")

    def __init__(self, run_id: str | None = None, step: int = 0, epoch: int = 0, max_epochs: int | None = None):
        self.run_id, self.step, self.epoch, self.max_epochs = run_id, step, epoch, max_epochs


class TrainingSession:
    """The session side of a training integration (store, link, control, events)."""

    def __init__(self, *, project: str, run_name: str | None, home: str | None, dashboard_port: int | None,
                 connect_dashboard: bool, progress: bool | None) -> None:
        self._project = project
        self._run_name = run_name or "run"
        self._dashboard_port = dashboard_port
        self._connect_dashboard = connect_dashboard
        self._store = Store(home)
        self._session_store: SessionStore | None = None
        self._control = Controller()
        self._control.on_state(self._on_state)
        self._model_lock = threading.RLock()
        self._fitting = False
        self._finished_waiting = False
        self._link = None
        self._last_checkpoint: str | None = None
        self._console = Console(enabled=progress)
        self._rows = Holding(self._log_rows)  # per-sample rows, handed to the writer a few batches at a time
        self.session = SessionHandle(self)

    # -- to provide ---------------------------------------------------------------
    def _position(self) -> Position:
        raise NotImplementedError

    def _run_test(self, split: str) -> dict[str, Any]:
        raise NotImplementedError

    def _save_checkpoint(self, reason: str) -> dict[str, Any]:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        """Disconnect from the dashboard and close the session store (the files stay)."""
        if self._session_store is not None:
            self._release_rows()
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._session_store is not None:
            self._session_store.close()
            self._session_store = None

    def _release_rows(self) -> None:
        """Hand the writer any per-sample rows the loop still holds (a query must see them)."""
        self._rows.release()

    def _log_rows(self, held: list[HeldBatch]) -> None:
        """Hand held per-sample rows to the writer, one call per pass (see :mod:`onthefly.trainer.held`)."""
        writer = self._session_store.writer
        for run_id, split, epoch, columns in merged(held):
            loss = columns.pop("loss")
            writer.log_samples(run_id, split, epoch, columns.pop("step"), columns.pop("sample_id"), loss, **columns)
            self._rows_logged(split, loss)

    def _rows_logged(self, split: str, loss: Any) -> None:
        """Called with each hand-over's split and per-sample losses (numpy)."""

    def _require_store(self) -> SessionStore:
        # Opening a session cleans up earlier ones; a resume checkpoint is
        # already in memory by then.
        if self._session_store is None:
            self._session_store = self._store.open_session(self._project, meta={"argv": sys.argv})
            atexit.register(self.close)
        return self._session_store

    def _start_link(self) -> None:
        if self._link is not None or not self._connect_dashboard:
            return
        from ..link import DashboardLink

        self._link = DashboardLink(
            self.session,
            port=self._dashboard_port,
            client_info={
                "version": __version__, "pid": os.getpid(), "session": self._require_store().id,
                "project": self._project, "run": self._position().run_id, "host": socket.gethostname(),
            },
        )
        self._link.start()

    # -- control at batch boundaries ---------------------------------------------------
    def _boundary(self) -> bool:
        """Serve queued operations and honour pause/stop (training thread). True means stop now."""
        control = self._control
        control.service()
        if control.pause_requested and not control.stop_requested:
            self._record_pause("paused")
            control.set_state("paused")
            control.wait_while_paused()
            if not control.stop_requested:
                self._record_pause("running")
                control.set_state("running")
        return control.stop_requested

    def _ranked_boundary(self) -> bool:
        """The batch boundary on several processes: rank 0 decides, every rank follows.

        Needs ``self._dist`` (``distributed.detect()``), ``self._coll`` (its
        ``Collective``) and ``self._leading``. True means stop now.
        """
        if not self._dist.leader:
            code, _ = self._follow()
            return code == dist.STOP
        control = self._control
        self._leading = True
        try:
            control.service()
            if control.pause_requested and not control.stop_requested:
                self._record_pause("paused")
                control.set_state("paused")
                while control.pause_requested and not control.stop_requested:
                    deadline = time.monotonic() + _HEARTBEAT
                    control.wait_while_paused(keep_waiting=lambda until=deadline: time.monotonic() < until)
                    if control.pause_requested and not control.stop_requested:
                        self._coll.command(dist.HOLD)  # the other ranks keep waiting
                if not control.stop_requested:
                    self._record_pause("running")
                    control.set_state("running")
        finally:
            self._leading = False
        stop = control.stop_requested
        self._coll.command(dist.STOP if stop else dist.GO)
        return stop

    def _follow(self) -> tuple[int, int]:
        """Ranks other than 0: do what rank 0 says until it says go on (GO) or stop (STOP)."""
        while True:
            code, arg = self._coll.command()
            if code in (dist.GO, dist.STOP):
                return code, arg
            if code == dist.TEST:
                self._run_test("test" if arg == 0 else "val")
            elif code == dist.CHECKPOINT:
                self._save_checkpoint("manual")

    def _record_pause(self, status: str) -> None:
        pos = self._position()
        self._session_store.catalog.set_run_status(pos.run_id, status)
        self._log("info", f"training {'paused' if status == 'paused' else 'resumed'} at step {pos.step}",
                  kind="pause" if status == "paused" else "resume")

    def _wait_for_more_work(self) -> int:
        """After the end-of-run test, stay open (paused) while a dashboard is connected.

        Returns how many more epochs the dashboard asked for (0: finish).
        """
        link = self._link
        if link is None or not link.connected:
            return 0
        self._finished_waiting = True
        control = self._control
        control.request_pause()
        control.set_state("paused")
        self._console.note("run finished; waiting for the dashboard (resume to train more, stop to exit)")
        grace = {"until": time.monotonic() + 10.0}

        def still_wanted() -> bool:  # a dashboard restart is not a reason to exit
            if link.connected:
                grace["until"] = time.monotonic() + 10.0
                return True
            return time.monotonic() < grace["until"]

        control.wait_while_paused(keep_waiting=still_wanted)
        self._finished_waiting = False
        extra = control.take_extension()
        if control.stop_requested or control.pause_requested:
            return 0
        if extra:
            control.set_state("running")
        return extra

    # -- recording -------------------------------------------------------------------------
    def _record_test(self, split: str, result: dict[str, Any]) -> dict[str, Any]:
        pos = self._position()
        loss = result["loss"]
        finite = loss is not None and math.isfinite(loss)
        self._session_store.catalog.add_test(run_id=pos.run_id, step=pos.step, epoch=pos.epoch, split=split,
                                             loss=loss if finite else None, metrics=result["metrics"])
        payload = payloads.test_result(run=pos.run_id, split=split, step=pos.step, epoch=pos.epoch, loss=loss,
                                       metrics=result["metrics"], count=result["count"])
        self._notify("test", payload)
        shown = "".join(f" · {k} {v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float))
        self._console.note(f"{split} loss {loss:.4f}{shown}" if finite else f"{split} loss not finite{shown}")
        return payload

    def _store_checkpoint(self, reason: str, **state: Any) -> dict[str, Any]:
        """Save a checkpoint of the run: epoch checkpoints are written on the store's checkpoint
        thread while training goes on (see :func:`written_in_background`), the others before this returns.

        Returns:
            The checkpoint's event payload, or ``{}`` when it is still being written.
        """
        checkpoints = self._session_store.checkpoints
        if written_in_background(reason):
            future = checkpoints.save_in_background(reason=reason, **state)
            future.add_done_callback(lambda done: self._checkpoint_written(done, reason))
            return {}
        return self._record_checkpoint(checkpoints.save(reason=reason, **state), reason)

    def _checkpoint_written(self, future: Any, reason: str) -> None:
        error = future.exception()
        if error is None:
            self._record_checkpoint(future.result(), reason)
        else:
            self._log("error", f"the {reason} checkpoint could not be written: {error}", kind="checkpoint")

    def _record_checkpoint(self, info, reason: str) -> dict[str, Any]:
        self._last_checkpoint = info.id
        payload = payloads.checkpoint(info)
        self._notify("checkpoint", payload)
        return payload

    def _finish_run(self, status: str) -> None:
        pos = self._position()
        self._session_store.settle()
        self._session_store.catalog.set_run_status(pos.run_id, status, ended=True)
        self._control.set_state("finished")
        self._notify("run", self._run_payload(pos.run_id))

    def _fail(self, exc: BaseException) -> None:
        pos, store = self._position(), self._session_store
        if pos.run_id is None or store is None:
            return
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            self._log("warning" if interrupted else "error",
                      f"training {'interrupted' if interrupted else 'failed'}: {exc}",
                      kind="interrupt" if interrupted else "error")
            store.catalog.set_run_status(pos.run_id, "stopped" if interrupted else "failed", ended=True)
            self._control.set_state("finished")
            self._notify("error", {"message": str(exc), "type": type(exc).__name__})
        except Exception:  # the original error matters more
            pass

    # -- what the dashboard reads -------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        pos = self._position()
        store = self._session_store
        return {
            "state": self._control.state, "step": pos.step, "epoch": pos.epoch,
            "session": store.id if store else None, "run": pos.run_id, "project": self._project,
            "pid": os.getpid(), "max_epochs": pos.max_epochs, "checkpoint": self._last_checkpoint,
        }

    def _run_payload(self, run_id: str) -> dict[str, Any]:
        return self._session_store.catalog.run(run_id).summary()

    def _runs_payload(self) -> list[dict[str, Any]]:
        if self._session_store is None:
            return []
        return [self._run_payload(r.id) for r in self._session_store.catalog.runs()]

    def _summary_done(self, future) -> None:
        if future.exception() is not None:
            return
        self._notify("epoch", payloads.epoch_summary(future.result()))

    def _on_state(self, state: str) -> None:
        if self._session_store is not None and self._position().run_id is not None:
            self._notify("state", self._status())

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        if self._link is not None:
            self._link.notify(method, params)

    def _log(self, level: str, message: str, *, kind: str = "log", data: dict | None = None,
             step: int | None = None) -> None:
        pos = self._position()
        step = pos.step if step is None else step
        if self._session_store is not None:
            self._session_store.catalog.add_event(level=level, kind=kind, message=message, run_id=pos.run_id,
                                                  step=step, data=data)
        self._notify("log", {"level": level, "kind": kind, "message": message, "step": step})
        if level in ("warning", "error"):
            self._console.warn(message, level=level)
