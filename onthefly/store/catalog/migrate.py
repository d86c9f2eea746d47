"""Schema versions of the session catalog, managed with Alembic.

The Alembic configuration is built here in code; the migration scripts ship
inside the package as ``onthefly._migrations``, so an installed OnTheFly can
upgrade a catalog without any file of the source tree. An upgrade runs under a
file lock next to the catalog (``catalog.sqlite.migrate.lock``): two processes
never migrate the same file at once, and the second one waits and then finds
the schema at head. The whole upgrade is one SQLite transaction, so a crash
leaves the catalog at the revision it had before.

Alembic is imported only when a catalog needs it. A catalog already at head is
recognised from its ``alembic_version`` row, and a new, empty file is created
from ``schema_head.sql``: the schema Alembic's migrations produce, saved next to
them and checked against a fresh migration by the tests (rewrite it with
``python -m onthefly.store.catalog.migrate``). Both of those go through the standard
library's ``sqlite3``: SQLAlchemy, like Alembic, is imported only for a real
migration, so a training process, which always starts a new catalog, imports
neither.
"""

from __future__ import annotations

import sqlite3
import sys
import urllib.parse
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from onthefly.errors import CorruptFileError, MissingFileError, SchemaError, StoreError
from onthefly.store.layout import catalog_path, migrate_lock_path

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "HEAD",
    "HEAD_SCHEMA",
    "alembic_config",
    "dump_schema",
    "write_head_schema",
    "upgrade",
    "downgrade",
    "current_revision",
    "check_schema",
    "schema_verdict",
    "raise_for_revision",
    "revision_of",
    "corruption_error",
    "translated_errors",
    "readonly_uri",
    "connect",
]

HEAD = "0001"
"""The newest schema revision this version of OnTheFly knows."""

HEAD_SCHEMA = "schema_head.sql"
"""The file beside the migrations holding the SQL of a new catalog at ``HEAD``."""

MIGRATIONS_PACKAGE = "onthefly._migrations"
"""The Alembic environment and scripts: ``migrations/`` of the repository, shipped under this name."""

BUSY_TIMEOUT_MS = 5000
LOCK_TIMEOUT_S = 120.0

# Markers of a damaged or foreign file in SQLite's error messages.
_CORRUPTION_MARKERS = (
    "file is not a database",
    "database disk image is malformed",
    "malformed database schema",
    "file is encrypted",
)


def _script_location() -> str:
    # The migration scripts are package data that Alembic loads from this
    # folder; located as a resource, not imported (the store imports nothing
    # of the package above it).
    return str(Path(str(resources.files(MIGRATIONS_PACKAGE))).resolve())


def alembic_config(*, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the catalog, built without any ini file.

    Args:
        connection: an open SQLAlchemy connection the migrations run on;
            ``env.py`` reads it from ``config.attributes["connection"]``.

    Returns:
        The configuration, its ``script_location`` inside the installed package.

    Example:
        >>> Path(alembic_config().get_main_option("script_location"), "env.py").is_file()
        True
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _script_location())
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


def _verdict(revision: str | None) -> str:
    # The list of known revisions is read (through Alembic) only off the fast path.
    if revision is None or revision == HEAD:
        return schema_verdict(revision, known=(HEAD,))
    return schema_verdict(revision, known=_known_revisions())


def schema_verdict(revision: str | None, *, known: Collection[str], head: str = HEAD) -> str:
    """Compare a catalog's revision with what this package knows.

    Args:
        revision: the catalog's revision (None when it has none).
        known: every revision this package ships.
        head: the newest of them.

    Returns:
        ``"current"``, ``"empty"`` (no schema yet), ``"behind"`` (an older known
        revision) or ``"newer"`` (a revision this package does not know).

    Example:
        >>> schema_verdict("0001", known={"0001"}, head="0001")
        'current'
        >>> schema_verdict("0007", known={"0001"}, head="0001")
        'newer'
    """
    if revision is None:
        return "empty"
    if revision == head:
        return "current"
    if revision in known:
        return "behind"
    return "newer"


