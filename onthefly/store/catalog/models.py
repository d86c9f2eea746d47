"""SQLAlchemy ORM classes of the session catalog.

These classes stay inside ``onthefly.store``: callers receive the plain
dataclasses of ``onthefly.store.records``. Every change to this file comes
with a new Alembic revision in ``migrations/versions`` (a test compares the
two).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "SessionRow",
    "RunRow",
    "RunEdgeRow",
    "CheckpointRow",
    "TestRow",
    "SliceRow",
    "EventRow",
    "EpochRow",
    "ShardRow",
]


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)  # unix seconds
    origin: Mapped[str] = mapped_column(String(16), default="new")  # new | imported
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    package_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    meta: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # base | fork | merge | imported
    status: Mapped[str] = mapped_column(String(16))  # running | paused | finished | failed | stopped
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    config: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    hparams: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class RunEdgeRow(Base):
    __tablename__ = "run_edges"

    child_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))  # resumed_from | fork_of | merge_of | imported_from


class CheckpointRow(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))  # manual | epoch | final | pause | export ...
    path: Mapped[str] = mapped_column(Text)  # relative to the session folder
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    holds: Mapped[list] = mapped_column(JSON)  # subset of model/optimizer/scheduler/scaler/rng/sampler
    created_at: Mapped[float] = mapped_column(Float)


class TestRow(Base):
    __tablename__ = "tests"
    __test__ = False  # not a pytest class

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class SliceRow(Base):
    __tablename__ = "slices"
    __table_args__ = (UniqueConstraint("name", name="uq_slices_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    split: Mapped[str | None] = mapped_column(String(16), nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    method: Mapped[dict] = mapped_column(JSON)  # how the ids were chosen
    count: Mapped[int] = mapped_column(Integer)
    sample_ids: Mapped[bytes] = mapped_column(LargeBinary)  # int64 little-endian, sorted
    created_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    level: Mapped[str] = mapped_column(String(16))  # debug | info | warning | error
    kind: Mapped[str] = mapped_column(String(32))  # log | nonfinite | pause | resume | ...
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class EpochRow(Base):
    """Summary of one pass over a split: what dashboard views read (O(epochs))."""

    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("run_id", "split", "epoch", "step", name="uq_epochs_run_split_epoch_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)  # global step when the pass ended
    count: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    min: Mapped[float | None] = mapped_column(Float, nullable=True)
    max: Mapped[float | None] = mapped_column(Float, nullable=True)
    p10: Mapped[float | None] = mapped_column(Float, nullable=True)
    p50: Mapped[float | None] = mapped_column(Float, nullable=True)
    p90: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99: Mapped[float | None] = mapped_column(Float, nullable=True)
    hist_edges: Mapped[list | None] = mapped_column(JSON, nullable=True)
    hist_counts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # accuracy, ...
    created_at: Mapped[float] = mapped_column(Float)


class ShardRow(Base):
    """A Parquet file of per-sample rows or step metrics, listed so readers
    see a consistent set while the writer compacts."""

    __tablename__ = "shards"
    __table_args__ = (Index("ix_shards_kind_state", "kind", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # samples | steps
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str | None] = mapped_column(String(16), nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the session folder
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    min_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    level: Mapped[int] = mapped_column(Integer, default=0)  # 0 live part, 1+ compacted
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)  # epoch complete
    created_at: Mapped[float] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
