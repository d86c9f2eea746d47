"""Catalog rows and records: the vocabularies of the catalog's fields, the
checks and conversions of values on their way in, and the ORM rows turned
into the plain records of ``onthefly.store.records`` on their way out.

Pure functions, no connection: :class:`onthefly.store.catalog.catalog.Catalog` calls
them inside its managed sessions. Like the ORM classes, this module stays
inside ``onthefly.store``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onthefly.errors import ConfigError
from onthefly.store.records import (
    CheckpointInfo,
    EpochSummary,
    EventInfo,
    RunInfo,
    SessionRecord,
    ShardInfo,
    SliceInfo,
    TestInfo,
)

__all__ = [
    "TABLES",
    "RUN_KINDS",
    "RUN_STATUSES",
    "EDGE_ROLES",
    "EVENT_LEVELS",
    "SESSION_ORIGINS",
    "SHARD_KINDS",
    "json_dumps",
    "json_text",
    "json_value",
    "choice",
    "opt_float",
    "opt_int",
    "ids_blob",
    "blob_ids",
    "session_info",
    "run_info",
    "checkpoint_info",
    "test_info",
    "slice_info",
    "event_info",
    "epoch_summary",
    "shard_info",
    "shard_values",
    "event_values",
]

# The catalog's tables, as the models (onthefly.store.catalog.models) and the
# migrations define them; a test checks the two agree.
TABLES = ("sessions", "runs", "run_edges", "checkpoints", "tests", "slices", "events", "epochs", "shards")


RUN_KINDS = ("base", "fork", "merge", "imported")
RUN_STATUSES = ("running", "paused", "finished", "failed", "stopped", "interrupted")
EDGE_ROLES = ("resumed_from", "fork_of", "merge_of", "imported_from")
EVENT_LEVELS = ("debug", "info", "warning", "error")
SESSION_ORIGINS = ("new", "imported")
SHARD_KINDS = ("samples", "steps")

_EVENT_KEYS = frozenset({"level", "kind", "message", "run_id", "step", "data"})
_SHARD_KEYS = frozenset(
    {"kind", "run_id", "split", "epoch", "path", "rows", "bytes", "min_step", "max_step", "level", "sealed"}
)
_ID_DTYPE = np.dtype("<i8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """``value`` as JSON text, numpy values and paths made plain (the JSON columns' serializer)."""
    return json.dumps(value, default=_json_default)


def json_text(value: Any) -> str | None:
    """A JSON column's text for ``value``; None stays SQL NULL."""
    return None if value is None else json_dumps(value)


def json_value(text: str | None) -> Any:
    """The value a JSON column's text holds (SQL NULL and JSON null both give None)."""
    return None if text is None else json.loads(text)


def choice(value: str, allowed: Sequence[str], what: str) -> str:
    """``value`` when it is one of ``allowed``; ConfigError naming ``what`` and the choices otherwise."""
    if value not in allowed:
        raise ConfigError(f"{what} {value!r} is not one of {', '.join(allowed)}: pass one of these")
    return value


def opt_float(value: Any) -> float | None:
    """``float(value)``, None kept."""
    return None if value is None else float(value)


def opt_int(value: Any) -> int | None:
    """``int(value)``, None kept."""
    return None if value is None else int(value)


def ids_blob(sample_ids: Any) -> tuple[bytes, int]:
    """Sorted unique sample ids as int64 little-endian bytes, and their count."""
    arr = np.asarray(sample_ids)
    if arr.size == 0:
        return b"", 0
    if arr.dtype.kind not in "iu":
        raise ConfigError(
            f"slice sample ids must be integers (dataset indices), got dtype {arr.dtype}: pass a list or array of ints"
        )
    ids = np.unique(arr.astype(np.int64).ravel()).astype(_ID_DTYPE)
    return ids.tobytes(), int(ids.size)


def blob_ids(blob: bytes) -> np.ndarray:
    """The sample ids :func:`ids_blob` stored, as an int64 array."""
    return np.frombuffer(blob, dtype=_ID_DTYPE).astype(np.int64)


# --- rows -> records ----------------------------------------------------------


def session_info(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        project=row["project"],
        created_at=row["created_at"],
        origin=row["origin"],
        host=row["host"],
        pid=row["pid"],
        package_version=row["package_version"],
        meta=json_value(row["meta"]),
    )


def run_info(row: Any, parents: Sequence[tuple[str, str]]) -> RunInfo:
    return RunInfo(
        id=row["id"],
        session_id=row["session_id"],
        name=row["name"],
        kind=row["kind"],
        status=row["status"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        config=json_value(row["config"]),
        hparams=json_value(row["hparams"]),
        parents=tuple(parents),
    )


def checkpoint_info(row: Any) -> CheckpointInfo:
    return CheckpointInfo(
        id=row["id"],
        run_id=row["run_id"],
        step=row["step"],
        epoch=row["epoch"],
        reason=row["reason"],
        path=row["path"],
        bytes=row["bytes"],
        sha256=row["sha256"],
        holds=tuple(json_value(row["holds"]) or ()),
        created_at=row["created_at"],
    )


def test_info(row: Any) -> TestInfo:
    return TestInfo(
        id=row["id"],
        run_id=row["run_id"],
        step=row["step"],
        epoch=row["epoch"],
        split=row["split"],
        loss=row["loss"],
        metrics=json_value(row["metrics"]),
        created_at=row["created_at"],
    )


def slice_info(row: Any) -> SliceInfo:
    return SliceInfo(
        id=row["id"],
        name=row["name"],
        run_id=row["run_id"],
        split=row["split"],
        epoch=row["epoch"],
        method=json_value(row["method"]),
        count=row["count"],
        sample_ids=blob_ids(row["sample_ids"]),
        created_at=row["created_at"],
    )


def event_info(row: Any) -> EventInfo:
    return EventInfo(
        id=row["id"],
        run_id=row["run_id"],
        step=row["step"],
        level=row["level"],
        kind=row["kind"],
        message=row["message"],
        data=json_value(row["data"]),
        created_at=row["created_at"],
    )


def epoch_summary(row: Any) -> EpochSummary:
    return EpochSummary(
        run_id=row["run_id"],
        split=row["split"],
        epoch=row["epoch"],
        step=row["step"],
        count=row["count"],
        mean=row["mean"],
        min=row["min"],
        max=row["max"],
        p10=row["p10"],
        p50=row["p50"],
        p90=row["p90"],
        p99=row["p99"],
        hist_edges=list(json_value(row["hist_edges"]) or []),
        hist_counts=list(json_value(row["hist_counts"]) or []),
        metrics=json_value(row["metrics"]),
        created_at=row["created_at"],
        id=row["id"],
    )


def shard_info(row: Any) -> ShardInfo:
    return ShardInfo(
        id=row["id"],
        kind=row["kind"],
        run_id=row["run_id"],
        split=row["split"],
        epoch=row["epoch"],
        path=row["path"],
        rows=row["rows"],
        bytes=row["bytes"],
        min_step=row["min_step"],
        max_step=row["max_step"],
        level=row["level"],
        state=row["state"],
        sealed=bool(row["sealed"]),
        created_at=row["created_at"],
        retired_at=row["retired_at"],
    )


# --- fields -> column values --------------------------------------------------


def shard_values(fields: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The columns of a new active shard from :meth:`Catalog.add_shard`'s keys, checked."""
    unknown = set(fields) - _SHARD_KEYS
    missing = {"kind", "run_id", "split", "epoch", "path", "rows", "bytes", "min_step", "max_step"} - set(fields)
    if unknown or missing:
        raise ConfigError(
            f"shard fields: unknown {sorted(unknown)}, missing {sorted(missing)}: "
            f"pass exactly the keys of Catalog.add_shard ({', '.join(sorted(_SHARD_KEYS))})"
        )
    return dict(
        kind=choice(fields["kind"], SHARD_KINDS, "shard kind"),
        run_id=fields["run_id"],
        split=fields["split"],
        epoch=opt_int(fields["epoch"]),
        path=str(fields["path"]),
        rows=int(fields["rows"]),
        bytes=int(fields["bytes"]),
        min_step=opt_int(fields["min_step"]),
        max_step=opt_int(fields["max_step"]),
        level=int(fields.get("level", 0)),
        state="active",
        sealed=bool(fields.get("sealed", False)),
        created_at=now,
        retired_at=None,
    )


def event_values(fields: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The columns of a new event from :meth:`Catalog.add_event`'s keys, checked."""
    unknown = set(fields) - _EVENT_KEYS
    missing = {"level", "kind", "message"} - set(fields)
    if unknown or missing:
        raise ConfigError(
            f"event fields: unknown {sorted(unknown)}, missing {sorted(missing)}: "
            f"pass the keys of Catalog.add_event ({', '.join(sorted(_EVENT_KEYS))})"
        )
    return dict(
        run_id=fields.get("run_id"),
        step=opt_int(fields.get("step")),
        level=choice(fields["level"], EVENT_LEVELS, "event level"),
        kind=str(fields["kind"]),
        message=str(fields["message"]),
        data=json_text(fields.get("data")),
        created_at=now,
    )