def _schema_error(db_path: Path, revision: str | None, verdict: str) -> SchemaError:
    if verdict == "newer":
        return SchemaError(
            f"catalog {db_path} was written by a newer OnTheFly (schema {revision}, this version "
            f"knows up to {HEAD}): upgrade with `pip install -U onthefly-ai`"
        )
    found = revision if revision is not None else "no schema version"
    return SchemaError(
        f"catalog {db_path}: found {found}, expected {HEAD}: back up {db_path} and open it once "
        "with a writable store to upgrade"
    )


def raise_for_revision(db_path: Path, revision: str | None) -> None:
    """Raise the SchemaError that fits ``revision`` unless it is ``HEAD``.

    Example:
        >>> raise_for_revision(Path("catalog.sqlite"), "0001")
    """
    verdict = _verdict(revision)
    if verdict != "current":
        raise _schema_error(Path(db_path), revision, verdict)


def corruption_error(db_path: Path, exc: BaseException) -> CorruptFileError | None:
    """The CorruptFileError for an SQLite error that means a damaged file, else None.

    Args:
        db_path: the catalog the error came from.
        exc: an ``sqlite3`` error or a SQLAlchemy error wrapping one.

    Returns:
        An error naming the file and what to do, or None for other errors
        (locks, constraints, missing folders).

    Example:
        >>> corruption_error(Path("c.sqlite"), sqlite3.DatabaseError("file is not a database"))
        CorruptFileError('catalog c.sqlite is not a readable SQLite database ...')
    """
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, sqlite3.DatabaseError):
        return None
    text = str(orig).lower()
    if not any(marker in text for marker in _CORRUPTION_MARKERS):
        return None
    return CorruptFileError(
        f"catalog {db_path} is not a readable SQLite database ({orig}): restore it from a backup, "
        "or move its session folder aside and start a new session (the folder's Parquet shards "
        "and checkpoints stay readable on their own)"
    )


@contextmanager
def translated_errors(db_path: Path) -> Iterator[None]:
    """Turn SQLite errors about the file itself into OnTheFly errors; others pass.

    A damaged file becomes CorruptFileError; a lock held past the busy timeout
    or a file that cannot be opened becomes StoreError.
    """
    try:
        yield
    except Exception as exc:
        if not _database_error(exc):
            raise
        err: Exception | None = corruption_error(db_path, exc)
        text = str(getattr(exc, "orig", None) or exc)
        if err is None and "database is locked" in text:
            err = StoreError(
                f"catalog {db_path} stayed locked by another connection ({text}): wait for the "
                "process writing it to finish, then retry"
            )
        if err is None and "unable to open database file" in text:
            err = StoreError(
                f"catalog {db_path} cannot be opened ({text}): check that its folder exists and "
                "is readable (and writable for the process that owns the session)"
            )
        if err is None:
            raise
        raise err from exc


def _database_error(exc: BaseException) -> bool:
    """An error of SQLite itself, raised by ``sqlite3`` or wrapped by SQLAlchemy (when it is loaded)."""
    if isinstance(exc, sqlite3.DatabaseError):
        return True
    wrapped = sys.modules.get("sqlalchemy.exc")
    return wrapped is not None and isinstance(exc, wrapped.DBAPIError)


def readonly_uri(db_path: Path) -> str:
    """The ``file:`` URI that opens ``db_path`` read-only with ``sqlite3.connect(uri=True)``.

    Example:
        >>> readonly_uri(Path("/tmp/a b/catalog.sqlite"))
        'file:/tmp/a%20b/catalog.sqlite?mode=ro'
    """
    return "file:" + urllib.parse.quote(str(Path(db_path).absolute())) + "?mode=ro"


def connect(db_path: Path, *, readonly: bool = False, shared: bool = False) -> sqlite3.Connection:
    """A ``sqlite3`` connection to the catalog in autocommit mode (the caller opens transactions).

    Args:
        db_path: the catalog file.
        readonly: open it read-only (``mode=ro``): the file must exist.
        shared: usable from several threads (the caller serialises them).

    Example:
        >>> conn = connect(Path("session/catalog.sqlite"), readonly=True)
    """
    if readonly:
        conn = sqlite3.connect(readonly_uri(db_path), uri=True, check_same_thread=not shared, isolation_level=None)
    else:
        conn = sqlite3.connect(str(db_path), check_same_thread=not shared, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}").fetchall()
    except BaseException:
        conn.close()
        raise
    return conn


