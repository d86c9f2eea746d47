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
the order the caller logged.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onthefly.errors import (
    ConfigError,
    CorruptFileError,
    MissingFileError,
    OnTheFlyError,
    StoreError,
)
from onthefly.store.arrow_numpy import to_numpy, values_and_mask
from onthefly.store.background import lower_this_thread
from onthefly.store.durable import fsync_folder
from onthefly.store.handoff import Handoff
from onthefly.store.records import EpochSummary, ShardInfo
from onthefly.store.schema import (
    SAMPLES_SCHEMA,
    concat_sorted,
    sorted_samples_table,
    steps_table,
)
from onthefly.store.scores import fields_from_scores
from onthefly.store.summaries import accuracy, summarize_losses

if TYPE_CHECKING:
    from onthefly.store.catalog import Catalog

__all__ = [
    "ShardWriter",
    "plan_merge",
    "MAX_LIVE_PARTS",
    "MAX_MERGE_ROWS",
    "MAX_PART_ROWS",
    "ROW_GROUP_ROWS",
    "PARQUET_OPTIONS",
]

ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group: a one-sample lookup reads about this many rows."""

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

MAX_LIVE_PARTS = 32
"""A pass (or a run's steps) with more live files than this gets merged."""

MAX_PART_ROWS = 4 * ROW_GROUP_ROWS
"""A part is written early once this many rows wait, whatever the interval."""

MAX_MERGE_ROWS = 1 << 22
"""Merges of live parts never produce a file larger than this (they run in memory)."""

PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    # Dictionary pages pay off on the repeated columns only; on losses they cost time and bytes.
    "use_dictionary": ["run_id", "split", "epoch", "step", "label", "pred"],
    "write_statistics": True,
    "write_page_checksum": True,
}
"""Options of every Parquet file the writer produces (benchmarks use the same)."""

_IN_FLIGHT = 2  # parts built or being written at once; the collector waits past this
_DRAIN = 64  # queued items the collector takes at once
_GC_EVERY = 1.0  # seconds between looks for retired files past their grace period
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TRAILING_NUMBER = re.compile(r"(\d+)\.parquet$")
_PLAIN_NUMBERS = frozenset({int, float, bool, type(None)})
_KIND_WORDS = {"iu": "integer", "fiu": "numeric", "biu": "boolean (or 0/1)"}


