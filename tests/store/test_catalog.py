"""The catalog API against real SQLite files."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from onthefly._version import __version__
from onthefly.errors import ConfigError, StoreError
from onthefly.store.catalog.arrow import ARROW_TABLES
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.records import CheckpointInfo, EpochSummary

SESSION = "20250101-120000-abcdef"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.sqlite"


@pytest.fixture
def cat(path: Path):
    catalog = Catalog.open(path)
    catalog.init_session(SESSION, "demo", meta={"seed": 1})
    yield catalog
    catalog.close()


def _summary(run_id: str, epoch: int, *, split: str = "train", step: int = 10, mean: float = 1.0) -> EpochSummary:
    return EpochSummary(
        run_id=run_id,
        split=split,
        epoch=epoch,
        step=step,
        count=4,
        mean=mean,
        min=0.0,
        max=2.0,
        p10=0.1,
        p50=0.9,
        p90=1.8,
        p99=2.0,
        hist_edges=[0.0, 1.0, 2.0],
        hist_counts=[2, 2],
        metrics={"accuracy": 0.5},
    )


def _shard(run_id: str, n: int, **extra) -> dict:
    return dict(
        kind="samples",
        run_id=run_id,
        split="train",
        epoch=0,
        path=f"samples/{run_id}/part-{n}.parquet",
        rows=10,
        bytes=100,
        min_step=n,
        max_step=n,
        **extra,
    )


# --- opening ------------------------------------------------------------------


def test_a_writable_catalog_runs_in_wal_mode_with_foreign_keys(cat: Catalog, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # Below the public checks: the database itself refuses a test of a run it does not have.
    with pytest.raises(StoreError, match="FOREIGN KEY constraint failed"):
        with cat._transaction(write=True) as c:
            c.execute("INSERT INTO tests (run_id, step, epoch, split, created_at) VALUES ('ghost', 0, 0, 'val', 0.0)")
    assert cat.tests() == []


def test_init_session_fills_where_it_runs_and_is_idempotent(cat: Catalog) -> None:
    info = cat.session()
    assert info is not None
    assert (info.id, info.project, info.origin, info.meta) == (SESSION, "demo", "new", {"seed": 1})
    assert (info.host, info.pid, info.package_version) == (socket.gethostname(), os.getpid(), __version__)
    again = cat.init_session(SESSION, "demo")
    assert again.created_at == info.created_at and again.meta == {"seed": 1}
    with pytest.raises(StoreError, match=f"belongs to session {SESSION}"):
        cat.init_session("20250101-120001-000000", "other")


def test_a_run_needs_a_session(path: Path) -> None:
    with Catalog.open(path) as catalog, pytest.raises(StoreError, match="call init_session first"):
        catalog.add_run(name="a")


# --- runs ---------------------------------------------------------------------


def test_runs_round_trip_in_creation_order_with_their_parents(cat: Catalog) -> None:
    base = cat.add_run(name="base", config={"lr": 0.1, "layers": [4, 2]}, hparams={"bs": 8})
    fork = cat.add_run(name="fork", kind="fork", parents=[(base.id, "fork_of")], run_id="fork1")
    merged = cat.add_run(
        name="merged", kind="merge", parents=[(base.id, "merge_of"), (fork.id, "merge_of")], status="paused"
    )
    assert fork.id == "fork1" and len(base.id) == 12
    runs = cat.runs()
    assert [r.name for r in runs] == ["base", "fork", "merged"]
    assert runs[0].config == {"lr": 0.1, "layers": [4, 2]} and runs[0].hparams == {"bs": 8}
    assert runs[0].session_id == SESSION and runs[0].status == "running" and runs[0].parents == ()
    assert cat.run(merged.id).parents == ((base.id, "merge_of"), (fork.id, "merge_of"))
    assert cat.run(merged.id) == merged
    edges = cat.table_arrow("run_edges").to_pylist()
    assert sorted((e["child_id"], e["parent_id"], e["role"]) for e in edges) == sorted(
        [(fork.id, base.id, "fork_of"), (merged.id, base.id, "merge_of"), (merged.id, fork.id, "merge_of")]
    )


def test_run_errors_name_the_id_and_the_remedy(cat: Catalog) -> None:
    a = cat.add_run(name="a", run_id="aaa")
    with pytest.raises(StoreError, match=r"no run 'zzz' .*known runs: aaa"):
        cat.run("zzz")
    with pytest.raises(StoreError, match="already exists"):
        cat.add_run(name="again", run_id=a.id)
    with pytest.raises(ConfigError, match="run kind 'branch' is not one of base, fork, merge, imported"):
        cat.add_run(name="b", kind="branch")
    with pytest.raises(ConfigError, match="name a run twice"):
        cat.add_run(name="m", kind="merge", parents=[("aaa", "merge_of"), ("aaa", "merge_of")])
    assert [r.id for r in cat.runs()] == ["aaa"]


def test_set_run_status_and_end(cat: Catalog) -> None:
    run = cat.add_run(name="a")
    cat.set_run_status(run.id, "paused")
    assert cat.run(run.id).status == "paused" and cat.run(run.id).ended_at is None
    before = time.time()
    cat.set_run_status(run.id, "finished", ended=True)
    done = cat.run(run.id)
    assert done.status == "finished" and done.ended_at >= before
    with pytest.raises(StoreError, match="no run 'nope'"):
        cat.set_run_status("nope", "failed")


# --- checkpoints and tests ----------------------------------------------------


def test_checkpoints_round_trip_and_the_latest_is_the_highest_step(cat: Catalog) -> None:
    a, b = cat.add_run(name="a").id, cat.add_run(name="b").id

    def ckpt(cid: str, run: str, step: int, created: float) -> CheckpointInfo:
        return CheckpointInfo(
            id=cid,
            run_id=run,
            step=step,
            epoch=step // 10,
            reason="epoch",
            path=f"checkpoints/{run}/{cid}.safetensors",
            bytes=123,
            sha256="ab" * 32,
            holds=("model", "optimizer", "rng"),
            created_at=created,
        )

    for info in (ckpt("c2", a, 20, 2.0), ckpt("c1", a, 10, 1.0), ckpt("c3", b, 5, 3.0), ckpt("c4", a, 20, 4.0)):
        cat.add_checkpoint(info)
    assert cat.checkpoint("c1") == ckpt("c1", a, 10, 1.0)
    assert [c.id for c in cat.checkpoints(a)] == ["c1", "c2", "c4"]
    assert {c.id for c in cat.checkpoints()} == {"c1", "c2", "c3", "c4"}
    assert cat.latest_checkpoint(a).id == "c4"
    assert cat.latest_checkpoint("nobody") is None
    with pytest.raises(StoreError, match=r"no checkpoint 'c9'.*known: c1, c2, c3, c4"):
        cat.checkpoint("c9")
    with pytest.raises(StoreError, match="already exists"):
        cat.add_checkpoint(ckpt("c1", a, 10, 1.0))


def test_tests_round_trip_with_numpy_numbers(cat: Catalog) -> None:
    run = cat.add_run(name="a").id
    t = cat.add_test(
        run_id=run,
        step=np.int64(30),
        epoch=3,
        split="test",
        loss=np.float32(0.25),
        metrics={"accuracy": np.float64(0.75), "confusion": np.eye(2, dtype=np.int64)},
    )
    cat.add_test(run_id=run, step=40, epoch=4, split="val", loss=None)
    assert cat.tests(run)[0] == t
    assert t.loss == 0.25 and t.metrics == {"accuracy": 0.75, "confusion": [[1, 0], [0, 1]]}
    assert [x.split for x in cat.tests()] == ["test", "val"]
    with pytest.raises(StoreError, match="no run 'ghost'"):
        cat.add_test(run_id="ghost", step=0, epoch=0, split="val", loss=1.0)


# --- slices -------------------------------------------------------------------


def test_slices_keep_their_ids_sorted_and_unique(cat: Catalog) -> None:
    ids = np.array([9, 3, 2**40, 3, 0], dtype=np.int64)
    made = cat.add_slice(name="hard", sample_ids=ids, method={"top_loss": 4}, run_id="r", split="train", epoch=2)
    got = cat.slice("hard")
    assert got.count == made.count == 4
    assert got.sample_ids.dtype == np.int64
    np.testing.assert_array_equal(got.sample_ids, [0, 3, 9, 2**40])
    assert (got.method, got.run_id, got.split, got.epoch) == ({"top_loss": 4}, "r", "train", 2)
    empty = cat.add_slice(name="none", sample_ids=[], method={"manual": True})
    assert empty.count == 0 and cat.slice("none").sample_ids.size == 0
    assert [s.name for s in cat.slices()] == ["hard", "none"]


def test_a_slice_name_is_taken_until_replaced(cat: Catalog) -> None:
    cat.add_slice(name="s", sample_ids=[1, 2], method={"v": 1})
    with pytest.raises(StoreError, match="pass replace=True to overwrite it or choose another name"):
        cat.add_slice(name="s", sample_ids=[3], method={"v": 2})
    cat.add_slice(name="s", sample_ids=[3], method={"v": 2}, replace=True)
    assert cat.slice("s").sample_ids.tolist() == [3] and cat.slice("s").method == {"v": 2}
    assert len(cat.slices()) == 1
    with pytest.raises(StoreError, match=r"no slice 'x' in .*; known slices: s: pass one of these names"):
        cat.slice("x")
    with pytest.raises(ConfigError, match="must be integers"):
        cat.add_slice(name="f", sample_ids=[0.5, 1.5], method={})


# --- events -------------------------------------------------------------------


def test_events_filter_by_run_level_and_position(cat: Catalog) -> None:
    first = cat.add_event(level="info", kind="log", message="start", run_id="r1", step=0)
    cat.add_events(
        [
            {"level": "warning", "kind": "nonfinite", "message": "nan", "run_id": "r1", "step": 5, "data": {"n": 1}},
            {"level": "debug", "kind": "log", "message": "tick"},
            {"level": "error", "kind": "log", "message": "boom", "run_id": "r2"},
        ]
    )
    assert [e.message for e in cat.events()] == ["start", "nan", "tick", "boom"]
    assert [e.message for e in cat.events(since_id=first.id)] == ["nan", "tick", "boom"]
    assert [e.message for e in cat.events(run_id="r1")] == ["start", "nan"]
    assert [e.message for e in cat.events(levels=["warning", "error"])] == ["nan", "boom"]
    assert [e.message for e in cat.events(limit=2)] == ["start", "nan"]
    assert cat.events(run_id="r1")[1].data == {"n": 1}


def test_add_events_is_one_transaction(cat: Catalog) -> None:
    with pytest.raises(ConfigError, match="event level 'loud'"):
        cat.add_events(
            [{"level": "info", "kind": "log", "message": "ok"}, {"level": "loud", "kind": "log", "message": "x"}]
        )
    with pytest.raises(ConfigError, match=r"unknown \['msg'\]"):
        cat.add_events([{"level": "info", "kind": "log", "msg": "x"}])
    assert cat.events() == []


# --- epoch summaries ----------------------------------------------------------


def test_epoch_summaries_upsert_on_run_split_epoch_step(cat: Catalog) -> None:
    run = cat.add_run(name="a").id
    cat.add_epoch(_summary(run, 1))
    cat.add_epoch(_summary(run, 0, split="val"))
    first = cat.add_epoch(_summary(run, 0))
    again = cat.add_epoch(_summary(run, 0, mean=np.float32(0.5)))
    assert again.id == first.id and again.mean == 0.5 and isinstance(again.mean, float)
    rows = cat.epochs(run_id=run)
    assert [(e.split, e.epoch) for e in rows] == [("train", 0), ("train", 1), ("val", 0)]
    assert rows[0].hist_counts == [2, 2] and rows[0].metrics == {"accuracy": 0.5}
    assert [e.epoch for e in cat.epochs(split="val")] == [0]
    with pytest.raises(StoreError, match="no run 'ghost'"):
        cat.add_epoch(_summary("ghost", 0))


# --- shards -------------------------------------------------------------------


def test_compaction_swaps_parts_for_one_file_in_one_transaction(cat: Catalog) -> None:
    parts = [cat.add_shard(**_shard("r", n)) for n in range(3)]
    other = cat.add_shard(**dict(_shard("r", 9), kind="steps", split=None))
    assert [s.id for s in cat.active_shards("samples")] == [p.id for p in parts]
    before = time.time()
    merged = cat.compact_shards(
        retire_ids=[p.id for p in parts],
        new=dict(_shard("r", 0), path="samples/r/epoch-0.parquet", level=1, sealed=True),
    )
    assert (merged.level, merged.sealed, merged.state) == (1, True, "active")
    assert [s.id for s in cat.active_shards()] == [other.id, merged.id]
    retired = cat.retired_shards(older_than=time.time() + 1)
    assert [s.id for s in retired] == [p.id for p in parts]
    assert all(s.state == "retired" and s.retired_at >= before for s in retired)
    assert cat.retired_shards(older_than=before - 1) == []
    cat.forget_shards([p.id for p in parts])
    assert cat.retired_shards(older_than=time.time() + 1) == []


def test_compaction_refuses_parts_that_are_not_active_and_changes_nothing(cat: Catalog) -> None:
    part = cat.add_shard(**_shard("r", 0))
    cat.compact_shards(retire_ids=[part.id], new=_shard("r", 1))
    active = cat.active_shards()
    with pytest.raises(StoreError, match=rf"shards {part.id} are not active"):
        cat.compact_shards(retire_ids=[part.id], new=_shard("r", 2))
    with pytest.raises(StoreError, match="still active"):
        cat.forget_shards([s.id for s in active])
    assert cat.active_shards() == active
    with pytest.raises(ConfigError, match=r"unknown \['colour'\]"):
        cat.compact_shards(retire_ids=[], new=dict(_shard("r", 3), colour="red"))


# --- Arrow export -------------------------------------------------------------


def test_table_arrow_has_the_same_schema_empty_and_filled(cat: Catalog, path: Path) -> None:
    empty = {name: cat.table_arrow(name) for name in ARROW_TABLES}
    run = cat.add_run(name="a", config={"lr": 0.1}).id
    cat.add_run(name="b", kind="fork", parents=[(run, "fork_of")])
    cat.add_checkpoint(CheckpointInfo("c", run, 1, 0, "manual", "c.safetensors", 1, "0" * 64, ("model",), 1.0))
    cat.add_test(run_id=run, step=1, epoch=0, split="val", loss=0.5, metrics={"acc": 1.0})
    cat.add_slice(name="s", sample_ids=[5, 1], method={"m": 1})
    cat.add_slice(name="t", sample_ids=[7], method={"m": 2})
    cat.add_event(level="info", kind="log", message="m")
    cat.add_epoch(_summary(run, 0))
    cat.add_shard(**_shard(run, 0, sealed=True))
    for name in ARROW_TABLES:
        filled = cat.table_arrow(name)
        assert filled.schema == empty[name].schema, name
        assert filled.num_rows > 0 and empty[name].num_rows == (1 if name == "sessions" else 0), name
    runs = cat.table_arrow("runs")
    assert runs.schema.field("created_at").type == pa.float64()
    assert json.loads(runs.column("config")[0].as_py()) == {"lr": 0.1}
    assert runs.column("hparams").null_count == 2  # no hparams: SQL NULL, not the text 'null'
    assert "sample_ids" not in cat.table_arrow("slices").column_names
    assert cat.table_arrow("shards").schema.field("sealed").type == pa.bool_()
    assert cat.table_arrow("slice_members").to_pylist() == [
        {"slice_id": 1, "name": "s", "sample_id": 1},
        {"slice_id": 1, "name": "s", "sample_id": 5},
        {"slice_id": 2, "name": "t", "sample_id": 7},
    ]
    with pytest.raises(ConfigError, match="no catalog table 'alembic_version'"):
        cat.table_arrow("alembic_version")


def test_json_columns_written_as_the_text_null_read_as_none(cat: Catalog, path: Path) -> None:
    # Catalogs written through SQLAlchemy's JSON type hold the text 'null' for an explicit None.
    run = cat.add_run(name="a").id
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE runs SET config = 'null', hparams = NULL WHERE id = ?", (run,))
    assert (cat.run(run).config, cat.run(run).hparams) == (None, None)
    assert cat.table_arrow("runs").column("config").null_count == 1


# --- readers, threads, closing ------------------------------------------------


def test_a_read_only_catalog_sees_commits_and_refuses_writes(cat: Catalog, path: Path) -> None:
    with Catalog.open(path, readonly=True) as reader:
        assert reader.readonly and reader.runs() == []
        run = cat.add_run(name="live")
        assert [r.id for r in reader.runs()] == [run.id]  # no reopen needed (WAL)
        with pytest.raises(StoreError, match="opened read-only"):
            reader.add_event(level="info", kind="log", message="x")
        with pytest.raises(StoreError, match="opened read-only"):
            reader.set_run_status(run.id, "failed")
    assert cat.run(run.id).status == "running"


def test_two_threads_writing_events_lose_nothing(cat: Catalog) -> None:
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            for i in range(100):
                cat.add_event(level="info", kind="log", message=f"{tag}{i}")
                if i % 10 == 0:
                    cat.add_events([{"level": "debug", "kind": "batch", "message": f"{tag}b{i}"}] * 3)
                    cat.events(since_id=max(0, i - 5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = cat.events()
    assert len(events) == 2 * (100 + 30)
    assert len({e.id for e in events}) == len(events)
    assert {e.message for e in events if e.kind == "log"} == {f"{t}{i}" for t in "ab" for i in range(100)}


def test_a_closed_catalog_says_so(path: Path) -> None:
    catalog = Catalog.open(path)
    catalog.close()
    catalog.close()
    with pytest.raises(StoreError, match="is closed"):
        catalog.runs()
