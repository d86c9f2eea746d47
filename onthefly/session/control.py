"""Control of a running fit: what the loop should do at a step boundary.

The decisions are pure functions the loop calls (``boundary_action``, ``stop_reason``,
``validation_due``, ``nonfinite_action``); ``Controller`` holds the flags and
the queue of operations other threads (the session handle, the dashboard
link) ask the training thread to run at its next batch boundary.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import OnTheFlyError

__all__ = [
    "STATES",
    "Controller",
    "boundary_action",
    "stop_reason",
    "validation_due",
    "nonfinite_action",
    "scheduler_metric",
]

STATES = ("idle", "running", "paused", "testing", "finished")

_OPERATION_TIMEOUT = 600.0  # seconds an operation may wait for the training thread's next boundary


def boundary_action(*, pause: bool, stop: bool) -> str:
    """What a batch boundary does with the requests it finds: "stop", "pause" (hold until resumed) or "go".

    Example:
        >>> boundary_action(pause=True, stop=True), boundary_action(pause=True, stop=False)
        ('stop', 'pause')
    """
    if stop:
        return "stop"
    return "pause" if pause else "go"


def stop_reason(*, step: int, epoch: int, max_steps: int | None, max_epochs: int | None) -> str | None:
    """Why training must stop now, or None.

    ``epoch`` counts finished epochs; ``step`` counts optimizer steps.
    """
    if max_steps is not None and step >= max_steps:
        return f"max_steps={max_steps} reached"
    if max_epochs is not None and epoch >= max_epochs:
        return f"max_epochs={max_epochs} reached"
    return None


def validation_due(*, finished_epochs: int, every: int, has_loader: bool) -> bool:
    """Validation runs after every ``every``-th epoch; ``every`` of 0 turns it off."""
    return has_loader and every > 0 and finished_epochs % every == 0


def nonfinite_action(*, consecutive: int, patience: int, dashboard_connected: bool) -> str:
    """What to do after ``consecutive`` non-finite steps in a row: skip, pause or raise."""
    if consecutive < patience:
        return "skip"
    return "pause" if dashboard_connected else "raise"


def scheduler_metric(*, val_loss: float | None, train_loss: float | None) -> float | None:
    """The value ReduceLROnPlateau gets: validation loss, else the epoch's train loss."""
    return val_loss if val_loss is not None else train_loss


@dataclass
class _Command:
    name: str
    run: Callable[[], Any]
    future: Future = field(default_factory=Future)


