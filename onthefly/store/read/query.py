"""DuckDB views over one session, ``onthefly.sql()``, and the read-only query guard.

A reader connection is an in-memory DuckDB database with one view per name
in :data:`VIEWS`:

- ``samples`` and ``steps`` read the session's *active* Parquet shards, the
  file list the catalog gives (``read_parquet``, ``union_by_name``). They
  carry the shard schemas' columns and types even before any shard exists.
- the catalog tables (``runs``, ``epochs``, ...) are Arrow copies read
  through a read-only :class:`~onthefly.store.catalog.catalog.Catalog`, closed right
  after. DuckDB's sqlite extension is never used.

**Locked configuration.** Before any user SQL runs, external access is
switched off except for the session's ``samples/`` and ``steps/`` folders,
extensions are neither installed nor auto-loaded, and the configuration is
locked. SQL on the connection therefore cannot read other files, attach
databases, install or load extensions, or write anywhere outside those two
folders. DuckDB allows writing wherever it allows reading, so on a raw
connection a deliberate ``COPY ... TO`` into the shard folders would still
succeed; :func:`run_query` (the dashboard, the CLI) accepts exactly one
``SELECT`` statement, which rules that out.

**Refresh.** The allowed folders are fixed for the session, so new shards
are readable without unlocking anything: :func:`refresh` re-reads the
catalog and rebuilds the views in place on the same connection. Its cost is
one read-only catalog open plus the footers of the listed shards.

A DuckDB connection is not meant to be used by two threads at once: a
caller sharing one (a dashboard link thread and a notebook) serialises its
calls to :func:`refresh` and :func:`run_query`. The helper relations
``_otf_*`` the views are built on belong to the connection that made them.
"""

from __future__ import annotations

import base64
import math
import os
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from onthefly.errors import (
    ConfigError,
    CorruptFileError,
    MissingFileError,
    QueryError,
    StoreError,
)
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.layout import (
    CATALOG,
    RANKS_DIR,
    SAMPLES_DIR,
    STEPS_DIR,
    rank_catalogs,
)
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.shards.schema import SAMPLES_SCHEMA, STEPS_SCHEMA

__all__ = [
    "VIEWS",
    "CATALOG_VIEWS",
    "QueryTable",
    "connect",
    "refresh",
    "sql",
    "query_table",
    "run_query",
    "session_dir_of",
    "readonly_refusal",
    "json_rows",
    "json_value",
    "arrow_ipc_base64",
]

SHARD_VIEWS = ("samples", "steps")
"""Views over Parquet shards; the shard kind equals the view name."""

CATALOG_VIEWS = (
    "runs",
    "run_edges",
    "checkpoints",
    "tests",
    "slices",
    "slice_members",
    "epochs",
    "events",
    "sessions",
)
"""Views over Arrow copies of catalog tables."""

VIEWS = (*SHARD_VIEWS, *CATALOG_VIEWS)
"""Every view a reader connection holds."""

RESULT_FORMATS = ("rows", "arrow")

_SHARD_SCHEMAS = {"samples": SAMPLES_SCHEMA, "steps": STEPS_SCHEMA}
_SHARD_FOLDERS = {"samples": SAMPLES_DIR, "steps": STEPS_DIR}

# Set at connect time, before anything else runs on the connection.
_CONNECT_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_extension_repositories": "forbidden",
    # No spill folder: DuckDB would add it to the readable (and writable) folders.
    "temp_directory": "",
}

# The lock-down, in this order: the allowed folders can only be set while
# external access is on, and nothing can be changed once locked.
SET_ALLOWED_DIRECTORIES = "SET allowed_directories = $dirs"
DISABLE_PROGRESS_BAR = "SET enable_progress_bar = false"
DISABLE_EXTERNAL_ACCESS = "SET enable_external_access = false"
LOCK_CONFIGURATION = "SET lock_configuration = true"
READ_ALLOWED_DIRECTORIES = "SELECT current_setting('allowed_directories')"

