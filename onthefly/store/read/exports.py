"""Exports: where an exported file may land, and how rows become that file.

:func:`onthefly.store.read.reports.export_slice` and ``onthefly sql --output``
write through :func:`write_rows`: a CSV, zstd Parquet or JSON file written to
a temporary name, fsynced and renamed, so a reader never sees half of it.
:func:`export_target` keeps exports inside the folder they were asked for
from. Nothing here reads the session.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from onthefly.errors import ConfigError
from onthefly.store.durable import fsync_folder
from onthefly.store.read.query import json_rows

__all__ = ["EXPORT_FORMATS", "export_target", "write_rows", "join_extra_columns"]

EXPORT_FORMATS = ("csv", "parquet", "json")


def export_target(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Where an export of ``path`` lands, refused unless inside ``root``.

    Args:
        root: the folder exports must stay in.
        path: the requested file; relative paths are taken from ``root``.

    Returns:
        The absolute target, symlinks resolved.

    Raises:
        ConfigError: the target is ``root`` itself, a folder, or outside ``root``.

    Example:
        >>> export_target("/work", "out/hard.csv")  # doctest: +SKIP
        PosixPath('/work/out/hard.csv')
    """
    base = Path(root).expanduser().resolve()
    requested = Path(path).expanduser()
    target = (requested if requested.is_absolute() else base / requested).resolve()
    if base not in target.parents and target != base:
        raise ConfigError(
            f"export path {str(path)!r} resolves to {target}, outside {base}: "
            "exports are written inside the working directory; pass a path under it"
        )
    if target == base or target.is_dir():
        raise ConfigError(f"export path {target} is a folder: pass a file name, e.g. {target / 'slice.csv'}")
    return target


def write_rows(table: pa.Table, path: str | os.PathLike[str], *, format: str) -> int:
    """Write ``table`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        table: the rows.
        path: the file to write; its folder is created if needed.
        format: ``"csv"``, ``"parquet"`` (zstd) or ``"json"`` (an array of
            objects, NaN and infinities as null).

    Returns:
        The size of the written file in bytes.

    Raises:
        ConfigError: a bad ``format``.

    Example:
        >>> write_rows(pa.table({"a": [1]}), "/tmp/a.csv", format="csv")  # doctest: +SKIP
        6
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format={format!r} is not one of {EXPORT_FORMATS}: pass csv, parquet or json")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if format == "csv":
            pacsv.write_csv(table, tmp)
        elif format == "parquet":
            pq.write_table(table, tmp, compression="zstd")
        else:
            names = table.column_names
            records = [dict(zip(names, row)) for row in json_rows(table)]
            tmp.write_text(json.dumps(records, allow_nan=False) + "\n", encoding="utf-8")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(target.parent)
    return target.stat().st_size


def _as_table(extra: Any) -> Any:
    """A pandas DataFrame as a pyarrow table (its index dropped); anything else as it is.

    pandas is not imported here: a DataFrame can only come from a process that has it
    (``pip install "onthefly-ai[explorer]"``).
    """
    if type(extra).__module__.split(".")[0] == "pandas" and type(extra).__name__ == "DataFrame":
        return pa.Table.from_pandas(extra, preserve_index=False)
    return extra


def join_extra_columns(rows: pa.Table, extra: Any) -> pa.Table:
    """``rows`` with the columns of ``extra`` joined on ``sample_id``, in the order of ``rows``.

    Args:
        rows: the exported rows, with a ``sample_id`` column.
        extra: per-sample fields (a pyarrow table, or a pandas DataFrame with
            the ``[explorer]`` extra): a ``sample_id`` column and one row per
            sample; samples it lacks get nulls.

    Returns:
        The joined table.

    Raises:
        ConfigError: ``extra`` is not a table with a ``sample_id`` column, repeats
            a column of ``rows``, or has several rows for one sample.

    Example:
        >>> rows = pa.table({"sample_id": [2, 1]})
        >>> join_extra_columns(rows, pa.table({"sample_id": [1], "tag": ["a"]}))["tag"].to_pylist()
        [None, 'a']
    """
    extra = _as_table(extra)
    if not isinstance(extra, pa.Table) or "sample_id" not in extra.column_names:
        raise ConfigError(
            "extra_columns must be a pyarrow.Table or a pandas DataFrame with a sample_id column: add one"
        )
    clash = sorted(set(extra.column_names) & set(rows.column_names) - {"sample_id"})
    if clash:
        raise ConfigError(f"extra_columns repeats {clash}: rename those columns")
    if pc.count_distinct(extra["sample_id"]).as_py() != extra.num_rows:
        raise ConfigError("extra_columns has several rows for one sample_id: give one row per sample")
    extra = extra.set_column(
        extra.column_names.index("sample_id"), "sample_id", pc.cast(extra["sample_id"], pa.int64())
    )
    order = "__onthefly_row"
    numbered = rows.append_column(order, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    joined = numbered.join(extra, keys="sample_id", join_type="left outer")
    return joined.sort_by(order).drop_columns([order])