class Controller:
    """Flags and queued operations shared by the training thread and its callers.

    Thread-safe. The training thread calls ``service()`` at every batch
    boundary and ``wait_while_paused()`` when it must hold still.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._state = "idle"
        self._pause_requested = False
        self._stop_requested = False
        self._extend_epochs = 0
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._accepting = False
        self.training_thread: int | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._finished_waiting = False

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    def set_state(self, state: str) -> None:
        assert state in STATES, state
        with self._lock:
            changed = state != self._state
            self._state = state
            self._lock.notify_all()
        if changed:
            for listener in list(self._listeners):
                listener(state)

    def on_state(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def wait_for_state(self, states: tuple[str, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._state not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # -- requests from other threads ----------------------------------------
    def request_pause(self) -> None:
        with self._lock:
            self._pause_requested = True
            self._lock.notify_all()

    def request_resume(self, *, extend_epochs: int = 0) -> None:
        with self._lock:
            self._pause_requested = False
            self._extend_epochs += extend_epochs
            self._lock.notify_all()

    def request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            self._pause_requested = False
            self._lock.notify_all()

    @property
    def pause_requested(self) -> bool:
        return self._pause_requested

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def boundary_wanted(self) -> bool:
        """Something for the next batch boundary: a queued operation, a pause or a stop."""
        return self._pause_requested or self._stop_requested or not self._commands.empty()

    @property
    def finished_waiting(self) -> bool:
        """The run finished and the training thread waits for more epochs (:meth:`wait_for_more_epochs`)."""
        return self._finished_waiting

    def take_extension(self) -> int:
        with self._lock:
            n, self._extend_epochs = self._extend_epochs, 0
            return n

    def reset(self) -> None:
        """Called at the start of a fit: earlier requests do not carry over."""
        with self._lock:
            self._pause_requested = False
            self._stop_requested = False
            self._extend_epochs = 0

    # -- operations run on the training thread -------------------------------
    def on_training_thread(self) -> bool:
        return self.training_thread == threading.get_ident()

    def begin(self) -> None:
        """The calling thread becomes the training thread and accepts operations."""
        with self._lock:
            self.training_thread = threading.get_ident()
            self._accepting = True

    def end(self) -> None:
        """Stop accepting operations and run those still queued (training thread)."""
        with self._lock:
            self._accepting = False
        self.service()
        self.training_thread = None

    def submit(self, name: str, run: Callable[[], Any]) -> Future | None:
        """Queue ``run`` for the training thread's next boundary.

        Returns None when no training thread is running: the caller runs it itself.
        """
        command = _Command(name, run)
        with self._lock:
            if not self._accepting:
                return None
            self._commands.put(command)
            self._lock.notify_all()
        return command.future

    def service(self) -> int:
        """Run the queued operations (training thread only). Returns how many ran."""
        ran = 0
        while self._commands.qsize():  # the usual case, nothing queued, costs no exception
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return ran
            ran += 1
            if not command.future.set_running_or_notify_cancel():
                continue
            try:
                command.future.set_result(command.run())
            except BaseException as exc:  # handed to the caller, never kills training
                command.future.set_exception(exc)
        return ran

    def wait_while_paused(self, *, keep_waiting: Callable[[], bool] | None = None, poll: float = 0.2) -> None:
        """Hold the training thread while paused, still serving queued operations.

        Returns when resumed or stopped, or when ``keep_waiting()`` turns false.
        """
        while True:
            self.service()
            with self._lock:
                if self._stop_requested or not self._pause_requested:
                    return
                if keep_waiting is not None and not keep_waiting():
                    return
                if self._commands.empty():
                    self._lock.wait(poll)

    # -- what the training thread does with the requests --------------------
    def serve_boundary(
        self, *, on_pause: Callable[[str], None], hold: Callable[[], None] | None, heartbeat: float
    ) -> bool:
        """A batch boundary (training thread): run queued operations, hold while paused.

        ``on_pause("paused")`` and ``on_pause("running")`` are called around a
        pause; while paused, ``hold()`` (when given) is called every
        ``heartbeat`` seconds (rank 0 tells the other ranks to keep waiting).

        Returns:
            True: the loop goes on; False: stop now.
        """
        self.service()
        if not self._pause_requested or self._stop_requested:  # the usual case: nothing to hold for
            return not self._stop_requested
        if boundary_action(pause=self.pause_requested, stop=self.stop_requested) == "pause":
            on_pause("paused")
            self.set_state("paused")
            while boundary_action(pause=self.pause_requested, stop=self.stop_requested) == "pause":
                if hold is None:
                    self.wait_while_paused()
                    continue
                deadline = time.monotonic() + heartbeat
                self.wait_while_paused(keep_waiting=lambda until=deadline: time.monotonic() < until)
                if boundary_action(pause=self.pause_requested, stop=self.stop_requested) == "pause":
                    hold()
            if not self.stop_requested:
                on_pause("running")
                self.set_state("running")
        return not self.stop_requested

    def wait_for_more_epochs(self, *, keep_waiting: Callable[[], bool]) -> int:
        """After a finished run (training thread): stay paused while ``keep_waiting()``; the epochs a
        resume asked for (0: finish)."""
        self._finished_waiting = True
        self.request_pause()
        self.set_state("paused")
        try:
            self.wait_while_paused(keep_waiting=keep_waiting)
        finally:
            self._finished_waiting = False
        extra = self.take_extension()
        if self.stop_requested or self.pause_requested:
            return 0
        if extra:
            self.set_state("running")
        return extra

    def run_operation(self, name: str, run: Callable[[], Any], *, lock: Any) -> Any:
        """Run ``run`` on the training thread at its next boundary, or here under ``lock`` when none serves.

        Raises:
            OnTheFlyError: the operation did not start within 10 minutes.
        """
        future = None if self.on_training_thread() else self.submit(name, run)
        if future is None:
            with lock:
                return run()
        try:
            return future.result(timeout=_OPERATION_TIMEOUT)
        except TimeoutError as exc:  # pragma: no cover - a step longer than the timeout
            raise OnTheFlyError(
                f"{name} did not start within {_OPERATION_TIMEOUT:.0f} s: the current step is still running"
            ) from exc
