"""The shard writer: per-sample rows and step metrics to Parquet, off the loop.

The training loop hands each step's arrays to :class:`ShardWriter`, which
queues references to them (a bounded queue: when the writer falls behind, the
loop waits instead of memory growing). Three daemon threads do the rest, in
order:

- the *collector* moves queued rows into per-pass buffers and decides when a
  buffer becomes a part: at least every ``flush_interval`` seconds while rows
  arrive, sooner past :data:`MAX_PART_ROWS`;
- the *prepare* worker turns a buffer into an Arrow table sorted by
  ``sample_id`` (while the commit worker writes the previous one);
- the *commit* worker writes each file (temp name, fsync, rename), lists it in
  the catalog, merges a pass's parts past :data:`MAX_LIVE_PARTS` (tiered),
  compacts a pass into one sealed file at ``end_pass`` and writes its summary,
  and deletes retired files once their grace period is over.

Only the commit worker touches the catalog and the files, so they change in
the order the caller logged. The checks of what callers hand over live in
:mod:`onthefly.store.shards.writer_input`, the tables and files the workers build in
:mod:`onthefly.store.shards.parts`.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from onthefly.errors import ConfigError, OnTheFlyError, StoreError
from onthefly.store.background import lower_this_thread
from onthefly.store.layout import samples_folder, steps_folder
from onthefly.store.records import PassKey, ShardInfo
from onthefly.store.shards.arrow_numpy import to_numpy
from onthefly.store.shards.handoff import Handoff
from onthefly.store.shards.parts import (
    ROW_GROUP_ROWS,
    pass_summary,
    plan_merge,
    read_parquet,
    samples_part,
    sorted_table,
    steps_part,
    write_parquet,
)
from onthefly.store.shards.writer_input import (
    PLAIN_NUMBERS,
    check_name,
    class_scores,
    column,
    steps_columns,
)
from onthefly.store.shards.writer_items import (
    Close,
    EndPass,
    Flush,
    SampleRows,
    StepRows,
    is_urgent,
)

if TYPE_CHECKING:
    from onthefly.store.catalog.catalog import Catalog
    from onthefly.store.records import EpochSummary

__all__ = ["ShardWriter", "MAX_PART_ROWS"]

FLUSH_INTERVAL = 2.0
"""Default seconds a logged row may wait before it is in a listed part.

