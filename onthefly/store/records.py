"""Plain records handed out by the store. ORM classes never leave ``onthefly.store``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "PassKey",
    "SessionRecord",
    "SessionListing",
    "RunInfo",
    "CheckpointInfo",
    "TestInfo",
    "SliceInfo",
    "EventInfo",
    "EpochSummary",
    "ShardInfo",
]


class PassKey(NamedTuple):
    """One pass over a split: the rows of ``split`` that ``run_id`` recorded in ``epoch``.

    A named tuple, so it hashes and compares as the ``(run_id, split, epoch)``
    triple the catalog's shard records hold.
    """

    run_id: str
    split: str
    epoch: int


@dataclass(frozen=True)
class SessionRecord:
    """A session's record in its own catalog."""

    id: str
    project: str
    created_at: float
    origin: str = "new"
    host: str | None = None
    pid: int | None = None
    package_version: str | None = None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunInfo:
    id: str
    session_id: str
    name: str
    kind: str  # base | fork | merge | imported
    status: str  # running | paused | finished | failed | stopped
    created_at: float
    ended_at: float | None = None
    config: dict[str, Any] | None = None
    hparams: dict[str, Any] | None = None
    parents: tuple[tuple[str, str], ...] = ()  # (parent_id, role)

    def summary(self) -> dict[str, Any]:
        """The run as the link, the CLI and bundle manifests show it (JSON-ready, no config)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "parents": [{"id": parent, "role": role} for parent, role in self.parents],
        }


@dataclass(frozen=True)
class SessionListing:
    """A session folder as the store root lists it."""

    id: str
    dir: Path
    created_at: float
    live: bool
    pinned: bool
    project: str | None = None
    runs: tuple[RunInfo, ...] = ()
    error: str | None = None  # set when the catalog could not be read


@dataclass(frozen=True)
class CheckpointInfo:
    id: str
    run_id: str
    step: int
    epoch: int
    reason: str
    path: str  # relative to the session folder
    bytes: int
    sha256: str
    holds: tuple[str, ...]
    created_at: float


@dataclass(frozen=True)
class TestInfo:
    __test__ = False  # not a pytest class

    id: int
    run_id: str
    step: int
    epoch: int
    split: str
    loss: float | None
    metrics: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True)
class SliceInfo:
    id: int
    name: str
    run_id: str | None
    split: str | None
    epoch: int | None
    method: dict[str, Any]
    count: int
    sample_ids: np.ndarray = field(repr=False, compare=False)  # int64, sorted
    created_at: float = 0.0


@dataclass(frozen=True)
class EventInfo:
    id: int
    run_id: str | None
    step: int | None
    level: str
    kind: str
    message: str
    data: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True)
class EpochSummary:
    """The per-sample loss distribution of one pass over a split."""

    run_id: str
    split: str
    epoch: int
    step: int
    count: int
    mean: float | None
    min: float | None
    max: float | None
    p10: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    hist_edges: list[float] = field(default_factory=list)
    hist_counts: list[int] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass(frozen=True)
class ShardInfo:
    id: int
    kind: str  # samples | steps
    run_id: str
    split: str | None
    epoch: int | None
    path: str  # relative to the session folder
    rows: int
    bytes: int
    min_step: int | None
    max_step: int | None
    level: int
    state: str  # active | retired
    sealed: bool
    created_at: float
    retired_at: float | None = None
