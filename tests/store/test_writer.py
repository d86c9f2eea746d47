from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onthefly.errors import ConfigError, CorruptFileError, StoreError
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.shards.parts import MAX_LIVE_PARTS, ROW_GROUP_ROWS, plan_merge
from onthefly.store.shards.schema import SAMPLES_SCHEMA, stable_order
from onthefly.store.shards.summaries import summarize_losses
from onthefly.store.shards.writer import ShardWriter

CHILD = Path(__file__).with_name("writer_child.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def session(tmp_path):
    """A fresh session folder with an open catalog and one run."""
    catalog = Catalog.open(tmp_path / "catalog.sqlite")
    catalog.init_session("s-test", "tests")
    run = catalog.add_run(name="r", run_id="run1")
    yield tmp_path, catalog, run.id
    catalog.close()


def read_shards(session_dir: Path, shards) -> pa.Table:
    tables = [pq.read_table(session_dir / s.path) for s in shards]
    return pa.concat_tables(tables, promote_options="default") if tables else SAMPLES_SCHEMA.empty_table()


def sorted_rows(table: pa.Table, columns=("step", "sample_id", "loss")) -> list[tuple]:
    return sorted(zip(*(table.column(c).to_pylist() for c in columns)))


def spawn_child(session_dir: Path, run_id: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(session_dir), run_id, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# --------------------------------------------------------------------- rows, passes, summaries


def test_rows_of_several_steps_are_in_listed_shards_after_flush(session):
    session_dir, catalog, run = session
    rng = np.random.default_rng(1)
    logged = []
    with ShardWriter(session_dir, catalog, flush_interval=30) as writer:
        for step in range(6):
            ids = rng.permutation(1000)[:50]
            loss = rng.random(50, dtype=np.float32)
            writer.log_samples(run, "train", 0, step, ids, loss)
            logged += [(step, int(i), float(v)) for i, v in zip(ids, loss)]
        writer.flush()
        shards = catalog.active_shards("samples")
        assert [s.level for s in shards] == [0]
        part_ids = pq.read_table(session_dir / shards[0].path).column("sample_id").to_numpy()
        # a live part keeps the logged order: only merged and sealed files are sorted
        assert part_ids.tolist() == [i for _, i, _ in logged]
        assert sorted_rows(read_shards(session_dir, shards)) == sorted(logged)
        assert shards[0].min_step == 0 and shards[0].max_step == 5


def test_rows_reach_a_listed_part_without_any_flush_call(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog, flush_interval=0.05) as writer:
        writer.log_samples(run, "train", 0, 0, np.arange(3), np.ones(3))
        writer.log_steps(run, {"step": [0], "loss": [1.0]})
        deadline = time.monotonic() + 30  # generous: only the absence of any part fails
        while len(catalog.active_shards()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {(s.kind, s.rows) for s in catalog.active_shards()} == {("samples", 3), ("steps", 1)}


def test_end_pass_leaves_one_sealed_sorted_shard_and_its_summary(session):
    session_dir, catalog, run = session
    rng = np.random.default_rng(2)
    n_steps, batch = 5, 64_000  # enough rows for several row groups
    ids = rng.permutation(n_steps * batch).reshape(n_steps, batch)
    losses = rng.gamma(2.0, size=(n_steps, batch)).astype(np.float32)
    losses[0, :3] = np.nan
    seen = []
    with ShardWriter(session_dir, catalog, flush_interval=30, on_summary=seen.append) as writer:
        for step in range(n_steps):
            writer.log_samples(run, "train", 3, step, ids[step], losses[step], correct=ids[step] % 4 == 0)
            if step % 2:
                writer.flush()
        summary = writer.end_pass(run, "train", 3, n_steps - 1, metrics={"lr": 0.1}).result(timeout=60)

    (shard,) = catalog.active_shards("samples")
    assert shard.sealed and shard.rows == n_steps * batch and shard.epoch == 3
    table = pq.read_table(session_dir / shard.path)
    assert table.schema.equals(SAMPLES_SCHEMA)
    got = table.column("sample_id").to_numpy()
    assert np.array_equal(got, np.sort(ids.ravel()))
    by_id = np.empty(n_steps * batch, np.float32)
    by_id[ids.ravel()] = losses.ravel()
    assert np.array_equal(table.column("loss").to_numpy(), by_id[got], equal_nan=True)

    expected = summarize_losses(losses.ravel())
    assert summary.count == expected["count"] == n_steps * batch
    for key in ("mean", "min", "max", "p10", "p50", "p90", "p99"):
        assert getattr(summary, key) == pytest.approx(expected[key], rel=1e-12)
    assert summary.hist_counts == expected["hist_counts"]
    assert summary.metrics == {"lr": 0.1, "nonfinite": 3, "accuracy": pytest.approx(0.25)}
    assert catalog.epochs(run_id=run) == [summary]
    assert seen == [summary]

    meta = pq.ParquetFile(session_dir / shard.path).metadata
    assert [c.column_index for c in meta.row_group(0).sorting_columns] == [SAMPLES_SCHEMA.get_field_index("sample_id")]
    assert meta.num_row_groups == -(-n_steps * batch // ROW_GROUP_ROWS) >= 3
    col = SAMPLES_SCHEMA.get_field_index("sample_id")
    bounds = [
        (meta.row_group(i).column(col).statistics.min, meta.row_group(i).column(col).statistics.max)
        for i in range(meta.num_row_groups)
    ]
    assert all(lo <= hi < next_lo for (lo, hi), (next_lo, _) in zip(bounds, bounds[1:]))


def test_each_validation_pass_holds_the_rows_since_the_previous_one(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog, flush_interval=30) as writer:
        writer.log_samples(run, "val", 1, 100, np.arange(10), np.full(10, 1.0))
        writer.flush()
        first = writer.end_pass(run, "val", 1, 100).result(timeout=30)
        writer.log_samples(run, "val", 1, 200, np.arange(10), np.full(10, 2.0))
        second = writer.end_pass(run, "val", 1, 200).result(timeout=30)
    assert (first.count, first.mean, second.count, second.mean) == (10, 1.0, 10, 2.0)
    shards = catalog.active_shards("samples")
    assert [(s.sealed, s.rows, s.min_step) for s in shards] == [(True, 10, 100), (True, 10, 200)]


def test_a_train_pass_gathers_parts_a_previous_writer_left_behind(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog) as writer:
        writer.log_samples(run, "train", 0, 1, np.array([5, 3]), np.array([0.5, 0.3]))
    with ShardWriter(session_dir, catalog) as writer:
        writer.log_samples(run, "train", 0, 2, np.array([4]), np.array([0.4]))
        summary = writer.end_pass(run, "train", 0, 2).result(timeout=30)
    (shard,) = catalog.active_shards("samples")
    assert summary.count == 3 and shard.sealed
    assert pq.read_table(session_dir / shard.path).column("sample_id").to_pylist() == [3, 4, 5]


def test_optional_columns_are_null_where_they_were_not_logged(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog) as writer:
        writer.log_samples(run, "train", 0, 0, np.array([0, 1]), np.array([1.0, 2.0]), label=np.array([7, 8]))
        writer.log_samples(run, "train", 0, 1, torch.tensor([2]), torch.tensor([3.0], requires_grad=True))
        writer.flush()
        table = read_shards(session_dir, catalog.active_shards("samples"))
    assert table.schema.equals(SAMPLES_SCHEMA)
    assert table.column("label").to_pylist() == [7, 8, None]
    assert table.column("margin").null_count == 3


def test_steps_become_one_file_per_run_sorted_by_step_on_close(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog) as writer:
        writer.log_steps(run, [{"step": 2, "loss": 0.5, "val_acc": 0.9}, {"step": 3, "loss": 0.4}])
        writer.flush()
        writer.log_steps(run, {"step": [1], "lr": [0.01]})
    (shard,) = catalog.active_shards("steps")
    table = pq.read_table(session_dir / shard.path)
    assert shard.sealed and (shard.min_step, shard.max_step) == (1, 3)
    assert table.column("step").to_pylist() == [1, 2, 3]
    assert table.column("val_acc").to_pylist() == [None, 0.9, None]
    assert table.column("lr").to_pylist() == [0.01, None, None]
    assert table.column("time").null_count == 0


def test_log_step_writes_what_log_steps_writes(session):
    session_dir, catalog, run = session
    rows = [
        {"step": 1, "loss": 0.5, "time": 10.0, "val_acc": None},
        {"step": 2, "lr": 0.1, "time": 11.0},
        {"step": 3, "loss": np.float32(0.25), "time": 12.0},
    ]  # a numpy scalar takes the general path
    with ShardWriter(session_dir, catalog) as writer:
        for row in rows:
            writer.log_step(run, row)
        with pytest.raises(ConfigError, match=r"\.item\(\)"):
            writer.log_step(run, {"step": 4, "loss": torch.tensor(1.0)})
        with pytest.raises(ConfigError, match="no 'step'"):
            writer.log_step(run, {"loss": 1.0})
        with pytest.raises(ConfigError, match="run_id"):
            writer.log_step(run, {"step": 5, "run_id": "x"})
    (shard,) = catalog.active_shards("steps")
    one_by_one = pq.read_table(session_dir / shard.path)
    other = catalog.add_run(name="other", run_id="run2")
    with ShardWriter(session_dir, catalog) as writer:
        writer.log_steps(other.id, rows)
    (shard,) = [s for s in catalog.active_shards("steps") if s.run_id == other.id]
    together = pq.read_table(session_dir / shard.path)
    assert one_by_one.drop_columns("run_id").equals(together.drop_columns("run_id"))
    assert one_by_one.column("val_acc").to_pylist() == [None, None, None]


def test_a_long_pass_is_merged_so_its_live_files_stay_few(session):
    session_dir, catalog, run = session
    n_parts = MAX_LIVE_PARTS + 8
    with ShardWriter(session_dir, catalog, retire_grace=0) as writer:
        for step in range(n_parts):
            writer.log_samples(run, "train", 0, step, np.array([n_parts - step]), np.array([float(step)]))
            writer.flush()
        live = catalog.active_shards("samples")
        assert writer.stats["merges"] >= 1
        assert len(live) <= MAX_LIVE_PARTS and max(s.level for s in live) == 1
        assert sorted_rows(read_shards(session_dir, live), ("step",)) == [(s,) for s in range(n_parts)]
    on_disk = {p.relative_to(session_dir).as_posix() for p in session_dir.rglob("*.parquet")}
    assert on_disk == {s.path for s in catalog.active_shards()}
    assert catalog.retired_shards(older_than=time.time() + 1) == []


def test_merged_away_files_stay_on_disk_during_the_grace_period(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog, retire_grace=3600) as writer:
        writer.log_samples(run, "train", 0, 0, np.array([1]), np.array([1.0]))
        writer.flush()
        (part,) = catalog.active_shards("samples")
        writer.end_pass(run, "train", 0, 0).result(timeout=30)
    assert (session_dir / part.path).is_file()
    assert [s.id for s in catalog.retired_shards(older_than=time.time() + 1)] == [part.id]


def test_the_periodic_look_deletes_retired_files_once_their_grace_ends_and_only_then_asks_the_catalog(
    session, monkeypatch
):
    session_dir, catalog, run = session
    asked = []
    real = catalog.retired_shards
    monkeypatch.setattr(catalog, "retired_shards", lambda **kw: (asked.append(time.time()), real(**kw))[1])
    with ShardWriter(session_dir, catalog, retire_grace=0.5) as writer:
        time.sleep(1.5)  # a writer with nothing retired: one look at start (files an earlier writer left)
        assert len(asked) == 1
        writer.log_samples(run, "train", 0, 0, np.array([1]), np.array([1.0]))
        writer.flush()
        (part,) = catalog.active_shards("samples")
        writer.end_pass(run, "train", 0, 0).result(timeout=30)  # the part is merged away, retired
        assert (session_dir / part.path).is_file()
        deadline = time.monotonic() + 10
        while (session_dir / part.path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (session_dir / part.path).exists()  # deleted while the writer is open, not at close
        assert catalog.retired_shards(older_than=time.time() + 1) == []
        looks = len(asked)
        time.sleep(1.5)
        assert len(asked) == looks  # nothing retired any more: the catalog is not asked again


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([0] * MAX_LIVE_PARTS, []),
        ([0] * (MAX_LIVE_PARTS + 1), list(range(MAX_LIVE_PARTS + 1))),
        ([1] * MAX_LIVE_PARTS + [0], list(range(MAX_LIVE_PARTS))),
        ([2, 1, 1] + [0] * 30, list(range(3, 33))),
        ([3, 2, 1, 0], []),
    ],
)
def test_merge_plan_takes_the_lowest_level_with_several_files(levels, expected):
    assert plan_merge(levels, [1] * len(levels)) == expected


def test_merge_plan_never_merges_a_single_file_per_level():
    assert plan_merge([4, 3, 2, 1, 0], [1] * 5, max_live=2) == []


def test_merge_plan_keeps_merged_files_under_the_row_cap():
    levels = [0] * 6
    assert plan_merge(levels, [10, 4, 4, 4, 4, 4], max_live=2, max_rows=10) == [1, 2]
    assert plan_merge(levels, [10, 10, 10, 10, 10, 10], max_live=2, max_rows=10) == []


def test_stable_order_matches_a_stable_argsort():
    rng = np.random.default_rng(5)
    for keys in (rng.integers(0, 50, 1000), rng.integers(-5, 5, 100), np.array([2**62, 1, 2**62, 0])):
        keys = keys.astype(np.int64)
        assert np.array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
    assert stable_order(np.array([], dtype=np.int64)).tolist() == []


# --------------------------------------------------------------------- caller side


def test_bad_arguments_are_refused_on_the_callers_thread(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog) as writer:
        with pytest.raises(ConfigError, match="3 values but sample_id has 2"):
            writer.log_samples(run, "train", 0, 0, np.arange(2), np.ones(3))
        with pytest.raises(ConfigError, match="1-D"):
            writer.log_samples(run, "train", 0, 0, np.zeros((2, 2), np.int64), np.ones(2))
        with pytest.raises(ConfigError, match="dtype float64"):
            writer.log_samples(run, "train", 0, 0, np.ones(2), np.ones(2))
        with pytest.raises(ConfigError, match="epoch=-1"):
            writer.log_samples(run, "train", -1, 0, np.arange(2), np.ones(2))
        with pytest.raises(ConfigError, match="cannot name a shard folder"):
            writer.log_samples("../elsewhere", "train", 0, 0, np.arange(2), np.ones(2))
        with pytest.raises(ConfigError, match="no 'step'"):
            writer.log_steps(run, {"loss": [1.0]})
        with pytest.raises(ConfigError, match=r"\.item\(\)"):
            writer.log_steps(run, [{"step": 1, "loss": torch.tensor(1.0)}])
        with pytest.raises(ConfigError, match="flush_interval"):
            ShardWriter(session_dir, catalog, flush_interval=0)
    with pytest.raises(StoreError, match="closed"):
        writer.log_samples(run, "train", 0, 0, np.arange(2), np.ones(2))
    writer.close()  # a second close does nothing


def test_a_full_queue_makes_the_caller_wait_instead_of_growing(session):
    session_dir, catalog, run = session

    class SlowWriter(ShardWriter):
        """A writer whose collector thread takes 5 ms per queued item."""

        def _collect(self, item):
            time.sleep(0.005)
            return super()._collect(item)

    with SlowWriter(session_dir, catalog, max_queue=2) as writer:
        for step in range(40):
            writer.log_samples(run, "train", 0, step, np.arange(8), np.ones(8))
        writer.flush()
        stats = writer.stats
        rows = sum(s.rows for s in catalog.active_shards("samples"))
    assert stats["blocked_seconds"] > 0
    assert 1 <= stats["queue_high_water"] <= 2
    assert rows == 40 * 8


def test_a_corrupt_part_names_its_file_and_leaves_the_other_shards_intact(session):
    session_dir, catalog, run = session
    writer = ShardWriter(session_dir, catalog)
    for step in range(3):
        writer.log_samples(run, "train", 0, step, np.arange(100) + 100 * step, np.ones(100))
        writer.flush()
    parts = catalog.active_shards("samples")
    bad = parts[1]
    with open(session_dir / bad.path, "r+b") as f:
        f.seek(8)
        f.write(b"\xff" * 64)

    with pytest.raises(CorruptFileError, match=bad.path):
        writer.end_pass(run, "train", 0, 2).result(timeout=30)
    assert catalog.active_shards("samples") == parts
    for part in (parts[0], parts[2]):
        assert pq.read_table(session_dir / part.path).num_rows == 100
    with pytest.raises(StoreError, match=bad.path):
        writer.flush()  # the background error is raised once more, then cleared
    writer.log_samples(run, "val", 0, 2, np.arange(5), np.ones(5))
    assert writer.end_pass(run, "val", 0, 2).result(timeout=30).count == 5
    writer.close()
    assert writer.stats["errors"] == 1


# --------------------------------------------------------------------- other processes


def test_a_killed_writer_leaves_a_readable_catalog_and_shards(session):
    session_dir, catalog, run = session
    catalog.close()
    batch = 16
    child = spawn_child(session_dir, run, "--batch", str(batch), "--steps-per-epoch", "10", "--flush-every", "3")
    last_flushed, ended = -1, 0
    try:
        for line in child.stdout:
            if line.startswith("flushed"):
                last_flushed = int(line.split()[1])
            ended += line.startswith("ended")
            if ended >= 2 and last_flushed >= 25:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert last_flushed >= 25, child.stderr.read()

    with Catalog.open(session_dir / "catalog.sqlite", readonly=True) as reader:
        shards = reader.active_shards("samples")
    table = read_shards(session_dir, shards)
    files = [str(session_dir / s.path) for s in shards]
    with duckdb.connect() as con:
        per_step = dict(
            con.execute("SELECT step, count(*) FROM read_parquet($files) GROUP BY step", {"files": files}).fetchall()
        )
    assert all(per_step.get(step) == batch for step in range(last_flushed + 1))
    assert all(count == batch for count in per_step.values())  # no row listed twice
    rows = sorted_rows(table, ("step", "sample_id"))
    expected = [(s, s * batch + i) for s in range(last_flushed + 1) for i in range(batch)]
    assert rows[: len(expected)] == expected
    with Catalog.open(session_dir / "catalog.sqlite") as again:  # the owner can reopen it too
        assert len(again.active_shards("samples")) == len(shards)


def test_a_reader_querying_while_the_writer_appends_and_compacts_never_fails(session):
    session_dir, catalog, run = session
    catalog.close()
    steps, batch = 72, 8
    child = spawn_child(
        session_dir,
        run,
        "--steps",
        str(steps),
        "--batch",
        str(batch),
        "--steps-per-epoch",
        "36",
        "--flush-every",
        "1",
        "--sleep",
        "0",
    )
    counts = []
    with Catalog.open(session_dir / "catalog.sqlite", readonly=True) as reader, duckdb.connect() as con:
        while True:
            finished = child.poll() is not None
            files = [str(session_dir / s.path) for s in reader.active_shards("samples")]
            if files:
                counts.append(con.execute("SELECT count(*) FROM read_parquet($f)", {"f": files}).fetchone()[0])
            if finished:
                break
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    stats = json.loads(out.splitlines()[-1].removeprefix("done "))
    assert stats["merges"] >= 1 and stats["errors"] == 0
    assert len(counts) >= 3
    assert counts == sorted(counts)
    assert counts[-1] == steps * batch


def test_scores_become_pred_correct_and_margin_on_the_writers_thread(session):
    from onthefly.store.shards.scores import fields_from_scores

    session_dir, catalog, run = session
    rng = np.random.default_rng(0)
    steps = [(s, rng.normal(size=(5, 3)).astype(np.float32), rng.integers(0, 3, 5)) for s in range(4)]
    with ShardWriter(session_dir, catalog) as writer:
        for s, scores, label in steps:
            writer.log_samples(run, "train", 0, s, np.arange(5) + 5 * s, np.ones(5), label=label, scores=scores)
        writer.log_samples(
            run, "train", 0, 9, np.array([99]), np.ones(1), label=np.array([1]), scores=np.array([[0.0, 1.0, 2.0, 3.0]])
        )  # another class count in the same part
        writer.log_samples(run, "train", 0, 10, np.array([100]), np.ones(1))  # no fields at all
        writer.flush()
        table = read_shards(session_dir, catalog.active_shards("samples")).sort_by("sample_id")
    want = fields_from_scores(np.concatenate([sc for _, sc, _ in steps]), np.concatenate([lb for _, _, lb in steps]))
    assert table.column("pred").to_pylist()[:20] == want["pred"].tolist()
    assert table.column("correct").to_pylist()[:20] == want["correct"].tolist()
    assert np.allclose(table.column("margin").to_pylist()[:20], want["margin"])
    assert table.column("pred").to_pylist()[20:] == [3, None] and table.column("correct").to_pylist()[20:] == [
        False,
        None,
    ]
    assert "scores" not in table.column_names


def test_scores_are_checked_when_logged(session):
    session_dir, catalog, run = session
    with ShardWriter(session_dir, catalog) as writer:
        with pytest.raises(ConfigError, match=r"\[2, C\]"):
            writer.log_samples(run, "train", 0, 0, np.arange(2), np.ones(2), label=np.arange(2), scores=np.ones(2))
        with pytest.raises(ConfigError, match="without label"):
            writer.log_samples(run, "train", 0, 0, np.arange(2), np.ones(2), scores=np.ones((2, 3)))
        with pytest.raises(ConfigError, match="not both"):
            writer.log_samples(
                run,
                "train",
                0,
                0,
                np.arange(2),
                np.ones(2),
                label=np.arange(2),
                pred=np.arange(2),
                scores=np.ones((2, 3)),
            )


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread only on Linux")
def test_the_writer_threads_run_nicer_than_the_thread_that_started_them(session):
    import threading

    from onthefly.store.background import BACKGROUND_NICENESS

    session_dir, catalog, _ = session
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with ShardWriter(session_dir, catalog):
        threads = [t for t in threading.enumerate() if t.name.startswith("onthefly-shard-")]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # each thread lowers itself as it starts
            nice = {t.name: os.getpriority(os.PRIO_PROCESS, t.native_id) for t in threads}
            if all(v == min(19, mine + BACKGROUND_NICENESS) for v in nice.values()):
                break
            time.sleep(0.01)
    assert len(threads) == 3 and set(nice.values()) == {min(19, mine + BACKGROUND_NICENESS)}, nice
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's thread is untouched
