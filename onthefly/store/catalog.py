"""The session catalog: runs, lineage, checkpoints, tests, slices, events,
epoch summaries and the list of Parquet shards, in one SQLite file.

A writable ``Catalog`` is the session's only writer: one SQLAlchemy engine with
exactly one connection, shared by the training thread and the shard-writer
thread behind one re-entrant lock. Every other process opens the file
read-only. ORM rows never leave this module and its two helpers
(:mod:`onthefly.store.catalog_records` turns them into records,
:mod:`onthefly.store.catalog_arrow` into Arrow tables); callers get the
dataclasses of ``onthefly.store.records``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from onthefly._version import __version__
from onthefly.errors import ConfigError, MissingFileError, StoreError
from onthefly.store import migrate
from onthefly.store.catalog_arrow import ARROW_TABLES, arrow_select, arrow_table
from onthefly.store.catalog_records import (
    EDGE_ROLES,
    EVENT_LEVELS,
    RUN_KINDS,
    RUN_STATUSES,
    SESSION_ORIGINS,
    SHARD_KINDS,  # noqa: F401  (re-exported for callers of this module)
    checkpoint_info,
    choice,
    epoch_summary,
    event_info,
    event_row,
    ids_blob,
    json_dumps,
    opt_float,
    opt_int,
    plain,
    run_info,
    session_info,
    shard_info,
    shard_row,
    slice_info,
    test_info,
)
from onthefly.store.models import (
    CheckpointRow,
    EpochRow,
    EventRow,
    RunEdgeRow,
    RunRow,
    SessionRow,
    ShardRow,
    SliceRow,
    TestRow,
)
from onthefly.store.records import (
    CheckpointInfo,
    EpochSummary,
    EventInfo,
    RunInfo,
    SessionInfo,
    ShardInfo,
    SliceInfo,
    TestInfo,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Catalog", "RUN_KINDS", "RUN_STATUSES", "EDGE_ROLES", "EVENT_LEVELS", "ARROW_TABLES"]

_PRAGMAS_WRITABLE = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={migrate.BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
)
_PRAGMAS_READONLY = (
    f"PRAGMA busy_timeout={migrate.BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA query_only=ON",
)


def _create_engine(path: Path, *, readonly: bool) -> sa.Engine:
    if readonly:
        uri = migrate.readonly_uri(path)

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False)

    else:
        target = str(path)

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(target, check_same_thread=False)

    engine = sa.create_engine(
        "sqlite://", creator=creator, poolclass=StaticPool, json_serializer=json_dumps
    )
    pragmas = _PRAGMAS_READONLY if readonly else _PRAGMAS_WRITABLE

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_conn.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma).fetchall()
        finally:
            cursor.close()

    return engine


def _listing(ids: Iterable[Any], *, limit: int = 20) -> str:
    ids = list(ids)
    if not ids:
        return "none"
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


class Catalog:
    """One session's catalog file, open for writing (by its owner) or read-only.

    Open it with :meth:`Catalog.open`; every public method is thread-safe.

    Example:
        >>> with Catalog.open(Path("sessions/x/catalog.sqlite")) as cat:
        ...     cat.init_session("x", "demo")
        ...     run = cat.add_run(name="baseline")
    """

    def __init__(self, path: Path, engine: sa.Engine, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._engine: sa.Engine | None = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
        self._lock = threading.RLock()

    # --- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Catalog:
        """Open (writable: create and upgrade) the catalog at ``path``.

        Args:
            path: the ``catalog.sqlite`` file.
            readonly: open without writing anything; the file must exist and be
                at the schema this version knows.

        Returns:
            The open catalog; close it (or use it as a context manager).

        Raises:
            MissingFileError: read-only and the file does not exist.
            SchemaError: the schema is older (read-only) or newer than this version's.
            CorruptFileError: the file is not an SQLite database.

        Example:
            >>> cat = Catalog.open(Path("catalog.sqlite"), readonly=True)
        """
        path = Path(path)
        if readonly and not path.is_file():
            raise MissingFileError(
                f"catalog {path} does not exist: check the session id (list sessions with "
                "`onthefly ls`)"
            )
        if not readonly:
            migrate.upgrade(path)
        engine = _create_engine(path, readonly=readonly)
        try:
            with migrate.translated_errors(path), engine.connect() as conn:
                if readonly:
                    migrate.raise_for_revision(path, migrate.revision_of(conn))
        except BaseException:
            engine.dispose()
            raise
        return cls(path, engine, readonly=readonly)

    def close(self) -> None:
        """Close the connection; a second call does nothing."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        state = "closed" if self._engine is None else "open"
        return f"Catalog({str(self.path)!r}, {mode}, {state})"

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """The managed session: one per public call, committed or rolled back, then closed."""
        with self._lock:
            if self._engine is None:
                raise StoreError(f"catalog {self.path} is closed: open it again with Catalog.open")
            if write and self.readonly:
                raise StoreError(
                    f"catalog {self.path} was opened read-only: only the process that owns the "
                    "session writes it (open it with Catalog.open(path) there)"
                )
            session = self._sessions()
            try:
                with migrate.translated_errors(self.path):
                    yield session
                    if write:
                        session.commit()
            except sa.exc.IntegrityError as exc:
                session.rollback()
                raise StoreError(
                    f"catalog {self.path} refused the write ({exc.orig}): check the ids passed"
                ) from exc
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    # --- session and runs ----------------------------------------------------

    def init_session(
        self, session_id: str, project: str, *, origin: str = "new", meta: dict | None = None
    ) -> SessionInfo:
        """Record the session this catalog belongs to (again on reopen: host and pid refresh).

        Args:
            session_id: the session folder's id.
            project: the user's project name.
            origin: ``"new"`` or ``"imported"``.
            meta: free JSON metadata.

        Returns:
            The session record.

        Example:
            >>> cat.init_session("20250101-120000-a1b2c3", "mnist").project
            'mnist'
        """
        choice(origin, SESSION_ORIGINS, "session origin")
        with self._session(write=True) as s:
            other = s.scalars(sa.select(SessionRow).where(SessionRow.id != session_id)).first()
            if other is not None:
                raise StoreError(
                    f"catalog {self.path} belongs to session {other.id}, not {session_id}: "
                    "open the catalog of that session's folder instead"
                )
            row = s.get(SessionRow, session_id)
            if row is None:
                row = SessionRow(id=session_id, project=project, created_at=time.time(), origin=origin)
                s.add(row)
            row.host, row.pid, row.package_version = socket.gethostname(), os.getpid(), __version__
            if meta is not None:
                row.meta = plain(meta)
            s.flush()
            return session_info(row)

    def session(self) -> SessionInfo | None:
        """The session record, or None before :meth:`init_session`."""
        with self._session() as s:
            row = s.scalars(sa.select(SessionRow)).first()
            return None if row is None else session_info(row)

    def add_run(
        self,
        *,
        name: str,
        kind: str = "base",
        config: dict | None = None,
        hparams: dict | None = None,
        parents: Sequence[tuple[str, str]] = (),
        run_id: str | None = None,
        status: str = "running",
    ) -> RunInfo:
        """Add a run of this catalog's session, with its parents (a merge has several).

        Args:
            name: a display name.
            kind: base, fork, merge or imported.
            config: the training configuration (JSON).
            hparams: hyperparameters (JSON).
            parents: ``(parent_run_id, role)`` pairs; role is resumed_from,
                fork_of, merge_of or imported_from.
            run_id: the id; default 12 random hex digits.
            status: running, paused, finished, failed or stopped.

        Returns:
            The run record.

        Example:
            >>> cat.add_run(name="merged", kind="merge", parents=[(a, "merge_of"), (b, "merge_of")])
        """
        choice(kind, RUN_KINDS, "run kind")
        choice(status, RUN_STATUSES, "run status")
        pairs = [(str(parent), choice(role, EDGE_ROLES, "edge role")) for parent, role in parents]
        if len({p for p, _ in pairs}) != len(pairs):
            raise ConfigError(f"parents {pairs} name a run twice: list each parent once")
        run_id = run_id or uuid.uuid4().hex[:12]
        with self._session(write=True) as s:
            session_id = s.scalars(sa.select(SessionRow.id)).first()
            if session_id is None:
                raise StoreError(f"catalog {self.path} has no session yet: call init_session first")
            if s.get(RunRow, run_id) is not None:
                raise StoreError(f"run {run_id} already exists in {self.path}: pass another run_id or none")
            row = RunRow(
                id=run_id, session_id=session_id, name=name, kind=kind, status=status,
                created_at=time.time(), config=plain(config), hparams=plain(hparams),
            )  # fmt: skip
            s.add(row)
            s.flush()
            s.add_all(RunEdgeRow(child_id=run_id, parent_id=p, role=role) for p, role in pairs)
            return run_info(row, pairs)

    def set_run_status(self, run_id: str, status: str, *, ended: bool = False) -> None:
        """Set a run's status; ``ended=True`` also stamps ``ended_at`` with now."""
        choice(status, RUN_STATUSES, "run status")
        with self._session(write=True) as s:
            row = self._require_run(s, run_id)
            row.status = status
            if ended:
                row.ended_at = time.time()

    def run(self, run_id: str) -> RunInfo:
        """One run by id; StoreError listing the known runs when it is not there."""
        with self._session() as s:
            row = self._require_run(s, run_id)
            return run_info(row, self._parents(s).get(run_id, []))

    def runs(self) -> list[RunInfo]:
        """Every run in creation order, parents filled in."""
        with self._session() as s:
            parents = self._parents(s)
            rows = s.scalars(sa.select(RunRow).order_by(RunRow.created_at, sa.literal_column("runs.rowid")))
            return [run_info(row, parents.get(row.id, [])) for row in rows]

    def _require_run(self, s: Session, run_id: str) -> RunRow:
        row = s.get(RunRow, run_id)
        if row is None:
            known = s.scalars(sa.select(RunRow.id).order_by(RunRow.created_at)).all()
            raise StoreError(
                f"no run {run_id!r} in {self.path}; known runs: {_listing(known)}: "
                "pass one of these ids"
            )
        return row

    @staticmethod
    def _parents(s: Session) -> dict[str, list[tuple[str, str]]]:
        edges: dict[str, list[tuple[str, str]]] = {}
        stmt = sa.select(RunEdgeRow).order_by(sa.literal_column("run_edges.rowid"))
        for edge in s.scalars(stmt):
            edges.setdefault(edge.child_id, []).append((edge.parent_id, edge.role))
        return edges

    # --- checkpoints and tests -----------------------------------------------

    def add_checkpoint(self, info: CheckpointInfo) -> None:
        """List a checkpoint file (already written and hashed) of an existing run."""
        with self._session(write=True) as s:
            self._require_run(s, info.run_id)
            if s.get(CheckpointRow, info.id) is not None:
                raise StoreError(f"checkpoint {info.id} already exists in {self.path}: use a new id")
            s.add(CheckpointRow(
                id=info.id, run_id=info.run_id, step=int(info.step), epoch=int(info.epoch),
                reason=info.reason, path=str(info.path), bytes=int(info.bytes), sha256=info.sha256,
                holds=[str(h) for h in info.holds], created_at=float(info.created_at),
            ))  # fmt: skip

    def checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        """One checkpoint by id; StoreError listing the known ones when it is not there."""
        with self._session() as s:
            row = s.get(CheckpointRow, checkpoint_id)
            if row is None:
                known = s.scalars(sa.select(CheckpointRow.id).order_by(CheckpointRow.created_at)).all()
                raise StoreError(
                    f"no checkpoint {checkpoint_id!r} in {self.path}; known: {_listing(known)}: "
                    "pass one of these ids"
                )
            return checkpoint_info(row)

    def checkpoints(self, run_id: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints ordered by run, step and creation time."""
        stmt = sa.select(CheckpointRow).order_by(
            CheckpointRow.run_id, CheckpointRow.step, CheckpointRow.created_at
        )
        if run_id is not None:
            stmt = stmt.where(CheckpointRow.run_id == run_id)
        with self._session() as s:
            return [checkpoint_info(row) for row in s.scalars(stmt)]

    def latest_checkpoint(self, run_id: str) -> CheckpointInfo | None:
        """The run's checkpoint of the highest step (the newest among equals), or None."""
        stmt = (
            sa.select(CheckpointRow)
            .where(CheckpointRow.run_id == run_id)
            .order_by(CheckpointRow.step.desc(), CheckpointRow.created_at.desc())
            .limit(1)
        )
        with self._session() as s:
            row = s.scalars(stmt).first()
            return None if row is None else checkpoint_info(row)

    def add_test(
        self, *, run_id: str, step: int, epoch: int, split: str, loss: float | None, metrics: dict | None = None
    ) -> TestInfo:
        """Record an evaluation of a run on a split."""
        with self._session(write=True) as s:
            self._require_run(s, run_id)
            row = TestRow(
                run_id=run_id, step=int(step), epoch=int(epoch), split=split, loss=opt_float(loss),
                metrics=plain(metrics), created_at=time.time(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return test_info(row)

    def tests(self, run_id: str | None = None) -> list[TestInfo]:
        """Evaluations in the order they were recorded."""
        stmt = sa.select(TestRow).order_by(TestRow.id)
        if run_id is not None:
            stmt = stmt.where(TestRow.run_id == run_id)
        with self._session() as s:
            return [test_info(row) for row in s.scalars(stmt)]

    # --- slices --------------------------------------------------------------

    def add_slice(
        self,
        *,
        name: str,
        sample_ids: Any,
        method: dict,
        run_id: str | None = None,
        split: str | None = None,
        epoch: int | None = None,
        replace: bool = False,
    ) -> SliceInfo:
        """Save a named set of sample ids and how it was chosen.

        Args:
            name: unique name of the slice.
            sample_ids: integer dataset indices (any order, duplicates dropped).
            method: how they were chosen, as JSON (e.g. ``{"top_loss": 100}``).
            run_id, split, epoch: where they were chosen from.
            replace: overwrite a slice of the same name.

        Returns:
            The slice, its ids sorted and unique.

        Example:
            >>> cat.add_slice(name="hard", sample_ids=[7, 3, 7], method={"top_loss": 2}).count
            2
        """
        blob, count = ids_blob(sample_ids)
        with self._session(write=True) as s:
            existing = s.scalars(sa.select(SliceRow).where(SliceRow.name == name)).first()
            if existing is not None:
                if not replace:
                    raise StoreError(
                        f"slice {name!r} already exists in {self.path}: pass replace=True to "
                        "overwrite it or choose another name"
                    )
                s.delete(existing)
                s.flush()
            row = SliceRow(
                name=name, run_id=run_id, split=split, epoch=opt_int(epoch), method=plain(method),
                count=count, sample_ids=blob, created_at=time.time(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return slice_info(row)

    def slice(self, name: str) -> SliceInfo:
        """One slice by name; StoreError listing the known ones when it is not there."""
        with self._session() as s:
            row = s.scalars(sa.select(SliceRow).where(SliceRow.name == name)).first()
            if row is None:
                known = s.scalars(sa.select(SliceRow.name).order_by(SliceRow.id)).all()
                raise StoreError(
                    f"no slice {name!r} in {self.path}; known slices: {_listing(known)}: "
                    "pass one of these names"
                )
            return slice_info(row)

    def slices(self) -> list[SliceInfo]:
        """Every slice in creation order."""
        with self._session() as s:
            return [slice_info(row) for row in s.scalars(sa.select(SliceRow).order_by(SliceRow.id))]

    # --- events --------------------------------------------------------------

    def add_event(
        self,
        *,
        level: str,
        kind: str,
        message: str,
        run_id: str | None = None,
        step: int | None = None,
        data: dict | None = None,
    ) -> EventInfo:
        """Append one event (a log line, a pause, a non-finite loss...)."""
        fields = {"level": level, "kind": kind, "message": message, "run_id": run_id, "step": step, "data": data}
        row = event_row(fields, now=time.time())
        with self._session(write=True) as s:
            s.add(row)
            s.flush()
            return event_info(row)

    def add_events(self, events: Sequence[dict]) -> None:
        """Append several events (dicts with :meth:`add_event`'s keys) in one transaction."""
        now = time.time()
        rows = [event_row(dict(event), now=now) for event in events]
        if not rows:
            return
        with self._session(write=True) as s:
            s.add_all(rows)

    def events(
        self,
        *,
        run_id: str | None = None,
        since_id: int = 0,
        levels: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[EventInfo]:
        """Events with ``id > since_id`` in the order they happened (poll with the last id seen)."""
        stmt = sa.select(EventRow).where(EventRow.id > since_id).order_by(EventRow.id)
        if run_id is not None:
            stmt = stmt.where(EventRow.run_id == run_id)
        if levels is not None:
            stmt = stmt.where(EventRow.level.in_(list(levels)))
        if limit is not None:
            stmt = stmt.limit(int(limit))
        with self._session() as s:
            return [event_info(row) for row in s.scalars(stmt)]

    # --- epoch summaries -----------------------------------------------------

    def add_epoch(self, summary: EpochSummary) -> EpochSummary:
        """Insert or replace the summary of ``(run_id, split, epoch, step)``.

        Returns:
            The summary as stored (plain Python numbers), with ``id`` and
            ``created_at`` filled in.
        """
        values = {
            "count": int(summary.count),
            **{k: opt_float(getattr(summary, k)) for k in ("mean", "min", "max", "p10", "p50", "p90", "p99")},
            "hist_edges": [float(x) for x in summary.hist_edges],
            "hist_counts": [int(x) for x in summary.hist_counts],
            "metrics": plain(summary.metrics),
            "created_at": summary.created_at if summary.created_at is not None else time.time(),
        }
        key = {"run_id": summary.run_id, "split": summary.split, "epoch": int(summary.epoch), "step": int(summary.step)}
        with self._session(write=True) as s:
            self._require_run(s, summary.run_id)
            row = s.scalars(sa.select(EpochRow).filter_by(**key)).first()
            if row is None:
                row = EpochRow(**key, **values)
                s.add(row)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            s.flush()
            return epoch_summary(row)

    def epochs(self, *, run_id: str | None = None, split: str | None = None) -> list[EpochSummary]:
        """Epoch summaries ordered by run, split, epoch and step."""
        stmt = sa.select(EpochRow).order_by(EpochRow.run_id, EpochRow.split, EpochRow.epoch, EpochRow.step)
        if run_id is not None:
            stmt = stmt.where(EpochRow.run_id == run_id)
        if split is not None:
            stmt = stmt.where(EpochRow.split == split)
        with self._session() as s:
            return [epoch_summary(row) for row in s.scalars(stmt)]

    # --- shards --------------------------------------------------------------

    def add_shard(
        self,
        *,
        kind: str,
        run_id: str,
        split: str | None,
        epoch: int | None,
        path: str,
        rows: int,
        bytes: int,
        min_step: int | None,
        max_step: int | None,
        level: int = 0,
        sealed: bool = False,
    ) -> ShardInfo:
        """List a Parquet file (already written and renamed into place) as active."""
        fields = dict(
            kind=kind, run_id=run_id, split=split, epoch=epoch, path=path, rows=rows, bytes=bytes,
            min_step=min_step, max_step=max_step, level=level, sealed=sealed,
        )  # fmt: skip
        row = shard_row(fields, now=time.time())
        with self._session(write=True) as s:
            s.add(row)
            s.flush()
            return shard_info(row)

    def compact_shards(self, *, retire_ids: Sequence[int], new: dict) -> ShardInfo:
        """In one transaction: list ``new`` (add_shard's keys) and retire ``retire_ids``.

        Readers see either the old parts or the compacted file, never both or
        neither. Retired files stay on disk until :meth:`forget_shards`.

        Raises:
            StoreError: one of ``retire_ids`` is not an active shard; nothing changes.
        """
        now = time.time()
        row = shard_row(dict(new), now=now)
        ids = sorted({int(i) for i in retire_ids})
        with self._session(write=True) as s:
            old = s.scalars(sa.select(ShardRow).where(ShardRow.id.in_(ids))).all()
            active = {r.id for r in old if r.state == "active"}
            if active != set(ids):
                raise StoreError(
                    f"shards {_listing(sorted(set(ids) - active))} are not active in {self.path}: "
                    "retire only shards listed by active_shards()"
                )
            s.add(row)
            for r in old:
                r.state, r.retired_at = "retired", now
            s.flush()
            return shard_info(row)

    def active_shards(self, kind: str | None = None) -> list[ShardInfo]:
        """The shards readers should use, oldest first."""
        stmt = sa.select(ShardRow).where(ShardRow.state == "active").order_by(ShardRow.id)
        if kind is not None:
            stmt = stmt.where(ShardRow.kind == kind)
        with self._session() as s:
            return [shard_info(row) for row in s.scalars(stmt)]

    def retired_shards(self, *, older_than: float) -> list[ShardInfo]:
        """Retired shards whose ``retired_at`` is before ``older_than`` (unix seconds)."""
        stmt = (
            sa.select(ShardRow)
            .where(ShardRow.state == "retired", ShardRow.retired_at < older_than)
            .order_by(ShardRow.id)
        )
        with self._session() as s:
            return [shard_info(row) for row in s.scalars(stmt)]

    def forget_shards(self, ids: Sequence[int]) -> None:
        """Drop retired shards from the list (after their files were deleted).

        Raises:
            StoreError: one of ``ids`` is still active; nothing changes.
        """
        ids = sorted({int(i) for i in ids})
        if not ids:
            return
        with self._session(write=True) as s:
            active = s.scalars(
                sa.select(ShardRow.id).where(ShardRow.id.in_(ids), ShardRow.state == "active")
            ).all()
            if active:
                raise StoreError(
                    f"shards {_listing(active)} are still active in {self.path}: retire them with "
                    "compact_shards before forgetting them"
                )
            s.execute(sa.delete(ShardRow).where(ShardRow.id.in_(ids)))

    # --- Arrow export --------------------------------------------------------

    def table_arrow(self, name: str) -> pa.Table:
        """A catalog table as an Arrow table, for DuckDB views.

        Rows come in the order they were written; JSON columns come as JSON
        text (SQL NULL when empty); ``slices`` leaves out the id blob and
        ``slice_members`` lists ``(slice_id, name, sample_id)`` one id a row.
        The schema is the same whether the table is empty or not.

        Args:
            name: one of ``ARROW_TABLES``.

        Returns:
            A ``pyarrow.Table``.

        Example:
            >>> cat.table_arrow("runs").column_names[:3]
            ['id', 'session_id', 'name']
        """
        stmt = arrow_select(name)
        with self._session() as s:
            rows = s.execute(stmt).all()
        return arrow_table(name, rows)
