"""Schema migrations of the catalog: real SQLite files, real Alembic, real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from filelock import FileLock

from onthefly.errors import CorruptFileError, MissingFileError, SchemaError
from onthefly.store.catalog import migrate
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.catalog.models import Base
from onthefly.store.catalog.rows import TABLES
from onthefly.store.layout import migrate_lock_path

CATALOG_TABLES = {
    "sessions",
    "runs",
    "run_edges",
    "checkpoints",
    "tests",
    "slices",
    "events",
    "epochs",
    "shards",
}


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows} - {"alembic_version", "sqlite_sequence"}


def _schema_diff(db: Path, metadata: sa.MetaData) -> list:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "session" / "catalog.sqlite"


def test_upgrade_creates_a_missing_catalog_at_head(db: Path) -> None:
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.HEAD == "0001"
    assert _tables(db) == CATALOG_TABLES
    migrate.check_schema(db)


def test_upgrade_at_head_is_a_no_op(db: Path) -> None:
    migrate.upgrade(db)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO sessions (id, project, created_at, origin) VALUES ('s', 'p', 1.0, 'new')")
    migrate.upgrade(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id FROM sessions").fetchall() == [("s",)]


def test_head_to_base_to_head(db: Path) -> None:
    migrate.upgrade(db)
    migrate.downgrade(db, "base")
    assert migrate.current_revision(db) is None
    assert _tables(db) == set()
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.HEAD
    assert _tables(db) == CATALOG_TABLES


def test_downgrade_to_an_unknown_revision_says_which_exist(db: Path) -> None:
    migrate.upgrade(db)
    with pytest.raises(SchemaError, match="choose 'base' or a revision up to 0001"):
        migrate.downgrade(db, "nope")
    assert migrate.current_revision(db) == migrate.HEAD


def test_models_match_the_migrations(db: Path) -> None:
    migrate.upgrade(db)
    assert _schema_diff(db, Base.metadata) == []


def test_the_catalog_knows_the_models_tables() -> None:
    assert set(TABLES) == set(Base.metadata.tables) == CATALOG_TABLES


def test_arrow_tables_take_the_models_column_types(db: Path) -> None:
    # The catalog reads column types from the file (PRAGMA table_info), not from the models.
    expected = [
        (sa.Boolean, pa.bool_()),
        (sa.Integer, pa.int64()),
        (sa.Float, pa.float64()),
        (sa.JSON, pa.string()),
        (sa.String, pa.string()),
        (sa.LargeBinary, pa.binary()),
    ]
    with Catalog.open(db) as cat:
        for name in TABLES:
            schema = cat.table_arrow(name).schema
            for column in Base.metadata.tables[name].columns:
                if name == "slices" and column.name == "sample_ids":
                    assert column.name not in schema.names
                    continue
                arrow = next(a for kind, a in expected if isinstance(column.type, kind))
                assert schema.field(column.name).type == arrow, (name, column.name)


def test_the_models_comparison_notices_a_difference(db: Path) -> None:
    migrate.upgrade(db)
    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    sa.Table("runs", changed, sa.Column("notes", sa.Text()), extend_existing=True)
    diff = _schema_diff(db, changed)
    assert [(d[0], d[3].name) for d in diff if d[0] == "add_column"] == [("add_column", "notes")]


def test_env_works_from_the_alembic_command_line(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {migrate.alembic_config().get_main_option('script_location')}\n")
    alembic = Path(sys.executable).with_name("alembic")
    if not alembic.exists():
        pytest.skip(f"the alembic command is not installed next to {sys.executable}")
    result = subprocess.run(
        [str(alembic), "-c", str(ini), "-x", f"db={db}", "upgrade", "head"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(db) == migrate.HEAD
    assert _schema_diff(db, Base.metadata) == []


_OPEN_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from onthefly.store.catalog import migrate
    from onthefly.store.catalog.catalog import Catalog

    print("opening", flush=True)
    with Catalog.open(Path(sys.argv[1])) as catalog:
        catalog.init_session("s", "p")
    print(migrate.current_revision(Path(sys.argv[1])), flush=True)
    """
)


def _start_opener(db: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _OPEN_CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_second_process_waits_for_a_migration_in_progress(db: Path) -> None:
    db.parent.mkdir(parents=True)
    lock = FileLock(migrate_lock_path(db))
    with lock:  # as if another process were migrating right now
        child = _start_opener(db)
        try:
            assert child.stdout.readline().strip() == "opening"
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
            assert not db.exists()  # it has not touched the catalog while the lock was held
        except BaseException:
            child.kill()
            raise
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.strip() == migrate.HEAD
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT id FROM sessions").fetchall() == [("s",)]


@pytest.mark.slow
def test_two_processes_opening_a_new_catalog_together_both_see_head(db: Path) -> None:
    children = [_start_opener(db) for _ in range(2)]
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
        assert out.split() == ["opening", migrate.HEAD]
    assert _schema_diff(db, Base.metadata) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.HEAD,)]


