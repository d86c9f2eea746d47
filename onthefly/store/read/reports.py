"""Reports, trajectories and slices of a session's per-sample losses.

These are store operations over a reader connection (:func:`onthefly.store.read.query.connect`):
the session handle and the dashboard's ``report``/``slice``/``export_slice``
requests call them, and every result is JSON-able. Distribution views read
the ``epochs`` summaries (O(epochs)); only the top-k, trajectory, slice and
export read per-sample rows, each filtered by run, split and epoch or by
``sample_id`` so DuckDB prunes row groups. The file an export becomes is
written by :mod:`onthefly.store.read.exports`.

A ``run`` argument is a run id or a run name (the newest run of that name);
None means the newest run of the session. An ``epoch`` of None means the
latest epoch of that split with a summary.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from onthefly.errors import ConfigError, QueryError
from onthefly.protocol import payloads
from onthefly.store.read.exports import (
    EXPORT_FORMATS,
    export_target,
    join_extra_columns,
    write_rows,
)
from onthefly.store.read.query import json_value
from onthefly.store.records import EpochSummary

__all__ = ["report", "quantile_bands", "trajectory", "select_slice", "export_slice"]

EXPORT_COLUMNS = ("sample_id", "loss", "label", "pred", "correct", "margin")

RUN_BY_ID_OR_NAME = "SELECT id FROM runs WHERE id = $run OR name = $run ORDER BY created_at DESC, id DESC LIMIT 1"
NEWEST_RUN = "SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT 1"
KNOWN_RUNS = "SELECT id, name FROM runs ORDER BY created_at DESC, id DESC LIMIT 10"
LATEST_EPOCH = "SELECT max(epoch) FROM epochs WHERE run_id = $run AND split = $split"
SUMMARIZED_EPOCHS = (
    "SELECT split, list(DISTINCT epoch ORDER BY epoch) FROM epochs WHERE run_id = $run GROUP BY split ORDER BY split"
)
EPOCH_SUMMARY = (
    "SELECT epoch, step, count, mean, p10, p50, p90, p99, hist_edges, hist_counts FROM epochs "
    "WHERE run_id = $run AND split = $split AND epoch = $epoch ORDER BY step DESC LIMIT 1"
)
HARDEST = (
    "SELECT sample_id, loss, label, pred FROM samples "
    "WHERE run_id = $run AND split = $split AND epoch = $epoch AND isfinite(loss) "
    "ORDER BY loss DESC, sample_id LIMIT $k"
)
BANDS = (
    "SELECT epoch, step, p10, p50, p90, p99, mean FROM epochs "
    "WHERE run_id = $run AND split = $split ORDER BY epoch, step"
)
TRAJECTORY = (
    "SELECT epoch, max(step) AS step, avg(loss) AS loss FROM samples "
    "WHERE run_id = $run AND split = $split AND sample_id = $sample_id "
    "GROUP BY epoch ORDER BY epoch"
)
LOSS_QUANTILES = (
    "SELECT quantile_cont(loss, $q_min::DOUBLE), quantile_cont(loss, $q_max::DOUBLE) FROM samples "
    "WHERE run_id = $run AND split = $split AND epoch = $epoch AND isfinite(loss)"
)
SELECT_IDS = (
    "SELECT DISTINCT sample_id FROM samples "
    "WHERE run_id = $run AND split = $split AND epoch = $epoch "
    "AND ($lo::DOUBLE IS NULL OR (isfinite(loss) AND loss >= $lo::DOUBLE)) "
    "AND ($hi::DOUBLE IS NULL OR (isfinite(loss) AND loss <= $hi::DOUBLE)) "
    "AND (NOT $use_ids OR sample_id IN (SELECT unnest($ids::BIGINT[]))) "
    "ORDER BY sample_id"
)
SLICE_ROWS = (
    "SELECT sample_id, loss, label, pred, correct, margin FROM samples "
    "WHERE run_id = $run AND split = $split AND epoch = $epoch "
    "AND sample_id IN (SELECT unnest($ids::BIGINT[])) ORDER BY sample_id, step"
)


# -- distribution views ---------------------------------------------------------


def report(
    con: duckdb.DuckDBPyConnection,
    *,
    run: str | None = None,
    split: str = "train",
    epoch: int | None = None,
    k: int = 20,
) -> dict[str, Any]:
    """The per-sample loss distribution of one pass, with its hardest samples.

    Args:
        con: a reader connection of the session.
        run: a run id or name; None for the newest run.
        split: ``"train"``, ``"val"`` or ``"test"``.
        epoch: the epoch; None for the latest summarized one.
        k: how many hardest samples to list (highest finite loss first).

    Returns:
        ``{run, split, epoch, step, count, mean, quantiles {p10, p50, p90,
        p99}, hist {edges, counts}, hardest [{sample_id, loss, label, pred}]}``.

    Raises:
        QueryError: no such run, or no summary for that split and epoch.

    Example:
        >>> report(con, split="train", k=3)["hardest"][0]  # doctest: +SKIP
        {'sample_id': 4711, 'loss': 9.2, 'label': 3, 'pred': 5}
    """
    _check_count("k", k)
    run_id = _resolve_run(con, run)
    epoch = _resolve_epoch(con, run_id, split, epoch)
    row = _first(con, EPOCH_SUMMARY, {"run": run_id, "split": split, "epoch": epoch})
    if row is None:
        raise QueryError(
            f"run {run_id!r} has no {split!r} summary for epoch {epoch} "
            f"(summaries: {_summarized(con, run_id)}): pick an epoch listed there; "
            "a pass is summarized when it ends"
        )
    _, step, count, mean, p10, p50, p90, p99, edges, counts = row
    hardest = _rows(con, HARDEST, {"run": run_id, "split": split, "epoch": epoch, "k": k})
    hardest_rows = [
        {"sample_id": s, "loss": json_value(loss), "label": json_value(label), "pred": json_value(pred)}
        for s, loss, label, pred in hardest
    ]
    summary = EpochSummary(
        run_id, split, epoch, step, count, mean, None, None, p10, p50, p90, p99, _json_list(edges), _json_list(counts)
    )
    return payloads.report(summary, hardest_rows)


def quantile_bands(
    con: duckdb.DuckDBPyConnection, *, run: str | None = None, split: str = "train"
) -> dict[str, list[Any]]:
    """Per-epoch loss quantiles of one run and split, from the summaries.

    Args:
        con: a reader connection of the session.
        run: a run id or name; None for the newest run.
        split: the split.

    Returns:
        Columnar ``{epoch, step, p10, p50, p90, p99, mean}``, one entry per
        summarized pass in epoch order (empty lists before the first one).

    Raises:
        QueryError: no such run.

    Example:
        >>> quantile_bands(con)["p50"]  # doctest: +SKIP
        [2.1, 1.4, 0.9]
    """
    run_id = _resolve_run(con, run)
    table = _table(con, BANDS, {"run": run_id, "split": split})
    return _columnar(table)


def trajectory(
    con: duckdb.DuckDBPyConnection,
    sample_id: int,
    *,
    run: str | None = None,
    split: str = "train",
) -> dict[str, list[Any]]:
    """One sample's loss across epochs.

    Args:
        con: a reader connection of the session.
        sample_id: the dataset index of the sample.
        run: a run id or name; None for the newest run.
        split: the split.

    Returns:
        Columnar ``{epoch, step, loss}``: per epoch, the mean loss of that
        sample's rows and the last step it was seen at (empty lists when the
        sample has no rows yet).

    Raises:
        ConfigError: ``sample_id`` is not an integer.
        QueryError: no such run.

    Example:
        >>> trajectory(con, 4711)["loss"]  # doctest: +SKIP
        [2.3, 1.1, 0.4]
    """
    if isinstance(sample_id, bool) or not isinstance(sample_id, (int, np.integer)):
        raise ConfigError(f"sample_id={sample_id!r} is not an integer: pass the dataset index")
    run_id = _resolve_run(con, run)
    params = {"run": run_id, "split": split, "sample_id": int(sample_id)}
    return _columnar(_table(con, TRAJECTORY, params))


# -- slices ---------------------------------------------------------------------


def select_slice(
    con: duckdb.DuckDBPyConnection,
    catalog: Any,
    *,
    name: str,
    run: str | None = None,
    split: str = "train",
    epoch: int | None = None,
    loss_min: float | None = None,
    loss_max: float | None = None,
    q_min: float | None = None,
    q_max: float | None = None,
    ids: Any = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Choose samples of one pass and save them as a named slice.

    A sample is chosen when one of its rows in that run, split and epoch
    meets every criterion given: loss in ``[loss_min, loss_max]``, loss
    between the pass's ``q_min`` and ``q_max`` quantiles (finite losses,
    linear interpolation), and id in ``ids``. Bounds are inclusive; a loss
    criterion never matches a non-finite loss.

    Args:
        con: a reader connection of the session.
        catalog: the session's writable ``Catalog``.
        name: the slice name.
        run: a run id or name; None for the newest run.
        split: the split.
        epoch: the epoch; None for the latest summarized one.
        loss_min, loss_max: a loss range (either end may be open).
        q_min, q_max: a quantile range within ``[0, 1]``.
        ids: sample ids to keep (any iterable of integers).
        replace: overwrite a slice of the same name.

    Returns:
        ``{name, count, run, split, epoch, method}``; ``method`` records
        the criteria and the loss bounds they resolved to.

    Raises:
        ConfigError: no criterion, or one out of range.
        QueryError: no such run or summarized epoch.

    Example:
        >>> select_slice(con, cat, name="hard", q_min=0.99)  # doctest: +SKIP
        {'name': 'hard', 'count': 600, 'run': 'r1', 'split': 'train', 'epoch': 4, 'method': {...}}
    """
    id_array = _check_selection(name, loss_min, loss_max, q_min, q_max, ids)
    run_id = _resolve_run(con, run)
    epoch = _resolve_epoch(con, run_id, split, epoch)
    where = {"run": run_id, "split": split, "epoch": epoch}
    lo, hi = _loss_bounds(con, where, loss_min, loss_max, q_min, q_max)
    params = {
        **where,
        "lo": lo,
        "hi": hi,
        "use_ids": id_array is not None,
        "ids": id_array if id_array is not None else np.empty(0, dtype=np.int64),
    }
    chosen = _table(con, SELECT_IDS, params).column("sample_id").to_numpy()
    method = {
        "loss_min": loss_min,
        "loss_max": loss_max,
        "q_min": q_min,
        "q_max": q_max,
        "ids": None if id_array is None else int(id_array.size),
        "loss_bounds": [json_value(lo), json_value(hi)],
    }
    info = catalog.add_slice(
        name=name,
        sample_ids=np.asarray(chosen, dtype=np.int64),
        method=method,
        run_id=run_id,
        split=split,
        epoch=epoch,
        replace=replace,
    )
    return {
        "name": info.name,
        "count": int(info.count),
        "run": info.run_id,
        "split": info.split,
        "epoch": info.epoch,
        "method": info.method,
    }


