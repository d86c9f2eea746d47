"""Reports, quantile bands, trajectories, slices and slice exports against hand-computed values."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from onthefly.errors import ConfigError, QueryError, StoreError
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read import query, reports
from onthefly.store.records import EpochSummary
from tests.store.shards import write_samples

pytestmark = pytest.mark.timeout(60)

NAN = float("nan")
# epoch 0 and epoch 1 of the "baseline" run (train split); sample 1 is seen twice in epoch 1.
EPOCH0 = dict(
    ids=[0, 1, 2, 3, 4, 5], loss=[0.1, 0.9, 0.4, 2.0, 0.7, 1.3], label=[0, 1, 0, 1, 0, 1], pred=[0, 0, 0, 0, 0, 1]
)
EPOCH1 = dict(
    ids=[0, 1, 2, 3, 4, 5, 1],
    loss=[0.05, 0.5, NAN, 1.5, 0.3, 0.8, 0.7],
    label=[0, 1, 0, 1, 0, 1, 1],
    pred=[0, 1, 0, 0, 0, 1, 1],
)


def add_shard(session, run_id, epoch, rows, *, step=0):
    """One shard of the rows of an epoch (``EPOCH0``/``EPOCH1``), one step a row from ``step``."""
    n = len(rows["ids"])
    write_samples(
        session,
        run_id,
        epoch=epoch,
        sample_ids=rows["ids"],
        losses=rows["loss"],
        label=rows["label"],
        pred=rows["pred"],
        margin=np.zeros(n),
        step=np.arange(step, step + n),
    )


def summary(run_id, epoch, step, p50, *, split="train"):
    return EpochSummary(
        run_id=run_id,
        split=split,
        epoch=epoch,
        step=step,
        count=6,
        mean=p50 + 0.1,
        min=0.0,
        max=2.0,
        p10=p50 / 4,
        p50=p50,
        p90=p50 * 2,
        p99=p50 * 2.2,
        hist_edges=[0.0, 1.0, 2.0],
        hist_counts=[4, 2],
    )


@pytest.fixture
def setup(tmp_home, tmp_path):
    """A session with one run of two summarized epochs; yields (session, run_id, con, root)."""
    with StoreRoot(tmp_home).open_session("demo", cleanup=False) as session:
        run_id = session.catalog.add_run(name="baseline").id
        add_shard(session, run_id, 0, EPOCH0, step=0)
        add_shard(session, run_id, 1, EPOCH1, step=6)
        session.catalog.add_epoch(summary(run_id, 0, 5, 0.8))
        session.catalog.add_epoch(summary(run_id, 1, 10, 0.55))  # an earlier pass of epoch 1...
        session.catalog.add_epoch(summary(run_id, 1, 12, 0.5))  # ...and the one a report shows
        root = tmp_path / "work"
        root.mkdir()
        yield session, run_id, query.connect(session.dir), root


# -- report ---------------------------------------------------------------------


def test_report_shows_the_latest_pass_of_the_newest_run_with_its_hardest_samples(setup):
    session, run_id, con, _ = setup
    out = reports.report(con, k=3)
    assert (out["run"], out["split"], out["epoch"], out["step"], out["count"]) == (run_id, "train", 1, 12, 6)
    assert out["mean"] == pytest.approx(0.6)
    assert out["quantiles"] == pytest.approx({"p10": 0.125, "p50": 0.5, "p90": 1.0, "p99": 1.1})
    assert out["hist"] == {"edges": [0.0, 1.0, 2.0], "counts": [4, 2]}
    # highest finite losses of epoch 1: 1.5 (id 3), 0.8 (id 5), 0.7 (id 1, its second row); the NaN is left out
    assert [(h["sample_id"], h["label"], h["pred"]) for h in out["hardest"]] == [(3, 1, 0), (5, 1, 1), (1, 1, 1)]
    assert [h["loss"] for h in out["hardest"]] == pytest.approx([1.5, 0.8, 0.7])
    json.dumps(out, allow_nan=False)


def test_report_of_a_named_run_and_epoch(setup):
    session, run_id, con, _ = setup
    out = reports.report(con, run="baseline", epoch=0, k=2)
    assert out["epoch"] == 0 and out["quantiles"]["p50"] == pytest.approx(0.8)
    assert [h["sample_id"] for h in out["hardest"]] == [3, 5]


def test_report_says_what_exists_when_nothing_matches(setup):
    session, run_id, con, _ = setup
    with pytest.raises(QueryError, match=r"no run 'nope'.*baseline"):
        reports.report(con, run="nope")
    with pytest.raises(QueryError, match=r"'val'.*train epochs 0, 1"):
        reports.report(con, split="val")
    with pytest.raises(QueryError, match=r"epoch 7.*train epochs 0, 1"):
        reports.report(con, epoch=7)
    with pytest.raises(ConfigError, match="k="):
        reports.report(con, k=0)


def test_report_defaults_to_the_newest_run(setup):
    session, run_id, con, _ = setup
    newer = session.catalog.add_run(name="second").id
    add_shard(session, newer, 0, EPOCH0, step=0)
    session.catalog.add_epoch(summary(newer, 0, 5, 0.3))
    query.refresh(con, session.dir)
    out = reports.report(con, k=1)
    assert out["run"] == newer and out["quantiles"]["p50"] == pytest.approx(0.3)


# -- bands and trajectories -----------------------------------------------------


def test_quantile_bands_are_columnar_per_summarized_pass(setup):
    session, run_id, con, _ = setup
    bands = reports.quantile_bands(con)
    assert bands["epoch"] == [0, 1, 1] and bands["step"] == [5, 10, 12]
    assert bands["p50"] == pytest.approx([0.8, 0.55, 0.5])
    assert bands["p99"] == pytest.approx([1.76, 1.21, 1.1])
    assert bands["mean"] == pytest.approx([0.9, 0.65, 0.6])
    assert reports.quantile_bands(con, split="val") == {
        k: [] for k in ("epoch", "step", "p10", "p50", "p90", "p99", "mean")
    }


def test_trajectory_averages_a_sample_within_each_epoch(setup):
    session, run_id, con, _ = setup
    traj = reports.trajectory(con, 1)
    assert traj["epoch"] == [0, 1] and traj["step"] == [1, 12]
    assert traj["loss"] == pytest.approx([0.9, 0.6])
    assert reports.trajectory(con, 2)["loss"][1] is None  # a NaN loss comes back as null
    assert reports.trajectory(con, 999) == {"epoch": [], "step": [], "loss": []}
    with pytest.raises(ConfigError):
        reports.trajectory(con, "1")


# -- slices ---------------------------------------------------------------------


def ids_of(session, name):
    return session.catalog.slice(name).sample_ids.tolist()


def test_select_slice_by_loss_range_saves_the_ids(setup):
    session, run_id, con, _ = setup
    out = reports.select_slice(con, session.catalog, name="mid", epoch=0, loss_min=0.35, loss_max=1.0)
    assert out == {
        "name": "mid",
        "count": 3,
        "run": run_id,
        "split": "train",
        "epoch": 0,
        "method": {
            "loss_min": 0.35,
            "loss_max": 1.0,
            "q_min": None,
            "q_max": None,
            "ids": None,
            "loss_bounds": [0.35, 1.0],
        },
    }
    assert ids_of(session, "mid") == [1, 2, 4]
    query.refresh(con, session.dir)
    assert con.execute("SELECT sample_id FROM slice_members WHERE name = 'mid' ORDER BY 1").fetchall() == [
        (1,),
        (2,),
        (4,),
    ]


def test_select_slice_by_quantile_range_uses_the_pass_quantiles(setup):
    session, run_id, con, _ = setup
    losses = np.asarray(EPOCH0["loss"], dtype=np.float32)
    upper = reports.select_slice(con, session.catalog, name="upper", epoch=0, q_min=0.5)
    assert upper["method"]["loss_bounds"][0] == pytest.approx(float(np.quantile(losses, 0.5)))  # (0.7 + 0.9) / 2
    assert ids_of(session, "upper") == [1, 3, 5]
    reports.select_slice(con, session.catalog, name="lower", epoch=0, q_max=0.2)  # 0.2 quantile = 0.4
    assert ids_of(session, "lower") == [0, 2]


def test_select_slice_by_ids_keeps_those_seen_in_the_pass_and_skips_nan_for_ranges(setup):
    session, run_id, con, _ = setup
    reports.select_slice(con, session.catalog, name="given", epoch=0, ids=[5, 0, 99, 5])
    assert ids_of(session, "given") == [0, 5]
    reports.select_slice(con, session.catalog, name="hard_given", epoch=0, ids=[0, 3, 99], loss_min=1.0)
    assert ids_of(session, "hard_given") == [3]
    out = reports.select_slice(con, session.catalog, name="finite", loss_min=0.0)  # latest epoch: 1
    assert out["epoch"] == 1 and ids_of(session, "finite") == [0, 1, 3, 4, 5]


def test_select_slice_refuses_bad_criteria_and_existing_names(setup):
    session, run_id, con, _ = setup
    cat = session.catalog
    for bad in [
        {},
        {"q_min": 1.5},
        {"q_min": 0.8, "q_max": 0.2},
        {"loss_min": 2.0, "loss_max": 1.0},
        {"ids": [0.5]},
        {"loss_min": NAN},
    ]:
        with pytest.raises(ConfigError):
            reports.select_slice(con, cat, name="x", **bad)
    with pytest.raises(ConfigError, match="name"):
        reports.select_slice(con, cat, name="", loss_min=0.0)
    reports.select_slice(con, cat, name="dup", epoch=0, loss_min=1.0)
    with pytest.raises(StoreError, match="replace=True"):
        reports.select_slice(con, cat, name="dup", epoch=0, loss_min=0.0)
    assert reports.select_slice(con, cat, name="dup", epoch=0, loss_min=0.0, replace=True)["count"] == 6


# -- export ---------------------------------------------------------------------


@pytest.fixture
def hard(setup):
    session, run_id, con, root = setup
    reports.select_slice(con, session.catalog, name="hard", epoch=0, q_min=0.5)  # ids 1, 3, 5
    return setup


def test_export_slice_writes_csv_parquet_and_json_rows(hard):
    session, run_id, con, root = hard
    written = {}
    for fmt in reports.EXPORT_FORMATS:
        out = reports.export_slice(con, session.catalog, name="hard", path=f"out/hard.{fmt}", format=fmt, root=root)
        target = root / "out" / f"hard.{fmt}"
        assert out == {"path": str(target), "rows": 3, "bytes": target.stat().st_size}
        written[fmt] = target
    csv = pacsv.read_csv(written["csv"])
    assert csv.column_names == ["sample_id", "loss", "label", "pred", "correct", "margin"]
    assert csv.column("sample_id").to_pylist() == [1, 3, 5]
    assert csv.column("loss").to_pylist() == pytest.approx([0.9, 2.0, 1.3])
    assert csv.column("correct").to_pylist() == [False, False, True]
    parquet = pq.read_table(written["parquet"])
    assert parquet.column("label").to_pylist() == [1, 1, 1] and parquet.column("pred").to_pylist() == [0, 0, 1]
    records = json.loads(written["json"].read_text())
    assert [r["sample_id"] for r in records] == [1, 3, 5] and records[2]["correct"] is True
    assert sorted(os.listdir(root / "out")) == ["hard.csv", "hard.json", "hard.parquet"]  # no temp files left


def test_export_slice_joins_extra_columns_on_sample_id(hard):
    session, run_id, con, root = hard
    extra = pa.table({"sample_id": pa.array([5, 1], pa.int32()), "path": ["e.png", "b.png"]})
    reports.export_slice(
        con, session.catalog, name="hard", path="x.parquet", format="parquet", root=root, extra_columns=extra
    )
    table = pq.read_table(root / "x.parquet")
    assert table.column("sample_id").to_pylist() == [1, 3, 5]
    assert table.column("path").to_pylist() == ["b.png", None, "e.png"]
    with pytest.raises(ConfigError, match="repeats"):
        reports.export_slice(
            con,
            session.catalog,
            name="hard",
            path="y.csv",
            root=root,
            extra_columns=pa.table({"sample_id": [1], "loss": [0.0]}),
        )


def test_export_slice_refuses_paths_outside_the_root(hard, tmp_path):
    session, run_id, con, root = hard
    (root / "escape").symlink_to(tmp_path)
    for path in ["../out.csv", str(tmp_path / "out.csv"), "escape/out.csv", ".", "/etc/hard.csv"]:
        with pytest.raises(ConfigError, match="inside the working directory|folder"):
            reports.export_slice(con, session.catalog, name="hard", path=path, root=root)
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ConfigError, match="format"):
        reports.export_slice(con, session.catalog, name="hard", path="a.xlsx", format="xlsx", root=root)
    with pytest.raises(StoreError, match="no slice 'nope'"):
        reports.export_slice(con, session.catalog, name="nope", path="a.csv", root=root)
