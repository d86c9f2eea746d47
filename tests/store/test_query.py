"""DuckDB views over a session: typed views, refresh, the locked configuration, the query guard."""

from __future__ import annotations

import base64
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onthefly.errors import ConfigError, CorruptFileError, MissingFileError, QueryError, StoreError
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read import query
from onthefly.store.records import EpochSummary
from onthefly.store.shards.schema import SAMPLES_SCHEMA, STEPS_SCHEMA
from tests.store.shards import write_samples

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def session(tmp_home):
    with StoreRoot(tmp_home).open_session("demo", cleanup=False) as s:
        yield s


@pytest.fixture
def run_id(session):
    return session.catalog.add_run(name="baseline").id


def duck_types(con, view):
    return {name: typ for name, typ, *_ in con.execute(f"DESCRIBE {view}").fetchall()}


# -- views ----------------------------------------------------------------------


def test_every_view_exists_and_is_typed_in_an_empty_session(session):
    con = query.connect(session.dir)
    for view in query.VIEWS:
        expected = 1 if view == "sessions" else 0
        assert con.execute(f"SELECT count(*) FROM {view}").fetchall() == [(expected,)], view
    samples = duck_types(con, "samples")
    assert list(samples) == SAMPLES_SCHEMA.names
    assert samples["epoch"] == "INTEGER" and samples["loss"] == "FLOAT" and samples["sample_id"] == "BIGINT"
    assert list(duck_types(con, "steps")) == STEPS_SCHEMA.names
    assert "name" in duck_types(con, "runs") and "hist_edges" in duck_types(con, "epochs")


def test_samples_show_listed_shards_after_refresh_and_drop_retired_ones(session, run_id):
    con = query.connect(session.dir)
    part = write_samples(session, run_id, epoch=0, sample_ids=[3, 1], losses=[0.5, 1.5], name="p1")
    assert con.execute("SELECT count(*) FROM samples").fetchall() == [(0,)]  # not refreshed yet
    query.refresh(con, session.dir)
    assert con.execute("SELECT sample_id, loss FROM samples ORDER BY sample_id").fetchall() == [(1, 1.5), (3, 0.5)]

    merged = session.dir / f"samples/{run_id}/train/m.parquet"
    pq.write_table(pq.read_table(session.dir / part.path).slice(0, 1), merged)
    session.catalog.compact_shards(
        retire_ids=[part.id],
        new=dict(
            kind="samples",
            run_id=run_id,
            split="train",
            epoch=0,
            path=f"samples/{run_id}/train/m.parquet",
            rows=1,
            bytes=merged.stat().st_size,
            min_step=0,
            max_step=0,
            level=2,
            sealed=True,
        ),
    )
    query.refresh(con, session.dir)
    assert con.execute("SELECT sample_id FROM samples").fetchall() == [(3,)]


def test_steps_view_unions_shards_with_extra_metrics_by_name(session, run_id):
    for i, extra in enumerate([{}, {"val_acc": [0.5]}]):
        table = pa.table({"run_id": [run_id], "step": [i], "loss": pa.array([1.0 / (i + 1)], pa.float32()), **extra})
        rel = f"steps/{run_id}/part-{i:06d}.parquet"
        (session.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, session.dir / rel)
        session.catalog.add_shard(
            kind="steps", run_id=run_id, split=None, epoch=None, path=rel, rows=1, bytes=1, min_step=i, max_step=i
        )
    con = query.connect(session.dir)
    rows = con.execute("SELECT step, loss, lr, val_acc FROM steps ORDER BY step").fetchall()
    assert rows == [(0, 1.0, None, None), (1, 0.5, None, 0.5)]
    assert duck_types(con, "steps")["lr"] == "DOUBLE"