def plan_merge(
    levels: Sequence[int],
    rows: Sequence[int],
    *,
    max_live: int = MAX_LIVE_PARTS,
    max_rows: int = MAX_MERGE_ROWS,
) -> list[int]:
    """Which live files of a pass to merge now (tiered: small files first).

    Nothing is merged while a pass has at most ``max_live`` files. Past that,
    the files of the lowest level that holds more than one file are merged
    into one file of the next level, so each row is rewritten about once per
    level. Files of ``max_rows`` rows or more are left alone, and a merge
    stops adding files before its output would pass ``max_rows``: merges run
    in memory.

    Args:
        levels: the level of each live file (0 for a part), in write order.
        rows: the row count of each live file.
        max_live: the number of files a pass may hold before a merge.
        max_rows: the largest file a merge may produce.

    Returns:
        Indices into ``levels`` of the files to merge (empty: merge nothing).

    Example:
        >>> plan_merge([1, 1, 0, 0], [8, 8, 1, 1], max_live=3)
        [2, 3]
    """
    if len(levels) <= max_live:
        return []
    small = [i for i, n in enumerate(rows) if n < max_rows]
    for level in sorted({levels[i] for i in small}):
        chosen, total = [], 0
        for i in small:
            if levels[i] == level and total + rows[i] <= max_rows:
                chosen.append(i)
                total += rows[i]
        if len(chosen) > 1:
            return chosen
    return []


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
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
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
        self._samples: dict[tuple[str, str, int], _Buffer] = {}
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
                derives those from them (:func:`onthefly.store.scores.fields_from_scores`).

        Raises:
            ConfigError: lengths differ, an array is not 1-D or of a wrong
                kind, a tensor is not on the CPU, or a name is unsafe.
            StoreError: the writer is closed.

        Example:
            >>> writer.log_samples(run_id, "train", 0, 7, np.arange(4), np.ones(4))  # doctest: +SKIP
        """
        self._check_open()
        if (run_id, split) not in self._names_ok:
            _check_name("run_id", run_id)
            _check_name("split", split)
            self._names_ok.add((run_id, split))
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} is not an integer >= 0: pass the epoch number as an int")
        ids = _column("sample_id", sample_id, "iu")
        n = ids.shape[0]
        cols = {"sample_id": ids, "loss": _column("loss", loss, "fiu", n)}
        for name, value, kinds in (
            ("label", label, "iu"),
            ("pred", pred, "iu"),
            ("correct", correct, "biu"),
            ("margin", margin, "fiu"),
            ("grad_norm", grad_norm, "fiu"),
        ):
            if value is not None:
                cols[name] = _column(name, value, kinds, n)
        if scores is not None:
            cols["scores"] = _scores(scores, n, given=cols)
        if not isinstance(step, (int, np.integer)):
            step = _column("step", step, "iu", n)
        self._put(("samples", (run_id, split, int(epoch)), step, cols, n))

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
            _check_name("run_id", run_id)
            self._names_ok.add((run_id, ""))
        columns = _steps_columns(rows)
        n = len(columns["step"])
        if n:
            columns.setdefault("time", [time.time()] * n)
            self._put(("steps", run_id, columns, n))

    def log_step(self, run_id: str, row: Mapping[str, Any]) -> None:
        """Queue the metrics of one step, ``{"step": 12, "loss": 0.3, ...}``.

        The same rows and checks as ``log_steps(run_id, [row])`` at a third of
        the cost: the training loops call this once a step.

        Raises:
            ConfigError: as :meth:`log_steps`.
            StoreError: the writer is closed.
        """
        if "step" not in row or "run_id" in row or not all(type(v) in _PLAIN_NUMBERS for v in row.values()):
            self.log_steps(run_id, [row])  # anything unusual: the general path converts it or says what is wrong
            return
        self._check_open()
        if (run_id, "") not in self._names_ok:
            _check_name("run_id", run_id)
            self._names_ok.add((run_id, ""))
        columns = {str(name): (value,) for name, value in row.items()}
        if "time" not in columns:
            columns["time"] = (time.time(),)
        self._put(("steps", run_id, columns, 1))

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
        _check_name("run_id", run_id)
        _check_name("split", split)
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} is not an integer >= 0: pass the epoch number as an int")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._put(("end_pass", (run_id, split, int(epoch)), int(step), dict(metrics or {}), future))
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

    def _put(self, item: tuple) -> None:
        urgent = item[0] not in ("samples", "steps")  # flush, end_pass, close: the caller waits for them
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
        self._put((what, future))
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
                except Exception as exc:  # noqa: BLE001 - the thread must survive; the caller sees it later
                    err = self._record(exc)
                    if isinstance(item[-1], concurrent.futures.Future):
                        item[-1].set_exception(err)
            try:
                self._submit_due(everything=False)
                if not stop and time.monotonic() >= self._next_gc:
                    self._commit.submit(self._guard, self._collect_due)
                    self._next_gc = time.monotonic() + _GC_EVERY
            except Exception as exc:  # noqa: BLE001 - the thread must survive; the caller sees it later
                self._record(exc)
        self._prepare.stop()
        self._commit.stop()

    def _collect(self, item: tuple) -> bool:
        """Take one queued item; True once the writer is closing."""
        kind = item[0]
        if kind == "samples":
            _, key, step, cols, n = item
            buf = self._samples.get(key)
            if buf is None:
                buf = self._samples[key] = _Buffer(since=time.monotonic())
            buf.batches.append((step, cols, n))
            buf.rows += n
            if buf.rows >= MAX_PART_ROWS:
                self._submit_part(key)
        elif kind == "steps":
            _, run_id, columns, n = item
            buf = self._steps.setdefault(run_id, _Buffer(since=time.monotonic()))
            buf.batches.append((None, columns, n))
            buf.rows += n
        elif kind == "end_pass":
            _, key, step, metrics, future = item
            buf = self._samples.pop(key, None)
            built = None if buf is None else self._prepare.submit(_samples_part, key, buf)
            self._commit.submit(self._settle, future, self._end_pass, key, step, metrics, built)
        elif kind == "flush":
            self._submit_due(everything=True)
            self._commit.submit(item[1].set_result, None)
        elif kind == "close":
            self._submit_due(everything=True)
            self._commit.submit(self._settle, item[1], self._close_files)
            return True
        return False

    def _submit_due(self, *, everything: bool) -> None:
        limit = time.monotonic() - self._interval
        for key in [k for k, b in self._samples.items() if everything or b.since <= limit]:
            self._submit_part(key)
        for run_id in [r for r, b in self._steps.items() if everything or b.since <= limit]:
            self._submit_part(run_id)

    def _submit_part(self, key: str | tuple[str, str, int]) -> None:
        """Build (prepare worker), then write and list (commit worker) one part."""
        buf = self._steps.pop(key) if isinstance(key, str) else self._samples.pop(key)
        self._in_flight.acquire()  # waits while the workers hold enough parts: the queue then fills
        built = self._prepare.submit(_steps_part if isinstance(key, str) else _samples_part, key, buf)
        self._commit.submit(self._commit_part, key, built)

    # ------------------------------------------------------------------ commit worker

    def _guard(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the worker must survive; the caller sees it later
            self._record(exc)
            return None

    def _settle(self, future: concurrent.futures.Future, fn: Callable, *args: Any) -> None:
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - delivered through the future and the next call
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

    def _commit_part(self, key: str | tuple[str, str, int], built: concurrent.futures.Future) -> None:
        try:
            self._guard(self._write_part, key, built)
        finally:
            self._in_flight.release()

    def _write_part(self, key: str | tuple[str, str, int], built: concurrent.futures.Future) -> None:
        table = built.result()
        if isinstance(key, str):
            kind, live_key, shard_key = "steps", ("steps", key), (key, None, None)
            path = self._new_path(Path("steps", key), "part-")
            self._step_runs.add(key)
        else:
            kind, live_key, shard_key = "samples", key, key
            path = self._new_path(Path("samples", key[0], key[1]), f"e{key[2]:06d}-p")
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
            table = _sorted(self._read_all(sources), "step" if kind == "steps" else "sample_id")
        except StoreError:
            live[:] = [s for s in live if s not in sources]  # they stay listed; do not retry at every part
            raise
        run_id, split, epoch = sources[0].run_id, sources[0].split, sources[0].epoch
        if kind == "steps":
            path = self._new_path(Path("steps", run_id), "merged-")
        else:
            path = self._new_path(Path("samples", run_id, split), f"e{epoch:06d}-m")
        level = max(s.level for s in sources) + 1
        merged = self._write_listed(table, path, kind=kind, key=(run_id, split, epoch), level=level, retire=sources)
        self._stats["merges"] += 1
        live[:] = [s for s in live if s not in sources] + [merged]

    def _end_pass(
        self, key: tuple[str, str, int], step: int, metrics: dict, built: concurrent.futures.Future | None
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
        table = _sorted(tables, "sample_id")
        if table.num_rows or sources:
            path = self._new_path(Path("samples", run_id, split), f"e{epoch:06d}-s")
            level = max([s.level for s in sources] + [0]) + 1
            self._write_listed(table, path, kind="samples", key=key, level=level, retire=sources, sealed=True)
        self._live.pop(key, None)
        summary = self._catalog.add_epoch(_pass_summary(key, step, table, metrics))
        if self._on_summary is not None:
            try:
                self._on_summary(summary)
            except Exception as exc:  # noqa: BLE001 - a faulty callback must not lose the pass
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
        table = _sorted(self._read_all(sources), "step")
        path = self._new_path(Path("steps", run_id), "steps-")
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
            nbytes = _write_parquet(table, final, sorted_by=sorted_by)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(
                f"shard {rel.as_posix()} could not be written ({exc}); its {table.num_rows} rows are not stored: "
                "check free space and permissions of the session folder"
            ) from exc
        self._stats["bytes_written"] += nbytes
        steps = to_numpy(table.column("step"))
        new = {
            "kind": kind, "run_id": key[0], "split": key[1], "epoch": key[2], "path": rel.as_posix(),
            "rows": table.num_rows, "bytes": nbytes, "min_step": int(steps.min()) if len(steps) else None,
            "max_step": int(steps.max()) if len(steps) else None,
            "level": level, "sealed": sealed,
        }  # fmt: skip
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
            table = _read_parquet(self._dir / shard.path, shard.path)
            if shard.kind == "samples" and not table.schema.equals(SAMPLES_SCHEMA):
                try:
                    table = table.select(SAMPLES_SCHEMA.names).cast(SAMPLES_SCHEMA)
                except (pa.ArrowException, KeyError) as exc:
                    raise CorruptFileError(
                        f"shard {shard.path} does not hold per-sample rows ({exc}); "
                        "it was left in place: move it out of the session folder and forget it in the catalog"
                    ) from exc
            tables.append(table)
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


# ---------------------------------------------------------------------- caller-side checks


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or value in {".", ".."}:
        raise ConfigError(
            f"{what}={value!r} cannot name a shard folder: use letters, digits, '_', '-' or '.' (at most 128)"
        )


def _column(name: str, value: Any, kinds: str, n: int | None = None) -> np.ndarray:
    """A 1-D numpy view of ``value`` (numpy array, CPU tensor or sequence), checked cheaply."""
    if not isinstance(value, np.ndarray):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ConfigError(
                    f"{name} is on {value.device}: pass a CPU tensor ({name}.detach().cpu()) "
                    "so the writer never waits on the device"
                )
            value = value.detach()
            value = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
        else:
            value = np.asarray(value)
    if value.ndim != 1:
        raise ConfigError(f"{name} has shape {value.shape}: pass a 1-D array with one value per sample")
    if value.dtype.kind not in kinds:
        raise ConfigError(f"{name} has dtype {value.dtype}: pass {_KIND_WORDS[kinds]} values")
    if n is not None and value.shape[0] != n:
        raise ConfigError(f"{name} has {value.shape[0]} values but sample_id has {n}: give one value per sample")
    return value


def _scores(value: Any, n: int, *, given: Mapping[str, Any]) -> np.ndarray:
    scores = np.asarray(value)
    if scores.ndim != 2 or scores.shape[0] != n or scores.shape[1] < 2 or scores.dtype.kind != "f":
        raise ConfigError(
            f"scores has shape {scores.shape} and dtype {scores.dtype}: pass [{n}, C] float class scores, C >= 2"
        )
    if "label" not in given:
        raise ConfigError("scores were given without label: pass label= too (the fields compare pred with it)")
    clash = sorted(set(given) & {"pred", "correct", "margin"})
    if clash:
        raise ConfigError(f"scores were given with {clash}: pass either scores or those fields, not both")
    return scores


def _steps_columns(rows: Any) -> dict[str, list | np.ndarray]:
    if isinstance(rows, Mapping):
        columns = {str(k): (v if isinstance(v, np.ndarray) else list(v)) for k, v in rows.items()}
    elif isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {str(k): [r.get(k) for r in rows] for k in names}
    else:
        raise ConfigError(
            f"step metrics of type {type(rows).__name__} are not understood: "
            "pass {'step': [...], 'loss': [...]} or a list of row dicts"
        )
    if "step" not in columns:
        raise ConfigError(f"step metrics {sorted(columns)} have no 'step': give the global step of each row")
    if "run_id" in columns:
        raise ConfigError("step metrics may not hold a 'run_id' column: it is given as the first argument")
    n = len(columns["step"])
    for name, values in columns.items():
        if len(values) != n:
            raise ConfigError(f"step metric {name!r} has {len(values)} values but 'step' has {n}: give one per row")
        if isinstance(values, np.ndarray):
            ok = values.ndim == 1 and values.dtype.kind in "biuf"
        else:
            ok = all(v is None or isinstance(v, (int, float, np.number, np.bool_)) for v in values)
        if not ok:
            raise ConfigError(
                f"step metric {name!r} holds a value that is not a plain number: log numbers or None "
                "(a tensor as .item())"
            )
    return columns


# ---------------------------------------------------------------------- tables and files


def _samples_part(key: tuple[str, str, int], buf: _Buffer) -> pa.Table:
    run_id, split, epoch = key
    # A live part spans the whole id range whatever its order: only merged and
    # sealed files are sorted, where sorting makes row groups prunable.
    return sorted_samples_table(run_id=run_id, split=split, epoch=epoch, batches=_with_fields(buf.batches), sort=False)


def _with_fields(batches: list[tuple[Any, dict[str, Any], int]]) -> list[tuple[Any, dict[str, Any], int]]:
    """The batches with pred, correct and margin derived from their scores, in bulk per class count."""
    groups: dict[int, list[int]] = {}
    for i, (_, cols, _) in enumerate(batches):
        if "scores" in cols:
            groups.setdefault(cols["scores"].shape[1], []).append(i)
    if not groups:
        return batches
    out = list(batches)
    for members in groups.values():
        scores = np.concatenate([batches[i][1]["scores"] for i in members])
        labels = np.concatenate([batches[i][1]["label"] for i in members])
        cuts = np.cumsum([batches[i][2] for i in members])[:-1]
        derived = {name: np.split(values, cuts) for name, values in fields_from_scores(scores, labels).items()}
        for j, i in enumerate(members):
            step, cols, n = batches[i]
            cols = {name: values for name, values in cols.items() if name != "scores"}
            cols.update((name, parts[j]) for name, parts in derived.items())
            out[i] = (step, cols, n)
    return out


def _steps_part(run_id: str, buf: _Buffer) -> pa.Table:
    # One table from the merged columns: a table per logged batch costs ~100x more
    # when the trainer logs one row a step.
    total = sum(n for _, _, n in buf.batches)
    merged: dict[str, list] = {}
    done = 0
    for _, cols, n in buf.batches:
        for name, values in cols.items():
            column = merged.get(name)
            if column is None:
                column = merged[name] = [None] * done
            column.extend(values.tolist() if isinstance(values, np.ndarray) else values)
        done += n
        for column in merged.values():
            if len(column) < done:
                column.extend([None] * (done - len(column)))
    assert done == total
    return steps_table(run_id=run_id, columns=merged)


def _sorted(tables: list[pa.Table], column: str) -> pa.Table:
    """Merge the sorted tables of one pass (constant run, split, epoch) or one run's steps."""
    if not tables:
        return SAMPLES_SCHEMA.empty_table()
    constant = ("run_id",) if column == "step" else ("run_id", "split", "epoch")
    return concat_sorted(tables, column, constant=constant)