# The shard views: an empty Arrow table of the shard schema first (it fixes
# column order and types), then the files, matched by column name.
SHARD_VIEW_OVER_FILES = {
    "samples": (
        "CREATE OR REPLACE VIEW samples AS "
        "SELECT * FROM _otf_samples_empty UNION ALL BY NAME SELECT * FROM _otf_samples_files"
    ),
    "steps": (
        "CREATE OR REPLACE VIEW steps AS "
        "SELECT * FROM _otf_steps_empty UNION ALL BY NAME SELECT * FROM _otf_steps_files"
    ),
}
SHARD_VIEW_EMPTY = {
    "samples": "CREATE OR REPLACE VIEW samples AS SELECT * FROM _otf_samples_empty",
    "steps": "CREATE OR REPLACE VIEW steps AS SELECT * FROM _otf_steps_empty",
}


# -- connections ----------------------------------------------------------------


def connect(session_dir: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """A locked, in-memory DuckDB connection with the views of one session.

    Args:
        session_dir: the session folder (it holds ``catalog.sqlite``).

    Returns:
        A connection whose views (:data:`VIEWS`) show the session as the
        catalog lists it now; call :func:`refresh` to see later shards.

    Raises:
        StoreError: ``session_dir`` holds no catalog.
        MissingFileError: a shard the catalog lists is not on disk.
        CorruptFileError: DuckDB cannot read a listed shard (named in the message).

    Example:
        >>> con = connect(".onthefly/sessions/20250101-120000-ab12")  # doctest: +SKIP
        >>> con.sql("SELECT count(*) FROM samples").fetchone()  # doctest: +SKIP
        (60000,)
    """
    folder = _checked_session_dir(session_dir)
    con = duckdb.connect(":memory:", config=dict(_CONNECT_CONFIG))
    try:
        con.execute(DISABLE_PROGRESS_BAR)
        con.execute(SET_ALLOWED_DIRECTORIES, {"dirs": _allowed_directories(folder)})
        con.execute(DISABLE_EXTERNAL_ACCESS)
        con.execute(LOCK_CONFIGURATION)
        for kind in SHARD_VIEWS:
            con.register(f"_otf_{kind}_empty", _SHARD_SCHEMAS[kind].empty_table())
        refresh(con, folder)
    except BaseException:
        con.close()
        raise
    return con


def refresh(con: duckdb.DuckDBPyConnection, session_dir: str | os.PathLike[str]) -> None:
    """Rebuild the views of ``con`` over the session's current shard list.

    A long-lived connection (the dashboard's) calls this before each query;
    it costs one read-only catalog open and the footers of the listed shards.

    Args:
        con: a connection made by :func:`connect` for the same session.
        session_dir: that session's folder.

    Raises:
        ConfigError: ``con`` was opened on another session.
        MissingFileError: a shard the catalog lists is not on disk.
        CorruptFileError: DuckDB cannot read a listed shard (named in the message).

    Example:
        >>> refresh(con, session_dir)  # doctest: +SKIP
    """
    folder = _checked_session_dir(session_dir)
    expected = _allowed_directories(folder)
    allowed = list(con.execute(READ_ALLOWED_DIRECTORIES).fetchall()[0][0] or [])
    if not set(expected) <= set(allowed):
        raise ConfigError(
            f"this connection reads {allowed!r}, not the session at {folder}: "
            f"open a connection for that session with connect({str(folder)!r})"
        )
    shards, tables = _read_catalog(folder)
    for kind in SHARD_VIEWS:
        files = _shard_files(folder, kind, [s.path for s in shards if s.kind == kind])
        try:
            if files:
                rel = con.read_parquet(files, union_by_name=True)
                rel.create_view(f"_otf_{kind}_files", replace=True)
                con.execute(SHARD_VIEW_OVER_FILES[kind])
            else:
                con.execute(SHARD_VIEW_EMPTY[kind])
        except duckdb.Error as exc:
            raise CorruptFileError(
                f"DuckDB cannot read the {kind} shards of {folder}: {_first_line(exc)}: "
                "the shard named there is damaged; restore it (e.g. from an exported bundle) or start a new session"
            ) from exc
    for name, table in tables.items():
        con.register(name, table)


def sql(
    session: str | os.PathLike[str] | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open a session's views in DuckDB: ``onthefly.sql()``.

    Args:
        session: a session id, a session folder, a ``.zip`` bundle, or None
            for the newest session in the store root. A bundle is imported
            into the store root first (pinned; a second call finds it there)
            and its imported copy is opened.
        home: the store root; None means ``$ONTHEFLY_HOME`` or ``./.onthefly``.

    Returns:
        A locked, in-memory DuckDB connection (see :func:`connect`).

    Raises:
        StoreError: no such session, or the root holds none.
        ConfigError: ``session`` names a ``.zip`` file that does not exist.
        BundleError: the bundle is malformed, hostile or of a newer format.

    Example:
        >>> import onthefly
        >>> con = onthefly.sql()  # doctest: +SKIP
        >>> con.sql("SELECT epoch, p50 FROM epochs ORDER BY epoch").fetchall()  # doctest: +SKIP
        >>> con = onthefly.sql("mnist.zip")  # doctest: +SKIP
    """
    if session is not None and Path(session).suffix.lower() == ".zip":
        from onthefly.store.bundle.import_ import import_bundle

        return connect(import_bundle(session, store=StoreRoot(home)).dir)
    return connect(session_dir_of(session, home=home))


def session_dir_of(
    session: str | os.PathLike[str] | None,
    *,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """The folder of a session named by id, by folder, or None for the newest.

    Args:
        session: a session id, a session folder, or None.
        home: the store root; None means the default root.

    Returns:
        The absolute session folder.

    Raises:
        ConfigError: ``session`` is a ``.zip`` bundle, or not a usable id.
        StoreError: no such session (the message lists the existing ones),
            or the root holds none.

    Example:
        >>> session_dir_of(None, home=".onthefly")  # doctest: +SKIP
        PosixPath('/work/.onthefly/sessions/20250101-120000-ab12')
    """
    if session is None:
        store = StoreRoot(home)
        newest = store.newest()
        if newest is None:
            raise StoreError(
                f"no session in the store root {store.root}: run a training script first, "
                "or pass session= (an id or a folder) or home= (another root)"
            )
        return Path(newest.dir).resolve()
    path = Path(session).expanduser()
    if path.suffix.lower() == ".zip":
        raise ConfigError(
            f"{str(session)!r} is a session bundle: bundles are opened after `onthefly import`; "
            "import it, then pass the imported session id"
        )
    if path.is_dir():
        return path.resolve()
    text = os.fspath(session)
    if os.sep in text or (os.altsep and os.altsep in text):
        raise StoreError(f"no session folder at {str(path)!r}: check the path, or pass a session id")
    return Path(StoreRoot(home).session_dir(text)).resolve()


# -- queries --------------------------------------------------------------------


@dataclass(frozen=True)
class QueryTable:
    """The result of a guarded query, as Arrow."""

    table: pa.Table
    types: tuple[str, ...]  # DuckDB type names, one per column
    truncated: bool  # more rows existed than the limit


def query_table(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    *,
    limit: int | None = 10_000,
    timeout: float | None = 10.0,
) -> QueryTable:
    """Run one read-only statement and return at most ``limit`` rows as Arrow.

    Args:
        con: a connection from :func:`connect`.
        sql: exactly one ``SELECT`` statement (``WITH``, ``FROM``-first,
            ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE`` are ``SELECT`` too).
        params: values for ``?``/``$1`` (a list) or ``$name`` (a dict).
        limit: the most rows returned; None for no limit.
        timeout: seconds before the query is interrupted; None for none.

    Returns:
        A :class:`QueryTable`; ``truncated`` tells whether rows were left out.

    Raises:
        ConfigError: ``limit`` or ``timeout`` is not positive.
        QueryError: the SQL is not a single ``SELECT``, fails, or runs out
            of time.

    Example:
        >>> query_table(con, "SELECT * FROM runs", limit=5).table.num_rows  # doctest: +SKIP
        1
    """
    _check_limits(limit, timeout)
    _check_single_select(con, sql)
    deadline = _Deadline(con, timeout)
    try:
        with deadline:
            rel = con.sql(sql, params=params) if params is not None else con.sql(sql)
            types = tuple(str(t) for t in rel.types)
            if limit is not None:
                rel = rel.limit(limit + 1)
            table = rel.to_arrow_table()
    except duckdb.InterruptException as exc:
        if deadline.fired:
            raise QueryError(
                f"the query ran longer than {timeout} s and was stopped: "
                "narrow it with WHERE (run_id, split, epoch) or raise the timeout"
            ) from exc
        raise QueryError("the query was interrupted: run it again") from exc
    except duckdb.Error as exc:
        raise QueryError(f"the query failed: {_first_line(exc)} (views: {', '.join(VIEWS)})") from exc
    truncated = limit is not None and table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    return QueryTable(table=table, types=types, truncated=truncated)


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    *,
    limit: int = 10_000,
    timeout: float = 10.0,
    format: str = "rows",
) -> dict[str, Any]:
    """Run one read-only statement and return a JSON-able result.

    Args:
        con: a connection from :func:`connect`.
        sql: exactly one ``SELECT`` statement.
        params: values for ``?``/``$1`` (a list) or ``$name`` (a dict).
        limit: the most rows returned (one more is fetched to tell
            ``truncated``).
        timeout: seconds before the query is interrupted.
        format: ``"rows"`` or ``"arrow"``.

    Returns:
        For ``"rows"``: ``{"columns", "types", "rows", "truncated"}``, rows
        as lists of JSON values (NaN and infinities become None, times ISO
        strings, bytes base64). For ``"arrow"``: ``{"arrow", "truncated"}``,
        an Arrow IPC stream in base64.

    Raises:
        ConfigError: a bad ``limit``, ``timeout`` or ``format``.
        QueryError: the SQL is not a single ``SELECT``, fails, or runs out
            of time.

    Example:
        >>> run_query(con, "SELECT epoch, p50 FROM epochs WHERE split = ?", ["train"])  # doctest: +SKIP
        {'columns': ['epoch', 'p50'], 'types': ['INTEGER', 'DOUBLE'], 'rows': [[0, 1.9]], 'truncated': False}
    """
    if format not in RESULT_FORMATS:
        raise ConfigError(f"format={format!r} is not one of {RESULT_FORMATS}: pass 'rows' or 'arrow'")
    if limit is None:
        raise ConfigError("limit=None is not allowed here: pass a positive row limit")
    result = query_table(con, sql, params, limit=limit, timeout=timeout)
    if format == "arrow":
        return {"arrow": arrow_ipc_base64(result.table), "truncated": result.truncated}
    return {
        "columns": list(result.table.column_names),
        "types": list(result.types),
        "rows": json_rows(result.table),
        "truncated": result.truncated,
    }


# -- results --------------------------------------------------------------------


def json_rows(table: pa.Table) -> list[list[Any]]:
    """The rows of ``table`` as lists of JSON-safe values.

    Args:
        table: any Arrow table.

    Returns:
        One list per row; NaN and infinities are None, dates and times ISO
        strings, durations seconds, bytes base64, decimals floats.

    Example:
        >>> json_rows(pa.table({"x": [1.0, float("nan")]}))
        [[1.0], [None]]
    """
    columns = [[json_value(v) for v in col.to_pylist()] for col in table.columns]
    return [list(row) for row in zip(*columns)] if columns else []


def json_value(value: Any) -> Any:
    """One value made JSON-safe (see :func:`json_rows`)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return json_value(value.item())
    return str(value)


def arrow_ipc_base64(table: pa.Table) -> str:
    """``table`` as an Arrow IPC stream, base64-encoded."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


# -- helpers --------------------------------------------------------------------


def readonly_refusal(statement_types: list[str]) -> str | None:
    """Why a parsed SQL text is refused by the guard, or None when it is accepted.

    Args:
        statement_types: the DuckDB statement type names of the text's
            statements, in order (``"SELECT"``, ``"COPY"``, ...).

    Returns:
        None when there is exactly one statement and it is a ``SELECT``;
        otherwise a sentence saying what is wrong and what to do.

    Example:
        >>> readonly_refusal(["SELECT"]) is None
        True
        >>> readonly_refusal(["COPY"])
        'only SELECT statements run here, got COPY: write a SELECT (WITH, FROM, DESCRIBE and SHOW are fine)'
    """
    if not statement_types:
        return "the SQL text is empty: write one SELECT statement"
    if len(statement_types) > 1:
        return f"the SQL text holds {len(statement_types)} statements: send one SELECT statement at a time"
    if statement_types[0] != "SELECT":
        return (
            f"only SELECT statements run here, got {statement_types[0]}: "
            "write a SELECT (WITH, FROM, DESCRIBE and SHOW are fine)"
        )
    return None


def _check_single_select(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    if not isinstance(sql, str):
        raise QueryError(f"the SQL must be a string, got {type(sql).__name__}: pass the query text")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {_first_line(exc)}") from exc
    reason = readonly_refusal([s.type.name for s in statements])
    if reason is not None:
        raise QueryError(reason)


def _check_limits(limit: int | None, timeout: float | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit={limit!r} is not a positive integer: pass limit >= 1")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ConfigError(f"timeout={timeout!r} is not a positive number of seconds: pass timeout > 0")


class _Deadline:
    """Interrupts the connection's running query when ``seconds`` pass."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float | None) -> None:
        self._con = con
        self._seconds = seconds
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None
        self.fired = False

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            self._con.interrupt()

    def __enter__(self) -> _Deadline:
        if self._seconds is not None:
            self._timer = threading.Timer(self._seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()


def _checked_session_dir(session_dir: str | os.PathLike[str]) -> Path:
    folder = Path(session_dir).expanduser().resolve()
    if not (folder / CATALOG).is_file():
        raise StoreError(
            f"no {CATALOG} in {folder}: pass a session folder "
            "(.onthefly/sessions/<id>), or a session id to onthefly.sql()"
        )
    return folder


def _allowed_directories(folder: Path) -> list[str]:
    return [str(folder / _SHARD_FOLDERS[kind]) + os.sep for kind in SHARD_VIEWS] + [str(folder / RANKS_DIR) + os.sep]


def _shard_files(folder: Path, kind: str, relative_paths: list[str]) -> list[str]:
    """Absolute paths of listed shards, each checked to lie in its folder and exist."""
    base = os.path.normpath(folder / _SHARD_FOLDERS[kind]) + os.sep
    ranks = os.path.normpath(folder / RANKS_DIR) + os.sep
    files = []
    for rel in relative_paths:
        path = os.path.normpath(folder / rel)
        in_rank = path.startswith(ranks) and f"{os.sep}{_SHARD_FOLDERS[kind]}{os.sep}" in path[len(ranks) :]
        if not (path.startswith(base) or in_rank):
            raise StoreError(
                f"the catalog of {folder} lists a {kind} shard at {rel!r}, outside {kind}/: "
                "the catalog is damaged; re-import the session or start a new one"
            )
        if not os.path.isfile(path):
            raise MissingFileError(
                f"the {kind} shard {path} listed in the catalog is missing: restore the file "
                "(from a backup or an exported bundle) or start a new session"
            )
        files.append(path)
    return files


def _read_catalog(folder: Path) -> tuple[list[Any], dict[str, pa.Table]]:
    cat = Catalog.open(folder / CATALOG, readonly=True)
    try:
        shards = list(cat.active_shards())
        tables = {name: cat.table_arrow(name) for name in CATALOG_VIEWS}
    finally:
        cat.close()
    for prefix, path in rank_catalogs(folder):  # the other ranks' shards of a multi-process run
        with Catalog.open(path, readonly=True) as rank_catalog:
            shards += [replace(s, path=prefix + s.path) for s in rank_catalog.active_shards()]
    return shards, tables


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
