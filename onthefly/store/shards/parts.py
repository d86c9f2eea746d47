"""The shard writer's files: which live files of a pass to merge, the Arrow
tables built from buffered batches, and Parquet written atomically and read
back with its checksums verified.

No threads and no catalog here: :class:`onthefly.store.shards.writer.ShardWriter`
runs these on its workers and lists what they write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onthefly.errors import CorruptFileError, MissingFileError
from onthefly.store.durable import fsync_folder
from onthefly.store.records import EpochSummary, PassKey
from onthefly.store.shards.arrow_numpy import to_numpy, values_and_mask
from onthefly.store.shards.schema import (
    SAMPLES_SCHEMA,
    concat_sorted,
    sorted_samples_table,
    steps_table,
)
from onthefly.store.shards.scores import fields_from_scores
from onthefly.store.shards.summaries import accuracy, summarize_losses

__all__ = [
    "MAX_LIVE_PARTS",
    "MAX_MERGE_ROWS",
    "PARQUET_OPTIONS",
    "ROW_GROUP_ROWS",
    "pass_summary",
    "plan_merge",
    "read_parquet",
    "samples_part",
    "sorted_table",
    "steps_part",
    "with_fields",
    "write_parquet",
]

ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group: a one-sample lookup reads about this many rows."""

MAX_LIVE_PARTS = 32
"""A pass (or a run's steps) with more live files than this gets merged."""

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


def samples_part(key: PassKey, batches: list[tuple[Any, dict[str, Any], int]]) -> pa.Table:
    """A live part of one pass from its buffered ``(step, columns, n)`` batches."""
    run_id, split, epoch = key
    # A live part spans the whole id range whatever its order: only merged and
    # sealed files are sorted, where sorting makes row groups prunable.
    return sorted_samples_table(run_id=run_id, split=split, epoch=epoch, batches=with_fields(batches), sort=False)


def with_fields(batches: list[tuple[Any, dict[str, Any], int]]) -> list[tuple[Any, dict[str, Any], int]]:
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


def steps_part(run_id: str, batches: list[tuple[Any, dict[str, Any], int]]) -> pa.Table:
    """A part of one run's step metrics from its buffered ``(step, columns, n)`` batches."""
    # One table from the merged columns: a table per logged batch costs ~100x more
    # when the trainer logs one row a step.
    total = sum(n for _, _, n in batches)
    merged: dict[str, list] = {}
    done = 0
    for _, cols, n in batches:
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


def sorted_table(tables: list[pa.Table], column: str) -> pa.Table:
    """Merge the sorted tables of one pass (constant run, split, epoch) or one run's steps."""
    if not tables:
        return SAMPLES_SCHEMA.empty_table()
    constant = ("run_id",) if column == "step" else ("run_id", "split", "epoch")
    return concat_sorted(tables, column, constant=constant)


def pass_summary(key: PassKey, step: int, table: pa.Table, metrics: dict) -> EpochSummary:
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


def write_parquet(table: pa.Table, final: Path, *, sorted_by: str | None) -> int:
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


def read_parquet(path: Path, rel: str, *, samples: bool = False) -> pa.Table:
    """A listed file, its page checksums verified; ``samples``: as per-sample rows of today's schema.

    Raises:
        MissingFileError: the file is listed but not on disk.
        CorruptFileError: it cannot be read as Parquet, or holds no per-sample rows when ``samples``.
    """
    try:
        table = pq.ParquetFile(path, page_checksum_verification=True).read()
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
    if not samples or table.schema.equals(SAMPLES_SCHEMA):
        return table
    try:
        return table.select(SAMPLES_SCHEMA.names).cast(SAMPLES_SCHEMA)
    except (pa.ArrowException, KeyError) as exc:
        raise CorruptFileError(
            f"shard {rel} does not hold per-sample rows ({exc}); "
            "it was left in place: move it out of the session folder and forget it in the catalog"
        ) from exc
