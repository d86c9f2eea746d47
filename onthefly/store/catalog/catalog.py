"""The session catalog: runs, lineage, checkpoints, tests, slices, events,
epoch summaries and the list of Parquet shards, in one SQLite file.

A writable ``Catalog`` is the session's only writer: exactly one connection,
shared by the training thread and the shard-writer thread behind one
re-entrant lock. Every other process opens the file read-only.

The schema is the models' (:mod:`onthefly.store.catalog.models`) as Alembic's
migrations create it; this module reads and writes it through the standard
library's ``sqlite3`` with plain SQL, so a training process never imports
SQLAlchemy (its import and its objects cost a short run about half a second).
Rows never leave this module and its two helpers
(:mod:`onthefly.store.catalog.rows` turns them into records,
:mod:`onthefly.store.catalog.arrow` into Arrow tables); callers get the
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

from onthefly._version import __version__
from onthefly.errors import ConfigError, MissingFileError, StoreError
from onthefly.store.catalog import migrate
from onthefly.store.catalog.arrow import (
    arrow_select,
    arrow_table,
    source_table,
)
from onthefly.store.catalog.rows import (
    EDGE_ROLES,
    RUN_KINDS,
    RUN_STATUSES,
    SESSION_ORIGINS,
    checkpoint_info,
    choice,
    epoch_summary,
    event_info,
    event_values,
    ids_blob,
    json_text,
    opt_float,
    opt_int,
    run_info,
    session_info,
    shard_info,
    shard_values,
    slice_info,
    test_info,
)
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

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Catalog"]

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


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn = migrate.connect(path, readonly=readonly, shared=True)
    conn.row_factory = sqlite3.Row
    return conn


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    """INSERT one row (names are this module's own, never the caller's); its rowid."""
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    cursor = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(values.values()))
    return int(cursor.lastrowid)


def _one(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    return conn.execute(sql, tuple(params)).fetchone()


def _column(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return [row[0] for row in conn.execute(sql, tuple(params))]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


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

    def __init__(self, path: Path, conn: sqlite3.Connection, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = conn
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
                f"catalog {path} does not exist: check the session id (list sessions with `onthefly ls`)"
            )
        if not readonly:
            migrate.upgrade(path)
        with migrate.translated_errors(path):
            conn = _connect(path, readonly=readonly)
        try:
            with migrate.translated_errors(path):
                for pragma in _PRAGMAS_READONLY if readonly else _PRAGMAS_WRITABLE:
                    conn.execute(pragma).fetchall()
                if readonly:
                    migrate.raise_for_revision(path, migrate.revision_of(conn))
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, readonly=readonly)

    def close(self) -> None:
        """Close the connection; a second call does nothing."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        state = "closed" if self._conn is None else "open"
        return f"Catalog({str(self.path)!r}, {mode}, {state})"

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction per public call (reads too: one snapshot), committed or rolled back."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"catalog {self.path} is closed: open it again with Catalog.open")
            if write and self.readonly:
                raise StoreError(
                    f"catalog {self.path} was opened read-only: only the process that owns the "
                    "session writes it (open it with Catalog.open(path) there)"
                )
            try:
                with migrate.translated_errors(self.path):
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    yield conn
                    conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._rollback(conn)
                raise StoreError(f"catalog {self.path} refused the write ({exc}): check the ids passed") from exc
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # --- session and runs ----------------------------------------------------

    def init_session(
        self, session_id: str, project: str, *, origin: str = "new", meta: dict | None = None
    ) -> SessionRecord:
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
        with self._transaction(write=True) as c:
            other = _one(c, "SELECT id FROM sessions WHERE id != ? LIMIT 1", [session_id])
            if other is not None:
                raise StoreError(
                    f"catalog {self.path} belongs to session {other['id']}, not {session_id}: "
                    "open the catalog of that session's folder instead"
                )
            running_on = {"host": socket.gethostname(), "pid": os.getpid(), "package_version": __version__}
            if _one(c, "SELECT id FROM sessions WHERE id = ?", [session_id]) is None:
                _insert(
                    c,
                    "sessions",
                    {
                        "id": session_id,
                        "project": project,
                        "created_at": time.time(),
                        "origin": origin,
                        **running_on,
                        "meta": json_text(meta),
                    },
                )
            else:
                if meta is not None:
                    running_on["meta"] = json_text(meta)
                sets = ", ".join(f"{k} = ?" for k in running_on)
                c.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*running_on.values(), session_id))
            return session_info(_one(c, "SELECT * FROM sessions WHERE id = ?", [session_id]))

    def session(self) -> SessionRecord | None:
        """The session record, or None before :meth:`init_session`."""
        with self._transaction() as c:
            row = _one(c, "SELECT * FROM sessions LIMIT 1")
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
        with self._transaction(write=True) as c:
            session = _one(c, "SELECT id FROM sessions LIMIT 1")
            if session is None:
                raise StoreError(f"catalog {self.path} has no session yet: call init_session first")
            if _one(c, "SELECT id FROM runs WHERE id = ?", [run_id]) is not None:
                raise StoreError(f"run {run_id} already exists in {self.path}: pass another run_id or none")
            _insert(
                c,
                "runs",
                {
                    "id": run_id,
                    "session_id": session["id"],
                    "name": name,
                    "kind": kind,
                    "status": status,
                    "created_at": time.time(),
                    "config": json_text(config),
                    "hparams": json_text(hparams),
                },
            )
            for parent, role in pairs:
                _insert(c, "run_edges", {"child_id": run_id, "parent_id": parent, "role": role})
            return run_info(_one(c, "SELECT * FROM runs WHERE id = ?", [run_id]), pairs)

    def set_run_status(self, run_id: str, status: str, *, ended: bool = False) -> None:
        """Set a run's status; ``ended=True`` also stamps ``ended_at`` with now."""
        choice(status, RUN_STATUSES, "run status")
        with self._transaction(write=True) as c:
            self._require_run(c, run_id)
            if ended:
                c.execute("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", (status, time.time(), run_id))
            else:
                c.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def run(self, run_id: str) -> RunInfo:
        """One run by id; StoreError listing the known runs when it is not there."""
        with self._transaction() as c:
            row = self._require_run(c, run_id)
            return run_info(row, self._parents(c).get(run_id, []))

    def runs(self) -> list[RunInfo]:
        """Every run in creation order, parents filled in."""
        with self._transaction() as c:
            parents = self._parents(c)
            rows = c.execute("SELECT * FROM runs ORDER BY created_at, rowid").fetchall()
            return [run_info(row, parents.get(row["id"], [])) for row in rows]

    def _require_run(self, c: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = _one(c, "SELECT * FROM runs WHERE id = ?", [run_id])
        if row is None:
            known = _column(c, "SELECT id FROM runs ORDER BY created_at")
            raise StoreError(f"no run {run_id!r} in {self.path}; known runs: {_listing(known)}: pass one of these ids")
        return row

    @staticmethod
    def _parents(c: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
        edges: dict[str, list[tuple[str, str]]] = {}
        for child, parent, role in c.execute("SELECT child_id, parent_id, role FROM run_edges ORDER BY rowid"):
            edges.setdefault(child, []).append((parent, role))
        return edges

    # --- checkpoints and tests -----------------------------------------------

    def add_checkpoint(self, info: CheckpointInfo) -> None:
        """List a checkpoint file (already written and hashed) of an existing run."""
        with self._transaction(write=True) as c:
            self._require_run(c, info.run_id)
            if _one(c, "SELECT id FROM checkpoints WHERE id = ?", [info.id]) is not None:
                raise StoreError(f"checkpoint {info.id} already exists in {self.path}: use a new id")
            _insert(
                c,
                "checkpoints",
                {
                    "id": info.id,
                    "run_id": info.run_id,
                    "step": int(info.step),
                    "epoch": int(info.epoch),
                    "reason": info.reason,
                    "path": str(info.path),
                    "bytes": int(info.bytes),
                    "sha256": info.sha256,
                    "holds": json_text([str(h) for h in info.holds]),
                    "created_at": float(info.created_at),
                },
            )

    def checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        """One checkpoint by id; StoreError listing the known ones when it is not there."""
        with self._transaction() as c:
            row = _one(c, "SELECT * FROM checkpoints WHERE id = ?", [checkpoint_id])
            if row is None:
                known = _column(c, "SELECT id FROM checkpoints ORDER BY created_at")
                raise StoreError(
                    f"no checkpoint {checkpoint_id!r} in {self.path}; known: {_listing(known)}: pass one of these ids"
                )
            return checkpoint_info(row)

    def checkpoints(self, run_id: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints ordered by run, step and creation time."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        with self._transaction() as c:
            rows = c.execute(f"SELECT * FROM checkpoints {where} ORDER BY run_id, step, created_at", params)
            return [checkpoint_info(row) for row in rows]

    def latest_checkpoint(self, run_id: str) -> CheckpointInfo | None:
        """The run's checkpoint of the highest step (the newest among equals), or None."""
        sql = "SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step DESC, created_at DESC LIMIT 1"
        with self._transaction() as c:
            row = _one(c, sql, [run_id])
            return None if row is None else checkpoint_info(row)

    def add_test(
        self, *, run_id: str, step: int, epoch: int, split: str, loss: float | None, metrics: dict | None = None
    ) -> TestInfo:
        """Record an evaluation of a run on a split."""
        with self._transaction(write=True) as c:
            self._require_run(c, run_id)
            test_id = _insert(
                c,
                "tests",
                {
                    "run_id": run_id,
                    "step": int(step),
                    "epoch": int(epoch),
                    "split": split,
                    "loss": opt_float(loss),
                    "metrics": json_text(metrics),
                    "created_at": time.time(),
                },
            )
            return test_info(_one(c, "SELECT * FROM tests WHERE id = ?", [test_id]))

    def tests(self, run_id: str | None = None) -> list[TestInfo]:
        """Evaluations in the order they were recorded."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        with self._transaction() as c:
            return [test_info(row) for row in c.execute(f"SELECT * FROM tests {where} ORDER BY id", params)]

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
        with self._transaction(write=True) as c:
            if _one(c, "SELECT id FROM slices WHERE name = ?", [name]) is not None:
                if not replace:
                    raise StoreError(
                        f"slice {name!r} already exists in {self.path}: pass replace=True to "
                        "overwrite it or choose another name"
                    )
                c.execute("DELETE FROM slices WHERE name = ?", (name,))
            slice_id = _insert(
                c,
                "slices",
                {
                    "name": name,
                    "run_id": run_id,
                    "split": split,
                    "epoch": opt_int(epoch),
                    "method": json_text(method),
                    "count": count,
                    "sample_ids": blob,
                    "created_at": time.time(),
                },
            )
            return slice_info(_one(c, "SELECT * FROM slices WHERE id = ?", [slice_id]))

    def slice(self, name: str) -> SliceInfo:
        """One slice by name; StoreError listing the known ones when it is not there."""
        with self._transaction() as c:
            row = _one(c, "SELECT * FROM slices WHERE name = ?", [name])
            if row is None:
                known = _column(c, "SELECT name FROM slices ORDER BY id")
                raise StoreError(
                    f"no slice {name!r} in {self.path}; known slices: {_listing(known)}: pass one of these names"
                )
            return slice_info(row)

    def slices(self) -> list[SliceInfo]:
        """Every slice in creation order."""
        with self._transaction() as c:
            return [slice_info(row) for row in c.execute("SELECT * FROM slices ORDER BY id")]

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
        values = event_values(fields, now=time.time())
        with self._transaction(write=True) as c:
            event_id = _insert(c, "events", values)
            return event_info(_one(c, "SELECT * FROM events WHERE id = ?", [event_id]))

    def add_events(self, events: Sequence[dict]) -> None:
        """Append several events (dicts with :meth:`add_event`'s keys) in one transaction."""
        now = time.time()
        rows = [event_values(dict(event), now=now) for event in events]
        if not rows:
            return
        with self._transaction(write=True) as c:
            for values in rows:
                _insert(c, "events", values)

    def events(
        self,
        *,
        run_id: str | None = None,
        since_id: int = 0,
        levels: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[EventInfo]:
        """Events with ``id > since_id`` in the order they happened (poll with the last id seen)."""
        where, params = ["id > ?"], [int(since_id)]
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if levels is not None:
            levels = list(levels)
            where.append(f"level IN ({_marks(levels)})" if levels else "0")
            params += levels
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._transaction() as c:
            return [event_info(row) for row in c.execute(sql, params)]

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
            "hist_edges": json_text([float(x) for x in summary.hist_edges]),
            "hist_counts": json_text([int(x) for x in summary.hist_counts]),
            "metrics": json_text(summary.metrics),
            "created_at": float(summary.created_at) if summary.created_at is not None else time.time(),
        }
        key = {"run_id": summary.run_id, "split": summary.split, "epoch": int(summary.epoch), "step": int(summary.step)}
        match = " AND ".join(f"{k} = ?" for k in key)
        with self._transaction(write=True) as c:
            self._require_run(c, summary.run_id)
            row = _one(c, f"SELECT id FROM epochs WHERE {match}", list(key.values()))
            if row is None:
                epoch_id = _insert(c, "epochs", {**key, **values})
            else:
                epoch_id = row["id"]
                sets = ", ".join(f"{k} = ?" for k in values)
                c.execute(f"UPDATE epochs SET {sets} WHERE id = ?", (*values.values(), epoch_id))
            return epoch_summary(_one(c, "SELECT * FROM epochs WHERE id = ?", [epoch_id]))

    def epochs(self, *, run_id: str | None = None, split: str | None = None) -> list[EpochSummary]:
        """Epoch summaries ordered by run, split, epoch and step."""
        where, params = ["1"], []
        for column, value in (("run_id", run_id), ("split", split)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT * FROM epochs WHERE {' AND '.join(where)} ORDER BY run_id, split, epoch, step"
        with self._transaction() as c:
            return [epoch_summary(row) for row in c.execute(sql, params)]

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
            kind=kind,
            run_id=run_id,
            split=split,
            epoch=epoch,
            path=path,
            rows=rows,
            bytes=bytes,
            min_step=min_step,
            max_step=max_step,
            level=level,
            sealed=sealed,
        )
        values = shard_values(fields, now=time.time())
        with self._transaction(write=True) as c:
            shard_id = _insert(c, "shards", values)
            return shard_info(_one(c, "SELECT * FROM shards WHERE id = ?", [shard_id]))

    def compact_shards(self, *, retire_ids: Sequence[int], new: dict) -> ShardInfo:
        """In one transaction: list ``new`` (add_shard's keys) and retire ``retire_ids``.

        Readers see either the old parts or the compacted file, never both or
        neither. Retired files stay on disk until :meth:`forget_shards`.

        Raises:
            StoreError: one of ``retire_ids`` is not an active shard; nothing changes.
        """
        now = time.time()
        values = shard_values(dict(new), now=now)
        ids = sorted({int(i) for i in retire_ids})
        with self._transaction(write=True) as c:
            active = set(_column(c, f"SELECT id FROM shards WHERE state = 'active' AND id IN ({_marks(ids)})", ids))
            if active != set(ids):
                raise StoreError(
                    f"shards {_listing(sorted(set(ids) - active))} are not active in {self.path}: "
                    "retire only shards listed by active_shards()"
                )
            shard_id = _insert(c, "shards", values)
            c.execute(f"UPDATE shards SET state = 'retired', retired_at = ? WHERE id IN ({_marks(ids)})", (now, *ids))
            return shard_info(_one(c, "SELECT * FROM shards WHERE id = ?", [shard_id]))

    def active_shards(self, kind: str | None = None) -> list[ShardInfo]:
        """The shards readers should use, oldest first."""
        where, params = ("AND kind = ?", [kind]) if kind is not None else ("", [])
        with self._transaction() as c:
            rows = c.execute(f"SELECT * FROM shards WHERE state = 'active' {where} ORDER BY id", params)
            return [shard_info(row) for row in rows]

    def retired_shards(self, *, older_than: float) -> list[ShardInfo]:
        """Retired shards whose ``retired_at`` is before ``older_than`` (unix seconds)."""
        sql = "SELECT * FROM shards WHERE state = 'retired' AND retired_at < ? ORDER BY id"
        with self._transaction() as c:
            return [shard_info(row) for row in c.execute(sql, (float(older_than),))]

    def forget_shards(self, ids: Sequence[int]) -> None:
        """Drop retired shards from the list (after their files were deleted).

        Raises:
            StoreError: one of ``ids`` is still active; nothing changes.
        """
        ids = sorted({int(i) for i in ids})
        if not ids:
            return
        with self._transaction(write=True) as c:
            active = _column(c, f"SELECT id FROM shards WHERE state = 'active' AND id IN ({_marks(ids)})", ids)
            if active:
                raise StoreError(
                    f"shards {_listing(active)} are still active in {self.path}: retire them with "
                    "compact_shards before forgetting them"
                )
            c.execute(f"DELETE FROM shards WHERE id IN ({_marks(ids)})", ids)

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
        table = source_table(name)  # checked: one of ARROW_TABLES
        with self._transaction() as c:
            columns = [(row["name"], row["type"]) for row in c.execute(f"PRAGMA table_info({table})")]
            rows = c.execute(arrow_select(name, columns)).fetchall()
        return arrow_table(name, columns, rows)