Each part costs a few milliseconds of a writer thread (build, Parquet write,
fsync, catalog row) whatever its size, which a training loop sharing the
CPU pays for; a query through the session handle (``trainer.session.query``,
which the dashboard uses) flushes first and sees every row logged so far
whatever the interval. What the interval bounds is what a crash loses and how
fresh a reader that opens the files itself (``onthefly.sql()``, the CLI,
another process) finds a live session.
"""

MAX_PART_ROWS = 4 * ROW_GROUP_ROWS
"""A part is written early once this many rows wait, whatever the interval."""

_IN_FLIGHT = 2  # parts built or being written at once; the collector waits past this
_DRAIN = 64  # queued items the collector takes at once
_GC_EVERY = 1.0  # seconds between looks for retired files past their grace period
_TRAILING_NUMBER = re.compile(r"(\d+)\.parquet$")


@dataclass
class _Buffer:
    """Rows received for one pass (or one run's steps) and not yet handed to the workers."""

    batches: list[tuple[Any, dict[str, Any], int]] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0  # monotonic time of the oldest row waiting


class _Worker:
    """One daemon thread running submitted calls in submission order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        lower_this_thread()
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


class ShardWriter:
    """Writes per-sample rows and step metrics of a session as Parquet shards.

    Args:
        session_dir: the session folder; shard paths are relative to it.
        catalog: the session's writable catalog, where every file is listed.
        flush_interval: seconds a logged row may wait before it is in a
            listed part (and so visible to queries and safe from a crash).
        max_queue: queued calls before ``log_samples`` waits (backpressure).
        retire_grace: seconds a merged-away file stays on disk for readers
            holding an older shard list.
        on_summary: called on a writer thread with each stored pass summary;
            it must not call this writer's ``flush``, ``end_pass`` or ``close``.

    Call :meth:`close` (or use the writer as a context manager): rows still
    buffered when the process exits without it are lost, as in a crash.

    Example:
        >>> writer = ShardWriter(session_dir, catalog)                  # doctest: +SKIP
        >>> writer.log_samples(run.id, "train", 0, 12, ids, losses)     # doctest: +SKIP
        >>> summary = writer.end_pass(run.id, "train", 0, 12).result()  # doctest: +SKIP
        >>> writer.close()                                              # doctest: +SKIP
    """

    def __init__(
        self,
        session_dir: Path,
        catalog: Catalog,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        max_queue: int = 256,
        retire_grace: float = 30.0,
        on_summary: Callable[[EpochSummary], None] | None = None,
    ) -> None:
        if not flush_interval > 0:
            raise ConfigError(
                f"flush_interval={flush_interval!r} is not positive: pass seconds > 0 (default {FLUSH_INTERVAL})"
            )
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue={max_queue!r} is not a positive integer: pass >= 1 (default 256)")
        if not retire_grace >= 0:
            raise ConfigError(f"retire_grace={retire_grace!r} is negative: pass seconds >= 0 (default 30)")
        self._dir = Path(session_dir)
        self._catalog = catalog
        self._interval = float(flush_interval)
        self._grace = float(retire_grace)
        self._on_summary = on_summary
        self._queue = Handoff(max_queue)
        self._closed = False
        self._names_ok: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # guards _pending and the error count
        self._pending: list[OnTheFlyError] = []
        self._stats = dict.fromkeys(("rows_written", "parts_written", "bytes_written", "merges"), 0)
        self._stats.update(files_deleted=0, queue_high_water=0, blocked_seconds=0.0, errors=0)
        # Collector state.
        self._samples: dict[PassKey, _Buffer] = {}
        self._steps: dict[str, _Buffer] = {}
        self._in_flight = threading.BoundedSemaphore(_IN_FLIGHT)
        self._next_gc = 0.0
        # Commit-worker state.
        self._live: dict[tuple, list[ShardInfo]] = {}  # open pass, or ("steps", run_id) -> its files
        self._step_runs: set[str] = set()
        self._retired_due = [0.0]  # when retired files may be deleted (first: whatever an earlier writer left)
        self._counters: dict[Path, int] = {}
        self._prepare = _Worker("onthefly-shard-prepare")
        self._commit = _Worker("onthefly-shard-commit")
        self._thread = threading.Thread(target=self._run, name="onthefly-shard-collector", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def log_samples(
        self,
        run_id: str,
        split: str,
        epoch: int,
        step: Any,
        sample_id: Any,
        loss: Any,
        *,
        label: Any = None,
        pred: Any = None,
        correct: Any = None,
        margin: Any = None,
        grad_norm: Any = None,
        scores: Any = None,
    ) -> None:
        """Queue the per-sample rows of one step.

        The arrays are referenced, not copied: do not modify them afterwards.
        Waits only when the queue is full (the time is counted in
        ``stats["blocked_seconds"]``).

        Args:
            run_id: the run the rows belong to.
            split: ``"train"``, ``"val"``, ``"test"`` (or another safe name).
            epoch: the epoch of the rows.
            step: the global step, an int for all rows or one per row.
            sample_id: dataset indices (integers, 1-D numpy array or CPU tensor).
            loss: per-sample losses, same length.
            label: optional per-sample integer labels.
            pred: optional per-sample integer predictions.
            correct: optional per-sample booleans.
            margin: optional per-sample margins.
            grad_norm: optional per-sample gradient norms.
            scores: optional ``[n, C]`` class scores (logits or
                log-probabilities, ``C >= 2``) given with ``label`` instead of
                ``pred``, ``correct`` and ``margin``: the writer's thread
                derives those from them (:func:`onthefly.store.shards.scores.fields_from_scores`).

        Raises:
            ConfigError: lengths differ, an array is not 1-D or of a wrong
                kind, a tensor is not on the CPU, or a name is unsafe.
            StoreError: the writer is closed.

        Example:
            >>> writer.log_samples(run_id, "train", 0, 7, np.arange(4), np.ones(4))  # doctest: +SKIP
        """
        self._check_open()
        if (run_id, split) not in self._names_ok:
            check_name("run_id", run_id)
            check_name("split", split)
            self._names_ok.add((run_id, split))
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} is not an integer >= 0: pass the epoch number as an int")
        ids = column("sample_id", sample_id, "iu")
        n = ids.shape[0]
        cols = {"sample_id": ids, "loss": column("loss", loss, "fiu", n)}
        for name, value, kinds in (
            ("label", label, "iu"),
            ("pred", pred, "iu"),
            ("correct", correct, "biu"),
            ("margin", margin, "fiu"),
            ("grad_norm", grad_norm, "fiu"),
        ):
            if value is not None:
                cols[name] = column(name, value, kinds, n)
        if scores is not None:
            cols["scores"] = class_scores(scores, n, given=cols)
        if not isinstance(step, (int, np.integer)):
            step = column("step", step, "iu", n)
        self._put(SampleRows(PassKey(run_id, split, int(epoch)), step, cols, n))

    def log_steps(self, run_id: str, rows: Mapping[str, Sequence] | Sequence[Mapping]) -> None:
        """Queue step metrics: a columnar dict or a list of row dicts.

        ``step`` is required; a missing ``time`` is filled with the time of
        the call. Known metrics (see ``STEPS_SCHEMA``) keep their types, any
        other numeric metric becomes a ``float64`` column.

        Args:
            run_id: the run the metrics belong to.
            rows: ``{"step": [...], "loss": [...]}`` or ``[{"step": 1, "loss": 0.3}, ...]``.

        Raises:
            ConfigError: ``step`` is missing, lengths differ, or a value is
                not a number (a tensor should be passed as ``.item()``).
            StoreError: the writer is closed.

        Example:
            >>> writer.log_steps(run_id, {"step": [10], "loss": [0.42], "lr": [1e-3]})  # doctest: +SKIP
        """
        self._check_open()
        if (run_id, "") not in self._names_ok:
            check_name("run_id", run_id)
            self._names_ok.add((run_id, ""))
        columns = steps_columns(rows)
        n = len(columns["step"])
        if n:
            columns.setdefault("time", [time.time()] * n)
            self._put(StepRows(run_id, columns, n))

    def log_step(self, run_id: str, row: Mapping[str, Any]) -> None:
        """Queue the metrics of one step, ``{"step": 12, "loss": 0.3, ...}``.

        The same rows and checks as ``log_steps(run_id, [row])`` at a third of
        the cost: the training loops call this once a step.

        Raises:
            ConfigError: as :meth:`log_steps`.
            StoreError: the writer is closed.
        """
        if "step" not in row or "run_id" in row or not all(type(v) in PLAIN_NUMBERS for v in row.values()):
            self.log_steps(run_id, [row])  # anything unusual: the general path converts it or says what is wrong
            return
        self._check_open()
        if (run_id, "") not in self._names_ok:
            check_name("run_id", run_id)
            self._names_ok.add((run_id, ""))
        columns = {str(name): (value,) for name, value in row.items()}
        if "time" not in columns:
            columns["time"] = (time.time(),)
        self._put(StepRows(run_id, columns, 1))

    def end_pass(
        self, run_id: str, split: str, epoch: int, step: int, *, metrics: dict | None = None
    ) -> concurrent.futures.Future:
        """Close a pass: compact its rows into one sorted file and summarise them.

        For ``"train"`` the pass is every row of (run, train, epoch), parts an
        earlier writer left included; for other splits it is the rows of
        (run, split, epoch) logged since that split's previous ``end_pass``.

        Args:
            run_id: the run.
            split: the split of the pass.
            epoch: the epoch of the pass.
            step: the global step when the pass ended (stored with the summary).
            metrics: extra numbers stored with the summary (``accuracy`` is
                added when ``correct`` was logged, ``nonfinite`` when some
                losses were not finite).

        Returns:
            A future resolving to the stored :class:`EpochSummary`, or raising
            the :class:`StoreError` that stopped the compaction (the pass's
            parts then stay listed and readable).

        Raises:
            StoreError: an earlier background error (it names the file).

        Example:
            >>> writer.end_pass(run_id, "val", 2, 900).result().p50  # doctest: +SKIP
        """
        self._check_open()
        self._raise_pending()
        check_name("run_id", run_id)
        check_name("split", split)
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} is not an integer >= 0: pass the epoch number as an int")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._put(EndPass(PassKey(run_id, split, int(epoch)), int(step), dict(metrics or {}), future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued before the call is in listed shards.

        Args:
            timeout: seconds to wait at most (``None``: no limit).

        Raises:
            StoreError: the timeout passed, or a background error happened
                since the last check (the message names the file).
        """
        self._check_open()
        self._wait("flush", timeout)
        self._raise_pending()

    def close(self, timeout: float | None = None) -> None:
        """Flush, merge each run's step shards into one file and stop the threads.

        Calling it again does nothing.

        Args:
            timeout: seconds to wait at most (``None``: no limit).

        Raises:
            StoreError: the timeout passed, or a background error happened
                since the last check (the message names the file).
        """
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._wait("close", timeout)
            self._thread.join(timeout)
        self._raise_pending()

    @property
    def stats(self) -> dict:
        """Counters: rows_written, parts_written, bytes_written (every file,
        merges included), merges, files_deleted, queue_high_water,
        blocked_seconds, errors."""
        return dict(self._stats)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the shard writer of {self._dir} is closed: create a new ShardWriter to log more rows")

    def _put(self, item: SampleRows | StepRows | EndPass | Flush | Close) -> None:
        urgent = is_urgent(item)  # flush, end_pass, close: the caller waits for them
        if not self._queue.put(item, urgent=urgent, timeout=0):
            start = time.perf_counter()
            while not self._queue.put(item, urgent=urgent, timeout=0.1):
                if not self._thread.is_alive():
                    raise StoreError(
                        f"the shard writer thread of {self._dir} has stopped: close it and open a new one"
                    ) from None
            self._stats["blocked_seconds"] += time.perf_counter() - start
        size = self._queue.qsize()
        if size > self._stats["queue_high_water"]:
            self._stats["queue_high_water"] = size

    def _wait(self, what: str, timeout: float | None) -> None:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._put(Flush(future) if what == "flush" else Close(future))
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise StoreError(
                f"{what} of the shard writer of {self._dir} did not finish within {timeout} s: "
                f"the disk is slow or the writer is stuck; call {what}() again with a longer timeout"
            ) from None

    def _raise_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        first, more = pending[0], len(pending) - 1
        if more:
            raise type(first)(f"{first} (and {more} more background error(s), see the writer's stats)") from first
        raise first

    # ------------------------------------------------------------------ collector thread

    def _run(self) -> None:
        lower_this_thread()
        stop = False
        while not stop:
            now = time.monotonic()
            waiting = [b.since for b in (*self._samples.values(), *self._steps.values())]
            deadline = min(waiting) + self._interval if waiting else now + _GC_EVERY
            # Drains on its own clock: a log_samples call does not wake this thread.
            items = self._queue.get_batch(max(0.0, min(deadline, self._next_gc) - now), _DRAIN)
            for item in items:
                try:
                    stop = self._collect(item) or stop
                except Exception as exc:
                    err = self._record(exc)
                    future = getattr(item, "future", None)
                    if future is not None:
                        future.set_exception(err)
            try:
                self._submit_due(everything=False)
                if not stop and time.monotonic() >= self._next_gc:
                    self._commit.submit(self._guard, self._collect_due)
                    self._next_gc = time.monotonic() + _GC_EVERY
            except Exception as exc:
                self._record(exc)
        self._prepare.stop()
        self._commit.stop()

    def _collect(self, item: SampleRows | StepRows | EndPass | Flush | Close) -> bool:
        """Take one queued item; True once the writer is closing."""
        match item:
            case SampleRows(key=key):
                buf = self._samples.get(key)
                if buf is None:
                    buf = self._samples[key] = _Buffer(since=time.monotonic())
                buf.batches.append((item.step, item.columns, item.rows))
                buf.rows += item.rows
                if buf.rows >= MAX_PART_ROWS:
                    self._submit_part(key)
            case StepRows(run_id=run_id):
                buf = self._steps.setdefault(run_id, _Buffer(since=time.monotonic()))
                buf.batches.append((None, item.columns, item.rows))
                buf.rows += item.rows
            case EndPass(key=key):
                buf = self._samples.pop(key, None)
                built = None if buf is None else self._prepare.submit(samples_part, key, buf.batches)
                self._commit.submit(self._resolve, item.future, self._end_pass, key, item.step, item.metrics, built)
            case Flush():
                self._submit_due(everything=True)
                self._commit.submit(item.future.set_result, None)
            case Close():
                self._submit_due(everything=True)
                self._commit.submit(self._resolve, item.future, self._close_files)
                return True
        return False

    def _submit_due(self, *, everything: bool) -> None:
        limit = time.monotonic() - self._interval
        for key in [k for k, b in self._samples.items() if everything or b.since <= limit]:
            self._submit_part(key)
        for run_id in [r for r, b in self._steps.items() if everything or b.since <= limit]:
            self._submit_part(run_id)

    def _submit_part(self, key: str | PassKey) -> None:
        """Build (prepare worker), then write and list (commit worker) one part."""
        buf = self._steps.pop(key) if isinstance(key, str) else self._samples.pop(key)
        self._in_flight.acquire()  # waits while the workers hold enough parts: the queue then fills
        built = self._prepare.submit(steps_part if isinstance(key, str) else samples_part, key, buf.batches)
        self._commit.submit(self._commit_part, key, built)

    # ------------------------------------------------------------------ commit worker

    def _guard(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            self._record(exc)
            return None

    def _resolve(self, future: concurrent.futures.Future, fn: Callable, *args: Any) -> None:
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(self._record(exc))

    def _record(self, exc: BaseException) -> OnTheFlyError:
        if not isinstance(exc, OnTheFlyError):
            err = StoreError(f"the shard writer of {self._dir} failed: {exc!r}; the rows involved were not written")
            err.__cause__ = exc
            exc = err
        with self._lock:
            self._stats["errors"] += 1
            self._pending.append(exc)
        return exc

    def _commit_part(self, key: str | PassKey, built: concurrent.futures.Future) -> None:
        try:
            self._guard(self._write_part, key, built)
        finally:
            self._in_flight.release()

    def _write_part(self, key: str | PassKey, built: concurrent.futures.Future) -> None:
        table = built.result()
        if isinstance(key, str):
            kind, live_key, shard_key = "steps", ("steps", key), (key, None, None)
            path = self._new_path(steps_folder(key), "part-")
            self._step_runs.add(key)
        else:
            kind, live_key, shard_key = "samples", key, key
            path = self._new_path(samples_folder(key[0], key[1]), f"e{key[2]:06d}-p")
        info = self._write_listed(table, path, kind=kind, key=shard_key, level=0)
        self._stats["rows_written"] += table.num_rows
        self._stats["parts_written"] += 1
        live = self._live.setdefault(live_key, [])
        live.append(info)
        self._merge_if_needed(live_key, live)

    def _merge_if_needed(self, live_key: tuple, live: list[ShardInfo]) -> None:
        chosen = plan_merge([s.level for s in live], [s.rows for s in live])
        if not chosen:
            return
        sources = [live[i] for i in chosen]
        kind = sources[0].kind
        try:
            table = sorted_table(self._read_all(sources), "step" if kind == "steps" else "sample_id")
        except StoreError:
            live[:] = [s for s in live if s not in sources]  # they stay listed; do not retry at every part
            raise
        run_id, split, epoch = sources[0].run_id, sources[0].split, sources[0].epoch
        if kind == "steps":
            path = self._new_path(steps_folder(run_id), "merged-")
        else:
            path = self._new_path(samples_folder(run_id, split), f"e{epoch:06d}-m")
        level = max(s.level for s in sources) + 1
        merged = self._write_listed(table, path, kind=kind, key=(run_id, split, epoch), level=level, retire=sources)
        self._stats["merges"] += 1
        live[:] = [s for s in live if s not in sources] + [merged]

    def _end_pass(
        self, key: PassKey, step: int, metrics: dict, built: concurrent.futures.Future | None
    ) -> EpochSummary:
        run_id, split, epoch = key
        if split == "train":
            sources = [
                s
                for s in self._catalog.active_shards("samples")
                if s.run_id == run_id and s.split == split and s.epoch == epoch
            ]
        else:
            sources = list(self._live.get(key, []))
        tables = self._read_all(sources)
        if built is not None:
            tables.append(built.result())
            self._stats["rows_written"] += tables[-1].num_rows
        table = sorted_table(tables, "sample_id")
        if table.num_rows or sources:
            path = self._new_path(samples_folder(run_id, split), f"e{epoch:06d}-s")
            level = max([s.level for s in sources] + [0]) + 1
            self._write_listed(table, path, kind="samples", key=key, level=level, retire=sources, sealed=True)
        self._live.pop(key, None)
        summary = self._catalog.add_epoch(pass_summary(key, step, table, metrics))
        if self._on_summary is not None:
            try:
                self._on_summary(summary)
            except Exception as exc:
                where = f"{run_id}/{split} epoch {epoch}"
                self._record(StoreError(f"on_summary raised {exc!r} for {where}; the pass is stored: fix the callback"))
        return summary

    def _close_files(self) -> None:
        for run_id in sorted(self._step_runs):
            self._seal_steps(run_id)
        self._collect_retired()

    def _seal_steps(self, run_id: str) -> None:
        sources = [s for s in self._catalog.active_shards("steps") if s.run_id == run_id]
        if not sources or (len(sources) == 1 and sources[0].sealed):
            return
        table = sorted_table(self._read_all(sources), "step")
        path = self._new_path(steps_folder(run_id), "steps-")
        level = max(s.level for s in sources) + 1
        key = (run_id, None, None)
        self._write_listed(table, path, kind="steps", key=key, level=level, retire=sources, sealed=True)
        self._live.pop(("steps", run_id), None)

    def _write_listed(
        self,
        table: pa.Table,
        rel: Path,
        *,
        kind: str,
        key: tuple,
        level: int,
        retire: Sequence[ShardInfo] = (),
        sealed: bool = False,
    ) -> ShardInfo:
        """Write ``table`` atomically at ``rel``, then list it (retiring ``retire``) in one transaction."""
        final = self._dir / rel
        sorted_by = ("sample_id" if kind == "samples" else "step") if level else None  # live parts keep log order
        try:
            nbytes = write_parquet(table, final, sorted_by=sorted_by)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(
                f"shard {rel.as_posix()} could not be written ({exc}); its {table.num_rows} rows are not stored: "
                "check free space and permissions of the session folder"
            ) from exc
        self._stats["bytes_written"] += nbytes
        steps = to_numpy(table.column("step"))
        new = {
            "kind": kind,
            "run_id": key[0],
            "split": key[1],
            "epoch": key[2],
            "path": rel.as_posix(),
            "rows": table.num_rows,
            "bytes": nbytes,
            "min_step": int(steps.min()) if len(steps) else None,
            "max_step": int(steps.max()) if len(steps) else None,
            "level": level,
            "sealed": sealed,
        }
        try:
            if not retire:
                return self._catalog.add_shard(**new)
            listed = self._catalog.compact_shards(retire_ids=[s.id for s in retire], new=new)
        except Exception:
            final.unlink(missing_ok=True)  # never listed: nobody can be reading it
            raise
        self._retired_due.append(time.time() + self._grace)  # taken after their retired_at
        return listed

    def _read_all(self, shards: Sequence[ShardInfo]) -> list[pa.Table]:
        tables = []
        for shard in sorted(shards, key=lambda s: s.id):
            tables.append(read_parquet(self._dir / shard.path, shard.path, samples=shard.kind == "samples"))
        return tables

    def _new_path(self, folder: Path, prefix: str) -> Path:
        directory = self._dir / folder
        if directory not in self._counters:
            directory.mkdir(parents=True, exist_ok=True)
            found = [_TRAILING_NUMBER.search(name) for name in os.listdir(directory)]
            self._counters[directory] = max([int(m.group(1)) for m in found if m] + [0])
        self._counters[directory] += 1
        return folder / f"{prefix}{self._counters[directory]:06d}.parquet"

    def _collect_due(self) -> None:
        """The periodic look for retired files: asks the catalog only once some may be past their grace period."""
        now = time.time()
        if not any(due < now for due in self._retired_due):
            return
        self._retired_due = [due for due in self._retired_due if due >= now]
        self._collect_retired()

    def _collect_retired(self) -> None:
        old = self._catalog.retired_shards(older_than=time.time() - self._grace)
        if not old:
            return
        root = self._dir.resolve()
        for shard in old:
            path = (self._dir / shard.path).resolve()
            if root in path.parents:  # never delete outside the session folder
                path.unlink(missing_ok=True)
                self._stats["files_deleted"] += 1
        self._catalog.forget_shards([s.id for s in old])