def _migration_engine(db_path: Path, *, readonly: bool = False) -> Engine:
    """An engine whose transactions also cover DDL, so a failed upgrade rolls back whole (for Alembic)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    if readonly:
        uri = readonly_uri(db_path)

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True)

    else:
        target = str(db_path)

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(target)

    engine = sa.create_engine("sqlite://", creator=creator, poolclass=NullPool)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # pysqlite would commit before each DDL statement; SQLAlchemy's BEGIN
        # below makes the schema change and the version stamp one transaction.
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    if not readonly:

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def _migration_lock(db_path: Path, timeout: float) -> Iterator[None]:
    lock_path = migrate_lock_path(db_path)
    lock = FileLock(lock_path, thread_local=False)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise StoreError(
            f"another process has been migrating catalog {db_path} for over {timeout:.0f} s "
            f"(it holds {lock_path}): wait for it to finish or stop it, then retry"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _rows(connection: Any, sql: str) -> list[Any]:
    """The rows of ``sql`` on a ``sqlite3`` connection or a SQLAlchemy one (Alembic's)."""
    run = getattr(connection, "exec_driver_sql", None) or connection.execute
    return list(run(sql).fetchall())


def revision_of(connection: Any) -> str | None:
    """The revision recorded on an open connection (None: no schema yet).

    Reads Alembic's ``alembic_version`` table directly, as Alembic does.

    Args:
        connection: a ``sqlite3`` connection, or a SQLAlchemy one.

    Raises:
        SchemaError: the table holds more than one revision (branches this
            package never creates).
    """
    found = _rows(connection, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    if not found:
        return None
    rows = _rows(connection, "SELECT version_num FROM alembic_version")
    if len(rows) > 1:
        raise SchemaError(
            f"the catalog records several schema revisions {sorted(r[0] for r in rows)}: it was not written "
            "by OnTheFly; move it aside and start a new session"
        )
    return rows[0][0] if rows else None


def _is_blank(connection: Any) -> bool:
    return _rows(connection, "SELECT count(*) FROM sqlite_master")[0][0] == 0


def _head_schema_path() -> Path:
    return Path(_script_location(), HEAD_SCHEMA)


def _statements(script: str) -> list[str]:
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise SchemaError(
            f"{_head_schema_path()} ends inside a statement: rewrite it with `python -m onthefly.store.catalog.migrate`"
        )
    return statements


def _upgrade_without_alembic(db_path: Path) -> bool:
    """In one transaction: True when the catalog is at ``HEAD`` already or was blank and is now
    created from the snapshot; False (nothing written) when Alembic has to look at it."""
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            revision = revision_of(conn)
            snapshot = _head_schema_path()
            if revision == HEAD:
                done = True
            elif revision is None and _is_blank(conn) and snapshot.is_file():
                for statement in _statements(snapshot.read_text(encoding="utf-8")):
                    conn.execute(statement)
                done = True
            else:  # older, newer, foreign, or a package built without the snapshot
                done = False
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return done


def dump_schema(connection: Any) -> str:
    """The SQL that recreates the schema (tables, indexes, triggers) and revision of a catalog.

    Rows other than the revision are not included.

    Example:
        >>> print(dump_schema(conn).splitlines()[0])
        -- The schema of a new OnTheFly catalog at revision 0001, as Alembic's migrations create it.
    """
    revision = revision_of(connection)
    rows = _rows(
        connection, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    )
    lines = [
        f"-- The schema of a new OnTheFly catalog at revision {revision}, as Alembic's migrations create it.",
        "-- Generated by `python -m onthefly.store.catalog.migrate`; the tests check it against a fresh migration.",
        "",
    ]
    for (sql,) in rows:
        lines += [sql.strip() + ";", ""]
    if revision is not None:
        lines.append(f"INSERT INTO alembic_version (version_num) VALUES ('{revision}');")
    return "\n".join(lines) + "\n"


def write_head_schema(target: Path | None = None) -> Path:
    """Migrate an empty catalog to ``HEAD`` with Alembic and save its schema as :data:`HEAD_SCHEMA`.

    Args:
        target: where to write (default: beside the migrations).

    Returns:
        The file written.
    """
    import tempfile

    target = Path(target) if target is not None else _head_schema_path()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = catalog_path(tmp)
        engine = _migration_engine(db_path)
        try:
            with engine.begin() as conn:
                _alembic_upgrade(conn)
            with engine.connect() as conn:
                text = dump_schema(conn)
        finally:
            engine.dispose()
    target.write_text(text, encoding="utf-8")
    return target


def _alembic_upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection=connection), HEAD)