def test_catalog_views_reflect_catalog_rows(session, run_id):
    cat = session.catalog
    cat.add_epoch(
        EpochSummary(
            run_id=run_id,
            split="train",
            epoch=0,
            step=9,
            count=3,
            mean=1.0,
            min=0.0,
            max=2.0,
            p10=0.2,
            p50=1.0,
            p90=1.8,
            p99=1.98,
        )
    )
    cat.add_slice(name="odd", sample_ids=[5, 1, 3], method={"ids": 3}, run_id=run_id)
    cat.add_event(level="info", kind="log", message="hello", run_id=run_id)
    con = query.connect(session.dir)
    assert con.execute("SELECT name, kind, status FROM runs").fetchall() == [("baseline", "base", "running")]
    assert con.execute("SELECT epoch, step, p50 FROM epochs").fetchall() == [(0, 9, 1.0)]
    assert con.execute("SELECT name, count FROM slices").fetchall() == [("odd", 3)]
    assert con.execute("SELECT sample_id FROM slice_members ORDER BY 1").fetchall() == [(1,), (3,), (5,)]
    assert con.execute("SELECT message FROM events").fetchall() == [("hello",)]
    cat.add_run(name="fork", kind="fork", parents=[(run_id, "fork_of")])
    query.refresh(con, session.dir)
    assert con.execute("SELECT role FROM run_edges").fetchall() == [("fork_of",)]


def test_a_listed_shard_missing_on_disk_is_named(session, run_id):
    shard = write_samples(session, run_id, epoch=0, sample_ids=[1], losses=[1.0])
    (session.dir / shard.path).unlink()
    with pytest.raises(MissingFileError, match=shard.path.split("/")[-1]):
        query.connect(session.dir)


def test_a_shard_listed_outside_the_samples_folder_is_refused(session, run_id):
    session.catalog.add_shard(
        kind="samples",
        run_id=run_id,
        split="train",
        epoch=0,
        path="catalog.sqlite",
        rows=1,
        bytes=1,
        min_step=0,
        max_step=0,
    )
    with pytest.raises(StoreError, match="outside samples/"):
        query.connect(session.dir)


def test_refresh_refuses_a_connection_of_another_session(tmp_home, session):
    with StoreRoot(tmp_home).open_session("other", cleanup=False) as other:
        con = query.connect(other.dir)
        with pytest.raises(ConfigError, match="connect"):
            query.refresh(con, session.dir)


# -- the locked configuration ---------------------------------------------------