def _stamp(db: Path, revision: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_a_catalog_from_a_newer_version_is_refused_with_the_remedy(db: Path) -> None:
    migrate.upgrade(db)
    _stamp(db, "0042")
    expected = r"newer OnTheFly \(schema 0042, this version knows up to 0001\).*pip install -U onthefly-ai"
    with pytest.raises(SchemaError, match=expected):
        migrate.check_schema(db)
    with pytest.raises(SchemaError, match=expected):
        Catalog.open(db, readonly=True)
    with pytest.raises(SchemaError, match=expected):
        Catalog.open(db)
    with pytest.raises(SchemaError, match=expected):
        migrate.downgrade(db)
    assert migrate.current_revision(db) == "0042"  # nothing was changed


def test_a_catalog_behind_is_refused_read_only_and_upgraded_writable(db: Path) -> None:
    migrate.upgrade(db)
    migrate.downgrade(db)
    with pytest.raises(SchemaError, match=r"found no schema version, expected 0001: back up .* writable store"):
        migrate.check_schema(db)
    with pytest.raises(SchemaError, match="expected 0001"):
        Catalog.open(db, readonly=True)
    Catalog.open(db).close()
    assert migrate.current_revision(db) == migrate.HEAD


def test_a_garbage_file_is_a_corrupt_catalog_naming_the_file(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite at all\n" * 200)
    for attempt in (
        lambda: migrate.upgrade(db),
        lambda: migrate.current_revision(db),
        lambda: Catalog.open(db),
        lambda: Catalog.open(db, readonly=True),
    ):
        with pytest.raises(CorruptFileError, match=rf"catalog {db} is not a readable SQLite database.*backup"):
            attempt()
    assert db.read_bytes().startswith(b"this is not sqlite")  # left as it was


def test_a_missing_catalog_is_reported_without_creating_it(db: Path) -> None:
    with pytest.raises(MissingFileError, match=str(db)):
        migrate.current_revision(db)
    with pytest.raises(MissingFileError, match="does not exist"):
        Catalog.open(db, readonly=True)
    assert not db.exists()


@pytest.mark.parametrize(
    ("revision", "verdict"),
    [(None, "empty"), ("0001", "current"), ("0000", "behind"), ("ffff", "newer")],
)
def test_schema_verdict(revision: str | None, verdict: str) -> None:
    assert migrate.schema_verdict(revision, known={"0000", "0001"}, head="0001") == verdict


def test_the_saved_head_schema_is_what_the_migrations_create(tmp_path: Path) -> None:
    written = migrate.write_head_schema(tmp_path / "fresh.sql")
    shipped = Path(migrate._head_schema_path())
    assert shipped.read_text() == written.read_text(), (
        "migrations/schema_head.sql is stale: rewrite it with `python -m onthefly.store.catalog.migrate`"
    )


def _master(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_a_new_catalog_from_the_saved_schema_equals_one_alembic_migrated(tmp_path: Path) -> None:
    fast = tmp_path / "fast" / "catalog.sqlite"
    migrate.upgrade(fast)  # blank file: created from schema_head.sql
    slow = tmp_path / "slow" / "catalog.sqlite"
    slow.parent.mkdir()
    engine = migrate._migration_engine(slow)
    try:
        with engine.begin() as conn:
            migrate._alembic_upgrade(conn)
    finally:
        engine.dispose()
    assert _master(fast) == _master(slow)
    assert migrate.current_revision(fast) == migrate.current_revision(slow) == migrate.HEAD
    assert _schema_diff(fast, Base.metadata) == []
    migrate.downgrade(fast)  # Alembic takes over from there like on any other catalog
    assert _tables(fast) == set()


def test_opening_a_new_or_current_catalog_imports_neither_alembic_nor_sqlalchemy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from onthefly.store.catalog.catalog import Catalog
        path = Path({str(tmp_path / "c.sqlite")!r})
        Catalog.open(path).close()
        Catalog.open(path).close()
        Catalog.open(path, readonly=True).close()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("alembic", "sqlalchemy")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_a_table_left_in_a_file_without_revision_goes_through_alembic(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT)")
    with pytest.raises(Exception, match="sessions"):
        migrate.upgrade(db)
    assert _tables(db) == {"sessions"}  # the failed upgrade rolled back whole


def test_without_the_saved_schema_a_new_catalog_is_migrated_by_alembic(db: Path, monkeypatch) -> None:
    monkeypatch.setattr(migrate, "HEAD_SCHEMA", "missing.sql")
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.HEAD and _tables(db) == CATALOG_TABLES