def export_slice(
    con: duckdb.DuckDBPyConnection,
    catalog: Any,
    *,
    name: str,
    path: str | os.PathLike[str],
    format: str = "csv",
    root: str | os.PathLike[str],
    extra_columns: Any = None,
) -> dict[str, Any]:
    """Write the rows of a saved slice to a CSV, Parquet or JSON file.

    The rows are those of the slice's run, split and epoch whose sample is in
    the slice: ``sample_id, loss, label, pred, correct, margin``, sorted by
    ``sample_id``. The file is written to a temporary name, synced and
    renamed, so a reader never sees half of it.

    Args:
        con: a reader connection of the session.
        catalog: the session's ``Catalog`` (read for the slice's ids).
        name: the slice name.
        path: the file to write; a relative path is taken from ``root``.
        format: ``"csv"``, ``"parquet"`` or ``"json"`` (an array of objects).
        root: the folder the file must land in (the working directory).
        extra_columns: per-sample fields to add (a pyarrow table or pandas DataFrame with a
            ``sample_id`` column and one row per sample), joined on
            ``sample_id``; samples it lacks get nulls.

    Returns:
        ``{path, rows, bytes}`` of the written file.

    Raises:
        ConfigError: ``path`` resolves outside ``root``, a bad ``format``,
            or unusable ``extra_columns``.
        QueryError: the slice's run or epoch is not in the session.

    Example:
        >>> export_slice(con, cat, name="hard", path="hard.csv", root=Path.cwd())  # doctest: +SKIP
        {'path': '/work/hard.csv', 'rows': 600, 'bytes': 18234}
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format={format!r} is not one of {EXPORT_FORMATS}: pass csv, parquet or json")
    target = export_target(root, path)
    info = catalog.slice(name)
    run_id = _resolve_run(con, info.run_id)
    split = info.split or "train"
    epoch = _resolve_epoch(con, run_id, split, info.epoch)
    ids = np.asarray(info.sample_ids, dtype=np.int64)
    rows = _table(con, SLICE_ROWS, {"run": run_id, "split": split, "epoch": epoch, "ids": ids})
    if extra_columns is not None:
        rows = join_extra_columns(rows, extra_columns)
    size = write_rows(rows, target, format=format)
    return {"path": str(target), "rows": rows.num_rows, "bytes": size}


# -- helpers --------------------------------------------------------------------


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return _run(con, sql, params, lambda rel: rel.fetchall())


def _first(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    rows = _rows(con, sql, params)
    return rows[0] if rows else None


def _table(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pa.Table:
    return _run(con, sql, params, lambda rel: rel.to_arrow_table())


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], fetch: Any) -> Any:
    """Run one of this module's SELECTs as a relation and fetch all of it."""
    try:
        return fetch(con.sql(sql, params=params))
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"reading the session failed: {first}: refresh the connection and retry") from exc


