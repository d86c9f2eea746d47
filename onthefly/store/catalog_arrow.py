"""Catalog tables as Arrow tables, for the DuckDB views of a reader.

:meth:`onthefly.store.catalog.Catalog.table_arrow` runs :func:`arrow_select`
in one of its managed sessions and hands the rows to :func:`arrow_table`;
both functions are pure (no connection). pyarrow is imported only when a
table is built, so a training process that never exports does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from onthefly.errors import ConfigError
from onthefly.store.catalog_records import blob_ids
from onthefly.store.models import Base, SliceRow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ARROW_TABLES", "arrow_select", "arrow_table"]

ARROW_TABLES = (
    "sessions", "runs", "run_edges", "checkpoints", "tests", "slices", "events", "epochs",
    "shards", "slice_members",
)  # fmt: skip

SLICE_MEMBERS = sa.select(SliceRow.id, SliceRow.name, SliceRow.sample_ids).order_by(SliceRow.id)


def arrow_select(name: str) -> sa.Select:
    """The SELECT that reads catalog table ``name`` for :func:`arrow_table`.

    Rows come in the order they were written; JSON columns come as JSON text
    (SQL NULL when empty); ``slices`` leaves out the id blob.

    Args:
        name: one of ``ARROW_TABLES``.

    Returns:
        The statement to run in a catalog session.

    Raises:
        ConfigError: ``name`` is not one of ``ARROW_TABLES``.

    Example:
        >>> arrow_select("runs").selected_columns.keys()[:2]
        ['id', 'session_id']
    """
    if name == "slice_members":
        return SLICE_MEMBERS
    if name not in ARROW_TABLES:
        raise ConfigError(f"no catalog table {name!r}: choose one of {', '.join(ARROW_TABLES)}")
    table = Base.metadata.tables[name]
    selected = [
        sa.func.nullif(sa.type_coerce(c, sa.Text), "null").label(c.name) if isinstance(c.type, sa.JSON) else c
        for c in _columns(name)
    ]
    return sa.select(*selected).order_by(sa.literal_column(f"{table.name}.rowid"))  # write order


def arrow_table(name: str, rows: Sequence[Any]) -> pa.Table:
    """The rows :func:`arrow_select` read, as an Arrow table.

    The schema is the same whether ``rows`` is empty or not;
    ``slice_members`` lists ``(slice_id, name, sample_id)`` one id a row.

    Args:
        name: the table ``rows`` were read from.
        rows: the result rows of ``arrow_select(name)``.

    Returns:
        A ``pyarrow.Table``.

    Example:
        >>> arrow_table("runs", []).num_rows
        0
    """
    import pyarrow as pa

    if name == "slice_members":
        return _slice_members(rows)
    columns = _columns(name)
    schema = pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in columns])
    data = {c.name: [row[i] for row in rows] for i, c in enumerate(columns)}
    return pa.table(data, schema=schema)


def _columns(name: str) -> list[sa.Column]:
    table = Base.metadata.tables[name]
    return [c for c in table.columns if not (name == "slices" and c.name == "sample_ids")]


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


def _arrow_type(column_type: sa.types.TypeEngine) -> pa.DataType:
    import pyarrow as pa

    if isinstance(column_type, sa.Boolean):
        return pa.bool_()
    if isinstance(column_type, sa.Integer):
        return pa.int64()
    if isinstance(column_type, sa.Float):
        return pa.float64()
    if isinstance(column_type, (sa.JSON, sa.String)):
        return pa.string()  # JSON columns travel as JSON text
    if isinstance(column_type, sa.LargeBinary):
        return pa.binary()
    raise TypeError(f"no Arrow type for column type {column_type!r}: add it to _arrow_type")