def _pass_summary(key: tuple[str, str, int], step: int, table: pa.Table, metrics: dict) -> EpochSummary:
    run_id, split, epoch = key
    stats = summarize_losses(to_numpy(table.column("loss")))
    nonfinite = stats.pop("nonfinite")
    if nonfinite:
        metrics["nonfinite"] = nonfinite
    correct, unknown = values_and_mask(table.column("correct"))
    if unknown is not None:
        correct = correct[~unknown]
    if len(correct):
        metrics["accuracy"] = accuracy(correct)
    return EpochSummary(run_id=run_id, split=split, epoch=epoch, step=step, metrics=metrics or None, **stats)


def _write_parquet(table: pa.Table, final: Path, *, sorted_by: str | None) -> int:
    """Write to a temporary name, fsync, rename, fsync the folder; return the size."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    order = [pq.SortingColumn(table.schema.get_field_index(sorted_by))] if sorted_by else None
    try:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, sorting_columns=order, **PARQUET_OPTIONS)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(final.parent)
    return final.stat().st_size


def _read_parquet(path: Path, rel: str) -> pa.Table:
    try:
        return pq.ParquetFile(path, page_checksum_verification=True).read()
    except FileNotFoundError as exc:
        raise MissingFileError(
            f"shard {rel} is listed but not on disk ({path}); the pass was left uncompacted: "
            "forget the shard in the catalog or restore the file"
        ) from exc
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(
            f"shard {rel} cannot be read as Parquet ({exc}); the pass was left uncompacted and its other "
            "shards are intact: move this file out of the session folder and forget it in the catalog"
        ) from exc