def upgrade(db_path: Path, *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Create ``db_path`` if missing and upgrade its schema to ``HEAD``.

    Runs under ``<db_path>.migrate.lock``; a second process calling this waits
    for the first and then finds nothing to do.

    Args:
        db_path: the catalog file (its folder is created if needed).
        timeout: seconds to wait for another process's migration.

    Raises:
        SchemaError: the catalog was written by a newer OnTheFly.
        CorruptFileError: the file is not an SQLite database.
        StoreError: another process held the migration lock past ``timeout``.

    Example:
        >>> upgrade(Path("session/catalog.sqlite"))
        >>> current_revision(Path("session/catalog.sqlite"))
        '0001'
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with _migration_lock(db_path, timeout):
        with translated_errors(db_path):
            if _upgrade_without_alembic(db_path):
                return
        engine = _migration_engine(db_path)
        try:
            with translated_errors(db_path), engine.begin() as conn:
                revision = revision_of(conn)
                verdict = _verdict(revision)
                if verdict == "current":
                    return
                if verdict == "newer":
                    raise _schema_error(db_path, revision, verdict)
                _alembic_upgrade(conn)  # older, or blank in a package built without the snapshot
        finally:
            engine.dispose()


def downgrade(db_path: Path, revision: str = "base", *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Downgrade the catalog's schema to ``revision`` (``"base"``: no tables at all).

    Args:
        db_path: the catalog file; must exist.
        revision: the target revision.
        timeout: seconds to wait for another process's migration.

    Raises:
        SchemaError: the catalog is newer than this package, or ``revision`` is unknown.

    Example:
        >>> downgrade(Path("session/catalog.sqlite"))
        >>> current_revision(Path("session/catalog.sqlite")) is None
        True
    """
    db_path = _existing(Path(db_path))
    with _migration_lock(db_path, timeout):
        engine = _migration_engine(db_path)
        try:
            with translated_errors(db_path), engine.begin() as conn:
                found = revision_of(conn)
                if _verdict(found) == "newer":
                    raise _schema_error(db_path, found, "newer")
                from alembic import command
                from alembic.util import CommandError

                try:
                    command.downgrade(alembic_config(connection=conn), revision)
                except CommandError as exc:
                    raise SchemaError(
                        f"cannot downgrade catalog {db_path} to {revision!r} ({exc}): "
                        f"choose 'base' or a revision up to {HEAD}"
                    ) from exc
        finally:
            engine.dispose()


def current_revision(db_path: Path) -> str | None:
    """The schema revision recorded in the catalog, read without writing anything.

    Args:
        db_path: the catalog file; must exist.

    Returns:
        The revision id, or None when the file has no schema yet.

    Raises:
        MissingFileError: there is no file at ``db_path``.
        CorruptFileError: the file is not an SQLite database.

    Example:
        >>> current_revision(Path("session/catalog.sqlite"))
        '0001'
    """
    db_path = _existing(Path(db_path))
    with translated_errors(db_path):
        conn = connect(db_path, readonly=True)
        try:
            return revision_of(conn)
        finally:
            conn.close()


def check_schema(db_path: Path) -> None:
    """Raise SchemaError unless the catalog is exactly at ``HEAD``.

    Args:
        db_path: the catalog file; must exist.

    Raises:
        SchemaError: the catalog is empty, behind, or from a newer OnTheFly;
            the message says what to do.
        MissingFileError: there is no file at ``db_path``.
        CorruptFileError: the file is not an SQLite database.

    Example:
        >>> check_schema(Path("session/catalog.sqlite"))
    """
    db_path = Path(db_path)
    raise_for_revision(db_path, current_revision(db_path))


def _existing(db_path: Path) -> Path:
    if not db_path.is_file():
        raise MissingFileError(
            f"catalog {db_path} does not exist: check the session folder (`onthefly ls` lists the sessions of a store)"
        )
    return db_path


if __name__ == "__main__":
    print(f"wrote {write_head_schema()}")
