"""Catalog tables as Arrow tables, for the DuckDB views of a reader.

:meth:`onthefly.store.catalog.catalog.Catalog.table_arrow` reads a table's columns
(``PRAGMA table_info``: the schema of the file, which the migrations made),
runs :func:`arrow_select` and hands the rows to :func:`arrow_table`; both
functions are pure (no connection). pyarrow is imported only when a table is
built, so a training process that never exports does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onthefly.errors import ConfigError
from onthefly.store.catalog.rows import TABLES, blob_ids

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ARROW_TABLES", "source_table", "arrow_select", "arrow_table"]

ARROW_TABLES = TABLES + ("slice_members",)

# (name, declared SQL type) of one column, as PRAGMA table_info gives them.
Column = tuple[str, str]

_SLICE_MEMBERS = "SELECT id, name, sample_ids FROM slices ORDER BY id"


def _check(name: str) -> None:
    if name not in ARROW_TABLES:
        raise ConfigError(f"no catalog table {name!r}: choose one of {', '.join(ARROW_TABLES)}")


def source_table(name: str) -> str:
    """The catalog table whose columns ``name`` is read from (checked against ``ARROW_TABLES``).

    Example:
        >>> source_table("slice_members")
        'slices'
    """
    _check(name)
    return "slices" if name == "slice_members" else name


def arrow_select(name: str, columns: Sequence[Column]) -> str:
    """The SELECT that reads catalog table ``name`` for :func:`arrow_table`.

    Rows come in the order they were written; JSON columns come as JSON text
    (SQL NULL when empty); ``slices`` leaves out the id blob.

    Args:
        name: one of ``ARROW_TABLES``.
        columns: the table's ``(name, declared type)`` pairs.

    Returns:
        The statement to run in a catalog transaction.

    Raises:
        ConfigError: ``name`` is not one of ``ARROW_TABLES``.

    Example:
        >>> arrow_select("runs", [("id", "VARCHAR(64)"), ("config", "JSON")])
        "SELECT id, NULLIF(config, 'null') AS config FROM runs ORDER BY rowid"
    """
    _check(name)
    if name == "slice_members":
        return _SLICE_MEMBERS
    selected = [f"NULLIF({c}, 'null') AS {c}" if kind.upper() == "JSON" else c for c, kind in _kept(name, columns)]
    return f"SELECT {', '.join(selected)} FROM {name} ORDER BY rowid"  # write order


def arrow_table(name: str, columns: Sequence[Column], rows: Sequence[Any]) -> pa.Table:
    """The rows :func:`arrow_select` read, as an Arrow table.

    The schema is the same whether ``rows`` is empty or not;
    ``slice_members`` lists ``(slice_id, name, sample_id)`` one id a row.

    Args:
        name: the table ``rows`` were read from.
        columns: the table's ``(name, declared type)`` pairs, as given to :func:`arrow_select`.
        rows: the result rows of ``arrow_select(name, columns)``.

    Returns:
        A ``pyarrow.Table``.

    Example:
        >>> arrow_table("runs", [("id", "VARCHAR(64)")], []).num_rows
        0
    """
    import pyarrow as pa

    _check(name)
    if name == "slice_members":
        return _slice_members(rows)
    kept = _kept(name, columns)
    schema = pa.schema([pa.field(c, _arrow_type(kind)) for c, kind in kept])
    data = {c: [row[i] for row in rows] for i, (c, _) in enumerate(kept)}
    for c, _kind in kept:
        if schema.field(c).type == pa.bool_():  # SQLite keeps booleans as 0 and 1
            data[c] = [None if v is None else bool(v) for v in data[c]]
    return pa.table(data, schema=schema)


def _kept(name: str, columns: Sequence[Column]) -> list[Column]:
    return [(c, kind) for c, kind in columns if not (name == "slices" and c == "sample_ids")]


def _slice_members(rows: Sequence[Any]) -> pa.Table:
    import pyarrow as pa

    ids = [blob_ids(blob) for _, _, blob in rows]
    counts = [len(a) for a in ids]
    schema = pa.schema([("slice_id", pa.int64()), ("name", pa.string()), ("sample_id", pa.int64())])
    return pa.table(
        {
            "slice_id": np.repeat(np.array([r[0] for r in rows], dtype=np.int64), counts),
            "name": [r[1] for r, n in zip(rows, counts) for _ in range(n)],
            "sample_id": np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64),
        },
        schema=schema,
    )


def _arrow_type(declared: str) -> pa.DataType:
    """The Arrow type of a column from its declared SQL type, as the models' DDL writes it."""
    import pyarrow as pa

    kind = declared.upper().split("(")[0].strip()
    if kind == "BOOLEAN":
        return pa.bool_()
    if kind == "INTEGER":
        return pa.int64()
    if kind == "FLOAT":
        return pa.float64()
    if kind in ("JSON", "VARCHAR", "TEXT"):
        return pa.string()  # JSON columns travel as JSON text
    if kind == "BLOB":
        return pa.binary()
    raise TypeError(f"no Arrow type for column type {declared!r}: add it to _arrow_type")