def test_sql_cannot_reach_files_outside_the_shard_folders(session, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    con = query.connect(session.dir)
    outside = [
        f"SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
        f"SELECT * FROM read_text('{session.dir / 'catalog.sqlite'}')",
        f"SELECT * FROM read_csv('{session.dir}/samples/../catalog.sqlite')",
        f"SELECT * FROM glob('{tmp_path}/*')",
    ]
    for sql in outside:  # plain SELECTs: the guard lets them through, the configuration stops them
        with pytest.raises(QueryError, match="Permission"):
            query.run_query(con, sql)
    for sql in outside + [
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'other.db'}' AS other",
        "INSTALL sqlite",
        "LOAD sqlite",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
    ]:  # straight on the raw connection, without the guard
        with pytest.raises(duckdb.Error):
            con.execute(sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.db").exists()


def test_the_guard_refuses_writes_and_extension_statements(session, tmp_path):
    con = query.connect(session.dir)
    for sql in [
        f"COPY (SELECT 1) TO '{session.dir}/samples/x.csv'",
        f"ATTACH '{tmp_path / 'x.db'}'",
        "INSTALL sqlite",
        "LOAD sqlite",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW samples",
        "SET threads = 1",
        "PRAGMA version",
        "SELECT 1; SELECT 2",
        "   ",
    ]:
        with pytest.raises(QueryError):
            query.run_query(con, sql)
    assert not (session.dir / "samples" / "x.csv").exists()
    assert query.run_query(con, "SELECT count(*) AS n FROM samples")["rows"] == [[0]]


def test_readonly_refusal_accepts_only_one_select():
    assert query.readonly_refusal(["SELECT"]) is None
    assert "2 statements" in query.readonly_refusal(["SELECT", "SELECT"])
    assert "got COPY" in query.readonly_refusal(["COPY"])
    assert "empty" in query.readonly_refusal([])


# -- run_query ------------------------------------------------------------------


def test_run_query_limits_rows_and_says_when_it_truncated(session):
    con = query.connect(session.dir)
    sql = "SELECT i FROM range(5) t(i) ORDER BY i DESC"
    cut = query.run_query(con, sql, limit=3)
    assert cut["rows"] == [[4], [3], [2]] and cut["truncated"] is True
    whole = query.run_query(con, sql, limit=5)
    assert len(whole["rows"]) == 5 and whole["truncated"] is False
    assert whole["columns"] == ["i"] and whole["types"] == ["BIGINT"]


def test_run_query_stops_a_slow_query_at_the_timeout(session):
    con = query.connect(session.dir)
    with pytest.raises(QueryError, match="longer than 0.2 s"):
        query.run_query(con, "SELECT sum(i * i) FROM range(1000000000000) t(i)", timeout=0.2)
    assert query.run_query(con, "SELECT 1 AS one")["rows"] == [[1]]  # the connection still works


def test_run_query_binds_parameters_and_returns_json_safe_values(session):
    con = query.connect(session.dir)
    out = query.run_query(
        con,
        "SELECT $x::DOUBLE AS x, 'nan'::DOUBLE AS n, 'inf'::FLOAT AS i, DATE '2024-01-02' AS d, "
        "[1.5, 'nan'::DOUBLE] AS l, '\\x01'::BLOB AS b",
        {"x": 2.5},
    )
    assert out["rows"] == [[2.5, None, None, "2024-01-02", [1.5, None], base64.b64encode(b"\x01").decode()]]
    assert query.run_query(con, "SELECT ? + 1 AS y", [41])["rows"] == [[42]]


def test_run_query_can_answer_in_arrow(session):
    con = query.connect(session.dir)
    out = query.run_query(con, "SELECT i, i * 0.5 AS h FROM range(4) t(i)", format="arrow", limit=3)
    table = pa.ipc.open_stream(base64.b64decode(out["arrow"])).read_all()
    assert table.column_names == ["i", "h"] and table.column("i").to_pylist() == [0, 1, 2]
    assert out["truncated"] is True


def test_run_query_rejects_bad_options_and_reports_failures(session):
    con = query.connect(session.dir)
    with pytest.raises(ConfigError, match="limit"):
        query.run_query(con, "SELECT 1", limit=0)
    with pytest.raises(ConfigError, match="timeout"):
        query.run_query(con, "SELECT 1", timeout=-1)
    with pytest.raises(ConfigError, match="format"):
        query.run_query(con, "SELECT 1", format="csv")
    with pytest.raises(QueryError, match="no_such_table"):
        query.run_query(con, "SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="parse"):
        query.run_query(con, "SELEC 1")


def test_json_value_turns_non_finite_numbers_into_null():
    assert query.json_value(float("nan")) is None and query.json_value(math.inf) is None
    assert query.json_value(np.float32(1.5)) == 1.5
    assert query.json_value({"a": (1, float("-inf"))}) == {"a": [1, None]}


# -- sql() ----------------------------------------------------------------------


def test_sql_opens_the_newest_session_by_default_or_one_by_id_or_folder(tmp_home):
    store = StoreRoot(tmp_home)
    with store.open_session("first", cleanup=False) as a:
        a.catalog.add_run(name="a")
    with store.open_session("second", cleanup=False) as b:
        b.catalog.add_run(name="b")
    assert query.sql(home=tmp_home).execute("SELECT name FROM runs").fetchall() == [("b",)]
    assert query.sql(a.id, home=tmp_home).execute("SELECT name FROM runs").fetchall() == [("a",)]
    assert query.sql(b.dir).execute("SELECT project FROM sessions").fetchall() == [("second",)]


def test_sql_explains_what_it_cannot_open(tmp_home, tmp_path):
    with pytest.raises(StoreError, match="no session"):
        query.sql(home=tmp_home)
    with pytest.raises(ConfigError, match="onthefly import"):
        query.sql(tmp_path / "bundle.zip", home=tmp_home)
    with StoreRoot(tmp_home).open_session("demo", cleanup=False):
        pass
    with pytest.raises(MissingFileError, match="existing sessions"):
        query.sql("20000101-000000-abcdef", home=tmp_home)
    with pytest.raises(StoreError, match="no session folder"):
        query.sql(tmp_path / "nowhere" / "x", home=tmp_home)


def test_a_damaged_shard_is_named_in_the_error(session, run_id):
    shard = write_samples(session, run_id, epoch=0, sample_ids=[1], losses=[1.0])
    (session.dir / shard.path).write_bytes(b"not parquet at all")
    with pytest.raises(CorruptFileError, match=shard.path.split("/")[-1]):
        query.connect(session.dir)