def _resolve_run(con: duckdb.DuckDBPyConnection, run: str | None) -> str:
    if run is None:
        row = _first(con, NEWEST_RUN, {})
        if row is None:
            raise QueryError("the session has no run yet: start training, then ask again")
        return row[0]
    row = _first(con, RUN_BY_ID_OR_NAME, {"run": str(run)})
    if row is None:
        known = ", ".join(f"{rid} ({rname})" for rid, rname in _rows(con, KNOWN_RUNS, {}))
        raise QueryError(f"no run {run!r} in the session (runs: {known or 'none'}): pass a run id or name listed there")
    return row[0]


def _resolve_epoch(con: duckdb.DuckDBPyConnection, run_id: str, split: str, epoch: int | None) -> int:
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ConfigError(f"epoch={epoch!r} is not an integer: pass an epoch number or None for the latest")
        return int(epoch)
    latest = _first(con, LATEST_EPOCH, {"run": run_id, "split": split})[0]
    if latest is None:
        raise QueryError(
            f"run {run_id!r} has no summarized {split!r} pass yet (summaries: {_summarized(con, run_id)}): "
            "wait for the pass to end, or pick another split"
        )
    return int(latest)


def _summarized(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    rows = _rows(con, SUMMARIZED_EPOCHS, {"run": run_id})
    return "; ".join(f"{split} epochs {', '.join(map(str, epochs))}" for split, epochs in rows) or "none"


def _check_count(label: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{label}={value!r} is not a positive integer: pass {label} >= 1")


def _check_selection(
    name: Any,
    loss_min: float | None,
    loss_max: float | None,
    q_min: float | None,
    q_max: float | None,
    ids: Any,
) -> np.ndarray | None:
    """Validate slice criteria; returns the ids as sorted unique int64, or None."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"slice name {name!r} is not a non-empty string: name the slice")
    if loss_min is None and loss_max is None and q_min is None and q_max is None and ids is None:
        raise ConfigError("no selection given: pass loss_min/loss_max, q_min/q_max or ids")
    for label, value in (("loss_min", loss_min), ("loss_max", loss_max)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
            raise ConfigError(f"{label}={value!r} is not a number: pass a loss value or None")
    for label, value in (("q_min", q_min), ("q_max", q_max)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0
        ):
            raise ConfigError(f"{label}={value!r} is not a quantile: pass a number in [0, 1]")
    if loss_min is not None and loss_max is not None and loss_min > loss_max:
        raise ConfigError(f"loss_min={loss_min} is above loss_max={loss_max}: swap them")
    if q_min is not None and q_max is not None and q_min > q_max:
        raise ConfigError(f"q_min={q_min} is above q_max={q_max}: swap them")
    if ids is None:
        return None
    try:
        array = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    except TypeError as exc:
        raise ConfigError(f"ids={ids!r} is not a collection of integers: pass a list of sample ids") from exc
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"ids of dtype {array.dtype} are not integers: pass dataset indices")
    return np.unique(array.astype(np.int64, copy=False).ravel())


def _loss_bounds(
    con: duckdb.DuckDBPyConnection,
    where: dict[str, Any],
    loss_min: float | None,
    loss_max: float | None,
    q_min: float | None,
    q_max: float | None,
) -> tuple[float | None, float | None]:
    """The loss range a selection means: the given range narrowed by the pass's quantiles."""
    if q_min is None and q_max is None:
        return loss_min, loss_max
    q_params = {**where, "q_min": q_min or 0.0, "q_max": 1.0 if q_max is None else q_max}
    q_lo, q_hi = _first(con, LOSS_QUANTILES, q_params)
    if q_lo is None:
        raise QueryError(
            f"run {where['run']!r} has no finite {where['split']!r} loss in epoch {where['epoch']}: "
            "quantiles need one; pick another epoch or select by loss or ids"
        )
    lo = _tighter(loss_min, None if q_min is None else q_lo, max)
    hi = _tighter(loss_max, None if q_max is None else q_hi, min)
    return lo, hi


def _tighter(a: float | None, b: float | None, pick: Any) -> float | None:
    if a is None:
        return None if b is None else float(b)
    return float(a) if b is None else float(pick(a, b))


def _json_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value)


def _columnar(table: pa.Table) -> dict[str, list[Any]]:
    return {name: [json_value(v) for v in table.column(name).to_pylist()] for name in table.column_names}
