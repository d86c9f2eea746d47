"""The :class:`Recorder`: what every kind of run shares, held by the loop that trains it.

A loop (the native ``Trainer``, the Lightning callback, a hand-written loop)
holds one Recorder and calls it in this order::

    recorder = Recorder("mnist", home=root)
    recorder.open_run(name="baseline", config={...})
    with recorder.training():                       # pause/stop/operations are served from here on
        for epoch in range(epochs):
            for step, (ids, batch) in enumerate(batches, 1):
                if not recorder.boundary():         # queued operations, a pause; False: stop now
                    break
                ...                                 # forward, backward, optimizer step
                recorder.record_batch("train", epoch, step, ids, per_sample_loss)
                recorder.record_step({"step": step, "epoch": epoch, "loss": loss})
            recorder.end_pass("train", epoch, step)
            recorder.checkpoint("epoch", lambda: TrainingState(step, epoch + 1, model.state_dict()))
        recorder.finish("finished")

It owns the session's files, the dashboard link, the pause/resume/stop
control, the run's events and what the dashboard reads; ``recorder.session``
(:class:`~onthefly.session.handle.SessionHandle`) steers it from any thread.
What only the loop knows it passes in: where training is (``position``), how
to test and how to checkpoint the model (``test``, ``checkpoint``), for the
operations the handle runs at the next batch boundary. Which process records
what is the business of its :class:`~onthefly.session.ranks.Ranks`.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from ..protocol import payloads
from ..store.lifecycle import SessionFiles, StoreRoot
from ..store.records import PassKey
from .console import Console
from .control import Controller
from .handle import SessionHandle
from .held import HeldBatch, Holding, merged
from .interrupts import interrupt_signal
from .payloads import status_payload
from .ranks import CHECKPOINT, TEST, Ranks, SingleProcess
from .resume import ensure_run
from .rng import capture_rng
from .rows import BatchRows
from .state import Position, TrainingState, checkpoint_parts, written_in_background

__all__ = ["Recorder"]

_HEARTBEAT = 5.0  # seconds between the words rank 0 sends the other ranks while paused
_GRACE = 10.0  # seconds a finished run waits for a dashboard that went away to come back


class Recorder:
    """Records one training process' runs and makes them steerable.

    Args:
        project: the project name shown in the dashboard and ``onthefly ls``.
        run_name: the default name of the runs (``"run"``).
        home: the store root (default ``./.onthefly`` or ``$ONTHEFLY_HOME``).
        dashboard_port / connect_dashboard: where to look for the dashboard, and whether to.
        progress: a progress bar (default: when stdout is a terminal).
        position: where training is now (any thread calls it); default: the
            last step and epoch recorded.
        test: runs an evaluation of ``split`` ("test" or "val") and returns what
            :meth:`evaluate` returns (for ``session.test()`` and the other ranks).
        checkpoint: takes a checkpoint for ``reason`` (for ``session.checkpoint()``).
        on_rows: called with the split and per-sample losses (numpy) of each hand-over to the writer.

    Example:
        >>> recorder = Recorder("demo", home=tmp, connect_dashboard=False)  # doctest: +SKIP
        >>> run_id = recorder.open_run(name="hand-written")                   # doctest: +SKIP
    """

    def __init__(
        self,
        project: str,
        *,
        run_name: str | None = None,
        home: str | os.PathLike[str] | None = None,
        dashboard_port: int | None = None,
        connect_dashboard: bool = True,
        progress: bool | None = None,
        position: Callable[[], Position] | None = None,
        test: Callable[[str], dict[str, Any]] | None = None,
        checkpoint: Callable[[str], dict[str, Any]] | None = None,
        on_rows: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.project = project
        self.run_name = run_name or "run"
        self.store = StoreRoot(home)
        self.ranks: Ranks = SingleProcess()
        self.run_id: str | None = None
        self.last_checkpoint: str | None = None
        self.last_checkpoint_step: int | None = None
        self._dashboard_port = dashboard_port
        self._connect_dashboard = connect_dashboard
        self._progress = progress
        self._position = position
        self._test, self._checkpoint, self._on_rows = test, checkpoint, on_rows
        self._run: dict[str, Any] = {}  # the open run's name, kind and config (checkpoints keep them)
        self._last_step: dict[str, Any] | None = None  # the last step row (the position when none is given)
        self._make_process_local()
        self.session = SessionHandle(self)

    def _make_process_local(self) -> None:
        self._files: SessionFiles | None = None
        self._link = None
        self.control = Controller()
        self.control.on_state(self._on_state)
        self._model_lock = threading.RLock()
        self._fitting = False
        self._told_to_stop = False  # another rank: rank 0 said stop
        self.console = Console(enabled=self._progress)
        self._rows = Holding(self._log_rows)  # per-sample rows, handed to the writer a few batches at a time
        self._holdings: list[Holding] = [self._rows]
        self._batch_rows = BatchRows()
        self._lead, self._serve_command = self._lead_boundary, self._serve  # made once: called every batch

    # ddp_spawn sends the trainer, and so its callback and recorder, to each new process: what belongs
    # to this process (files, link, threads, locks) stays here and is made anew there.
    _PROCESS_LOCAL = (
        "_files",
        "_link",
        "control",
        "_model_lock",
        "console",
        "session",
        "_rows",
        "_holdings",
        "_batch_rows",
        "ranks",
        "_lead",
        "_serve_command",
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        for name in self._PROCESS_LOCAL:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.ranks = SingleProcess()
        self._make_process_local()
        self.session = SessionHandle(self)

    # -- the processes -----------------------------------------------------------------
    def join(self, ranks: Ranks) -> None:
        """Record as one of ``ranks``: only the leading process talks to the dashboard and prints."""
        self.ranks = ranks
        if not ranks.leader:
            import io

            self._connect_dashboard = False
            self.console = Console(enabled=False, stream=io.StringIO())

    # -- the session's files -------------------------------------------------------------
    def files(self) -> SessionFiles:
        """The session's files, opened on first use (cleaning up earlier sessions).

        Raises:
            ConfigError: on a rank other than 0 before its run was opened.
        """
        if self._files is None:
            if not self.ranks.leader:
                raise ConfigError("only rank 0 opens the session store; this rank writes under the session's ranks/")
            self._files = self._open_session()
        return self._files

    def _open_session(self) -> SessionFiles:
        # Opening a session cleans up earlier ones; a resume checkpoint is already in memory by then.
        files = self.store.open_session(self.project, meta={"argv": sys.argv})
        atexit.register(self.close)
        return files

    @property
    def opened(self) -> bool:
        """Whether the session's files are open."""
        return self._files is not None

    @property
    def dir(self):
        """The session folder (opened on first use)."""
        return self.files().dir

    def close(self) -> None:
        """Disconnect from the dashboard and close the session's files (they stay on disk)."""
        if self._files is not None:
            self.hand_over()
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._files is not None:
            self._files.close()
            self._files = None

    def flush(self) -> None:
        """Make every row recorded so far visible to queries (held rows written, checkpoints listed)."""
        if self._files is None:
            return
        self.hand_over()
        self._files.flush()

    def hand_over(self) -> None:
        """Hand the rows held on the training thread to the writer now, without waiting for them to be
        written (:meth:`flush` also waits)."""
        for holding in self._holdings:
            holding.hand_over()

    def flushes(self, holding: Holding) -> None:
        """Have :meth:`flush` hand over ``holding`` too (a loop's own held rows, e.g. step rows)."""
        self._holdings.append(holding)

    # -- a run ---------------------------------------------------------------------------
    def open_run(
        self,
        *,
        name: str | None = None,
        kind: str = "base",
        parents: tuple = (),
        config: dict[str, Any] | None = None,
        hparams: dict[str, Any] | None = None,
        resume: Any = None,
    ) -> str:
        """Open a run in the session (every rank records the same run) and tell the dashboard.

        Args:
            name: the run's name (default the recorder's ``run_name``).
            kind: what made the run ("base" for the user's training).
            parents: ``(run_id, relation)`` pairs: the runs this one comes from.
            config / hparams: JSON-able values shown with the run.
            resume: the :class:`~onthefly.session.resume.ResumePoint` the run starts from;
                its run becomes a parent (``"resumed_from"``), copied into this session if needed.

        Returns:
            The run's id.
        """
        name = name or self.run_name
        opened = self._files
        files = self._files = self.ranks.open_files(
            lambda: opened if opened is not None else self._open_session(), existing=opened, project=self.project
        )
        if opened is None and not self.ranks.leader:
            atexit.register(self.close)

        def add_run() -> str:
            links = tuple(parents)
            if resume is not None and resume.run is not None:
                ensure_run(files.catalog, resume.run)
                links += ((resume.run["id"], "resumed_from"),)
            return files.catalog.add_run(name=name, kind=kind, parents=links, config=config, hparams=hparams).id

        run_id = self.ranks.from_leader(add_run)
        self.ranks.adopt_run(files, run_id, name)
        self.run_id = run_id
        self._run = {"id": run_id, "name": name, "kind": kind, "config": config}
        self._last_step = None
        self._batch_rows.reset()
        self._notify("run", self._run_payload(run_id))
        return run_id

    def connect(self) -> None:
        """Connect to the dashboard (in the background), when asked to and not connected yet."""
        if self._link is not None or not self._connect_dashboard:
            return
        from ..link import DashboardLink

        self._link = DashboardLink(
            self.session,
            port=self._dashboard_port,
            client_info={
                "version": __version__,
                "pid": os.getpid(),
                "session": self.files().id,
                "project": self.project,
                "run": self.run_id,
                "host": socket.gethostname(),
            },
        )
        self._link.start()

    @property
    def connected(self) -> bool:
        """Whether rank 0's dashboard link is connected (the same answer on every rank: one message)."""
        return bool(
            self.ranks.float_from_leader(lambda: 1.0 if self._link is not None and self._link.connected else 0.0)
        )

    # -- the training thread ---------------------------------------------------------------
    def begin(self) -> None:
        """The calling thread becomes the training thread: operations are queued for its boundaries."""
        self.control.reset()
        self.control.begin()
        self._fitting = True
        self._told_to_stop = False

    def end(self) -> None:
        """Operations run on their caller's thread again (those queued run now); rows are flushed."""
        self._fitting = False
        self.control.end()
        self.flush()

    @contextmanager
    def training(self) -> Iterator[None]:
        """:meth:`begin` ... :meth:`end` around a loop; an exception is recorded (:meth:`fail`) and re-raised."""
        with self._model_lock:
            self.begin()
            try:
                yield
            except BaseException as exc:
                self.fail(exc)
                raise
            finally:
                self.end()

    @contextmanager
    def model_held(self) -> Iterator[None]:
        """Hold the lock operations on the model take when no loop serves them (re-entrant)."""
        with self._model_lock:
            yield

    def run_operation(self, name: str, run: Callable[[], Any]) -> Any:
        """Run ``run`` on the training thread at its next batch boundary (or here, when no loop runs).

        Raises:
            OnTheFlyError: the operation did not start within 10 minutes.
        """
        return self.control.run_operation(name, run, lock=self._model_lock)

    @property
    def waiting_for_more_work(self) -> bool:
        """The run finished and stays open (paused) for a dashboard that may ask for more epochs."""
        return self.control.finished_waiting

    @property
    def fitting(self) -> bool:
        """Whether a loop is running (between :meth:`begin` and :meth:`end`)."""
        return self._fitting

    @property
    def stop_requested(self) -> bool:
        """A stop was asked for (on rank 0, or by rank 0 at a boundary of this rank)."""
        return self.control.stop_requested or self._told_to_stop

    def set_state(self, state: str) -> None:
        """The state the dashboard shows ("running", "paused", "testing", "finished")."""
        self.control.set_state(state)

    def boundary(self) -> bool:
        """The batch boundary: run queued operations, hold while paused. True: the loop goes on; False: stop now."""
        go_on = self.ranks.boundary(self._lead, self._serve_command)
        if not go_on:
            self._told_to_stop = True
        return go_on

    def _lead_boundary(self, hold: Callable[[], None] | None) -> bool:
        return self.control.serve_boundary(on_pause=self._record_pause, hold=hold, heartbeat=_HEARTBEAT)

    def _serve(self, command: int, arg: int) -> None:
        """A rank other than 0 joins the operation rank 0 announced."""
        if command == TEST:
            self.test("test" if arg == 0 else "val")
        elif command == CHECKPOINT:
            self.take_checkpoint("manual")

    def agree_on_step(self, finite: bool) -> bool:
        """Whether the batch's loss is finite on every rank (call once a batch, after the forward pass)."""
        return self.ranks.agree_on_step(finite, self.control)

    def records(self, what: str) -> bool:
        """Whether this process records ``what``: a split's rows ("train", "val", "test") or the step
        rows ("steps"); a loop may skip making what it would not record."""
        return self.ranks.records(what)

    # -- rows --------------------------------------------------------------------------------
    def record_batch(
        self,
        split: str,
        epoch: int,
        step: int,
        ids: Any,
        loss: Any,
        output: Any = None,
        target: Any = None,
        *,
        keep: int | None = None,
        defer: bool = True,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Hold one batch's per-sample rows for the writer (see :class:`~onthefly.session.rows.BatchRows`)."""
        held = self._batch_rows.held(
            self.run_id, split, epoch, step, ids, loss, output, target, keep=keep, defer=defer, fields=fields
        )
        if held is not None:
            self._rows.add(held)

    def write_rows(self, split: str, epoch: int, step: int, ids: Any, loss: Any, **fields: Any) -> None:
        """Queue rows (numpy) for the writer at once, without holding them (evaluation loops)."""
        self.files().writer.log_samples(self.run_id, split, epoch, step, ids, loss, **fields)

    def _log_rows(self, held: list[HeldBatch]) -> None:
        """Hand held per-sample rows to the writer, one call per pass (see :mod:`onthefly.session.held`)."""
        writer = self._files.writer
        for run_id, split, epoch, columns in merged(held):
            loss = columns.pop("loss")
            writer.log_samples(run_id, split, epoch, columns.pop("step"), columns.pop("sample_id"), loss, **columns)
            if self._on_rows is not None:
                self._on_rows(split, loss)

    def record_step(self, row: dict[str, Any]) -> None:
        """Log one optimizer step's metrics row (``step``, ``epoch``, ``loss``, ...); rank 0's only."""
        if not self.ranks.leader:
            return
        self._files.writer.log_step(self.run_id, row)
        if self._link is not None:
            self._link.push_step(row)
        self.console.step(row["step"], row["loss"])
        self._last_step = row

    def record_steps(self, rows: list[dict[str, Any]]) -> None:
        """Log several steps' rows at once (see :meth:`record_step`)."""
        if not self.ranks.leader or not rows:
            return
        self._files.writer.log_steps(self.run_id, rows)
        for row in rows:
            if self._link is not None:
                self._link.push_step(row)
            self.console.step(row["step"], row["loss"])
        self._last_step = rows[-1]

    def end_pass(self, split: str, epoch: int, step: int, *, metrics: dict | None = None) -> None:
        """Seal a pass (its rows become one sorted shard) and send the dashboard its summary.

        A train pass is summarised over the rows of every rank.
        """
        self.hand_over()
        sealed = self.files().writer.end_pass(self.run_id, split, epoch, step, metrics=metrics)
        if split == "train":
            self.ranks.summarise_pass(
                sealed, self._files, PassKey(self.run_id, split, int(epoch)), step, metrics, self._summary_done
            )
        else:
            sealed.add_done_callback(self._summary_done)

    # -- operations ------------------------------------------------------------------------------
    def evaluate(self, split: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run an evaluation the loop gives (``run()`` returns ``{loss, count, metrics}``) and record it.

        The other ranks join it from their boundary; the state shows "testing" meanwhile.

        Returns:
            The test's event payload (``{}`` on the ranks that do not record it).
        """
        if not self.ranks.announce(TEST, 0 if split == "test" else 1):
            return {}
        control = self.control
        previous = control.state
        control.set_state("testing")
        try:
            result = run()
        finally:
            control.set_state(previous if previous != "testing" else "running")
        return self._record_test(split, result)

    def test(self, split: str) -> dict[str, Any]:
        """Test with the loop's ``test`` (on this thread)."""
        if self._test is None:
            raise ConfigError("this run has no evaluation: the loop that records it gave the recorder no test")
        return self._test(split)

    def take_checkpoint(self, reason: str) -> dict[str, Any]:
        """Checkpoint with the loop's ``checkpoint`` (on this thread)."""
        if self._checkpoint is None:
            raise ConfigError("this run has no checkpoints: the loop that records it gave the recorder none")
        return self._checkpoint(reason)

    def checkpoint(self, reason: str, state: Callable[[], TrainingState | None]) -> dict[str, Any]:
        """Save a checkpoint of the run: ``state()`` and every rank's RNG, as they are now.

        ``state`` is called on every rank (after the RNG was captured); the
        checkpoint is written once, by rank 0. Epoch checkpoints are written on
        the store's checkpoint thread while training goes on (see
        :func:`~onthefly.session.state.written_in_background`), the others before this returns.

        Returns:
            The checkpoint's event payload, or ``{}`` when it is still being written or written by another rank.
        """
        rng = capture_rng()
        self.ranks.announce(CHECKPOINT)
        rng = self.ranks.checkpoint_rng(rng)
        taken = state()
        if rng is None or taken is None:
            return {}
        files = self._files
        run = {"id": self.run_id, "name": self.run_name, "kind": "base", **self._run}
        parts = checkpoint_parts(taken, rng=rng, session_id=files.id, run=run, version=__version__)
        checkpoints = files.checkpoints
        if written_in_background(reason):
            future = checkpoints.save_in_background(reason=reason, **parts)
            future.add_done_callback(lambda done: self._checkpoint_written(done, reason))
            return {}
        return self._record_checkpoint(checkpoints.save(reason=reason, **parts), reason)

    def _checkpoint_written(self, future: Any, reason: str) -> None:
        error = future.exception()
        if error is None:
            self._record_checkpoint(future.result(), reason)
        else:
            self.log("error", f"the {reason} checkpoint could not be written: {error}", kind="checkpoint")

    def _record_checkpoint(self, info, reason: str) -> dict[str, Any]:
        self.last_checkpoint, self.last_checkpoint_step = info.id, int(info.step)
        payload = payloads.checkpoint(info)
        self._notify("checkpoint", payload)
        return payload

    # -- the end of a run ---------------------------------------------------------------------------
    def more_epochs(self, *, do_test_after: bool, has_test: Callable[[], bool]) -> Iterator[int]:
        """After the last epoch: the end-of-run test, then, while a dashboard keeps the run open,
        how many more epochs it asks for (one value per request; none: finish).

        Example:
            >>> for more in recorder.more_epochs(do_test_after=True, has_test=lambda: True):  # doctest: +SKIP
            ...     train(epochs=more)
        """
        while do_test_after:
            self.final_test(has_test())
            more = self.ranks.more_work(self._wait_for_more_work, self._serve_command)
            if not more:
                return
            yield more

    def final_test(self, has_test: bool) -> None:
        """The end-of-run test, or a warning that there is no test loader."""
        if has_test:
            self.test("test")
        else:
            self.log("warning", "do_test_after=True but no test_loader was given: no test ran")

    def _wait_for_more_work(self) -> int:
        """After the end-of-run test, stay open (paused) while a dashboard is connected.

        Returns how many more epochs the dashboard asked for (0: finish).
        """
        link = self._link
        if link is None or not link.connected:
            return 0
        self.console.note("run finished; waiting for the dashboard (resume to train more, stop to exit)")
        grace = {"until": time.monotonic() + _GRACE}

        def still_wanted() -> bool:  # a dashboard restart is not a reason to exit
            if link.connected:
                grace["until"] = time.monotonic() + _GRACE
                return True
            return time.monotonic() < grace["until"]

        return self.control.wait_for_more_epochs(keep_waiting=still_wanted)

    def finish(self, status: str) -> None:
        """End the run: every row written, its status set ("finished" or "stopped"), the dashboard told."""
        self._files.flush()
        self._files.catalog.set_run_status(self.run_id, status, ended=True)
        self.control.set_state("finished")
        self._notify("run", self._run_payload(self.run_id))

    def fail(self, exc: BaseException) -> None:
        """Record that the run ended with ``exc`` (the caller re-raises it).

        Ctrl+C and SIGTERM (:mod:`~onthefly.session.interrupts`) mark the run ``"interrupted"``,
        other errors ``"failed"``.
        """
        if self.run_id is None or self._files is None:
            return
        signum = interrupt_signal(exc)
        interrupted = signum is not None
        try:
            what = f"interrupted ({signal.Signals(signum).name})" if interrupted else f"failed: {exc}"
            # an interrupt is said in one line by the loop (interrupt_line), not printed here as well
            self.log(
                "info" if interrupted else "error", f"training {what}", kind="interrupt" if interrupted else "error"
            )
            self._files.catalog.set_run_status(self.run_id, "interrupted" if interrupted else "failed", ended=True)
            self.control.set_state("finished")
            self._notify("error", {"message": str(exc), "type": type(exc).__name__})
        except Exception:  # the original error matters more
            pass

    def interrupted(self, signum: int, *, checkpoint: Callable[[], Any] | None = None) -> None:
        """After Ctrl+C or SIGTERM (rows flushed and the run marked by :meth:`fail`): the interrupt's own
        checkpoint where the loop stopped at a batch boundary and the ranks take one there, then the one line
        saying where the session is and how to continue (logged and printed by the leading rank)."""
        if not self.opened and self.ranks.leader:
            return
        if checkpoint is not None and self.ranks.interrupts_wait_for_the_step:
            try:
                checkpoint()
            except Exception as error:  # the interrupt matters more
                self.log("warning", f"no checkpoint at the interrupt: {error}", kind="checkpoint")
        line = self.interrupt_line(signum)
        if self.ranks.leader:
            self.log("info", line, kind="interrupt")
            self.console.close()
            print(line, file=sys.stderr, flush=True)

    def interrupt_line(self, signum: int) -> str:
        """The one line an interrupted fit prints: where the session is and how to continue
        (from the run's latest checkpoint)."""
        files, pos, checkpoint = self._files, self.position(), self.last_checkpoint
        name = signal.Signals(signum).name
        where = f"session {files.id} ({files.dir})" if files is not None else "no session"
        if checkpoint is not None:
            how = (
                f'continue with resume_from="{files.id}/{self.run_id}" (checkpoint {checkpoint}, '
                f"step {self.last_checkpoint_step})"
                if files is not None
                else f'continue with resume_from="{checkpoint}"'
            )
        else:
            how = "no checkpoint yet: run it again to start over"
        return (
            f"[onthefly] training interrupted ({name}) at step {pos.step}, epoch {pos.epoch}: every row so far "
            f"is saved in {where}; {how}"
        )

    # -- events and what the dashboard reads --------------------------------------------------------
    def position(self) -> Position:
        """Where training is: from the loop's ``position``, else the last step row recorded."""
        if self._position is not None:
            return self._position()
        row = self._last_step
        return Position() if row is None else Position(int(row["step"]), int(row.get("epoch") or 0))

    def _record_pause(self, status: str) -> None:
        self._files.catalog.set_run_status(self.run_id, status)
        self.log(
            "info",
            f"training {'paused' if status == 'paused' else 'resumed'} at step {self.position().step}",
            kind="pause" if status == "paused" else "resume",
        )

    def _record_test(self, split: str, result: dict[str, Any]) -> dict[str, Any]:
        pos = self.position()
        payload = payloads.test_result(
            run=self.run_id,
            split=split,
            step=pos.step,
            epoch=pos.epoch,
            loss=result["loss"],
            metrics=result["metrics"],
            count=result["count"],
        )
        self._files.catalog.add_test(
            run_id=self.run_id,
            step=pos.step,
            epoch=pos.epoch,
            split=split,
            loss=payload["loss"],
            metrics=result["metrics"],
        )
        self._notify("test", payload)
        shown = "".join(f" · {k} {v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float))
        loss = payload["loss"]
        self.console.note(f"{split} loss {loss:.4f}{shown}" if loss is not None else f"{split} loss not finite{shown}")
        return payload

    def status(self) -> dict[str, Any]:
        """``{state, step, epoch, session, run, project, pid, max_epochs, checkpoint}``."""
        files = self._files
        return status_payload(
            state=self.control.state,
            position=self.position(),
            session_id=files.id if files else None,
            run_id=self.run_id,
            project=self.project,
            checkpoint=self.last_checkpoint,
        )

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the session, as the dashboard shows them."""
        if self._files is None:
            return []
        return [self._run_payload(r.id) for r in self._files.catalog.runs()]

    def _run_payload(self, run_id: str) -> dict[str, Any]:
        return self._files.catalog.run(run_id).summary()

    def _summary_done(self, future) -> None:
        if future.exception() is not None:
            return
        self._notify("epoch", payloads.epoch_summary(future.result()))

    def _on_state(self, state: str) -> None:
        if self._files is not None and self.run_id is not None:
            self._notify("state", self.status())

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        if self._link is not None:
            self._link.notify(method, params)

    def log(
        self, level: str, message: str, *, kind: str = "log", data: dict | None = None, step: int | None = None
    ) -> None:
        """An event of the run: stored, sent to the dashboard, printed when it is a warning or an error."""
        step = self.position().step if step is None else step
        if self._files is not None:
            self._files.catalog.add_event(
                level=level, kind=kind, message=message, run_id=self.run_id, step=step, data=data
            )
        self._notify("log", {"level": level, "kind": kind, "message": message, "step": step})
        if level in ("warning", "error"):
            self.console.warn(message, level=level)
