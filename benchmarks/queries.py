"""Dashboard queries at 1M and 10M per-sample rows.

Builds a session per size in a temporary folder (10 epochs, one sealed shard
per epoch sorted by sample_id, written with the writer's Parquet options, and
the epoch summaries in the catalog), then times the queries the dashboard
makes, warm, as the median of several runs. The histogram and the quantile
bands are also computed from the rows, side by side, to show what the
summaries save. One line per query and size:

    queries rows=10000000 query=bands median_ms=2.6 from_rows_ms=900.0 speedup=346x target_ms=50 ok

Run: .venv/bin/python benchmarks/queries.py [--rows 1000000 10000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's onthefly, not whichever is installed

from onthefly.store.layout import samples_folder
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read import query, reports
from onthefly.store.records import EpochSummary
from onthefly.store.shards.parts import PARQUET_OPTIONS, ROW_GROUP_ROWS
from onthefly.store.shards.schema import SAMPLES_SCHEMA
from onthefly.store.shards.summaries import summarize_losses

EPOCHS = 10
BATCH = 256
TARGETS_MS = {"histogram": 30, "bands": 50, "trajectory": 50, "top100": 100, "report": 100, "refresh": None}

HISTOGRAM = "SELECT hist_edges, hist_counts FROM epochs WHERE run_id = $run AND split = 'train' AND epoch = $epoch"
# The same answers computed from the rows instead of the summaries, timed side by side.
HISTOGRAM_FROM_ROWS = (
    "SELECT histogram(loss, equi_width_bins(min_loss, max_loss, 50, false)) FROM samples, "
    "(SELECT min(loss) AS min_loss, max(loss) AS max_loss FROM samples "
    " WHERE run_id = $run AND split = 'train' AND epoch = $epoch) "
    "WHERE run_id = $run AND split = 'train' AND epoch = $epoch"
)
BANDS_FROM_ROWS = (
    "SELECT epoch, quantile_cont(loss, [0.1, 0.5, 0.9, 0.99]), avg(loss) FROM samples "
    "WHERE run_id = $run AND split = 'train' GROUP BY epoch ORDER BY epoch"
)
TOP_100 = (
    "SELECT sample_id, loss, label, pred FROM samples "
    "WHERE run_id = $run AND split = 'train' AND epoch = $epoch ORDER BY loss DESC LIMIT 100"
)


def build_session(root: Path, rows: int) -> tuple[Path, str]:
    """A session with ``rows`` per-sample rows over EPOCHS epochs; returns (folder, run id)."""
    per_epoch = rows // EPOCHS
    rng = np.random.default_rng(0)
    with StoreRoot(root).open_session("bench", cleanup=False) as session:
        run_id = session.catalog.add_run(name="bench").id
        steps_per_epoch = -(-per_epoch // BATCH)
        for epoch in range(EPOCHS):
            order = rng.permutation(per_epoch)  # the position of each sample in the epoch's shuffle
            loss = (rng.gamma(2.0, 0.5, per_epoch) / (1 + epoch)).astype(np.float32)
            label = rng.integers(0, 10, per_epoch)
            pred = np.where(rng.random(per_epoch) < 0.8, label, rng.integers(0, 10, per_epoch))
            step = epoch * steps_per_epoch + order // BATCH
            table = pa.table(
                {
                    "run_id": pa.array([run_id] * per_epoch),
                    "split": pa.array(["train"] * per_epoch),
                    "epoch": np.full(per_epoch, epoch, np.int32),
                    "step": step.astype(np.int64),
                    "sample_id": np.arange(per_epoch, dtype=np.int64),
                    "loss": loss,
                    "label": label,
                    "pred": pred,
                    "correct": label == pred,
                    "margin": rng.normal(0, 1, per_epoch).astype(np.float32),
                    "grad_norm": pa.nulls(per_epoch, pa.float32()),
                },
                schema=SAMPLES_SCHEMA,
            )
            rel = (samples_folder(run_id, "train") / f"e{epoch:06d}-s000001.parquet").as_posix()
            (session.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, session.dir / rel, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
            session.catalog.add_shard(
                kind="samples",
                run_id=run_id,
                split="train",
                epoch=epoch,
                path=rel,
                rows=per_epoch,
                bytes=(session.dir / rel).stat().st_size,
                min_step=int(step.min()),
                max_step=int(step.max()),
                level=1,
                sealed=True,
            )
            stats = summarize_losses(loss)
            stats.pop("nonfinite")
            session.catalog.add_epoch(
                EpochSummary(run_id=run_id, split="train", epoch=epoch, step=int(step.max()), **stats)
            )
        return session.dir, run_id


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: file footers, DuckDB caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(rows: int, repeat: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="onthefly-bench-"))
    try:
        session_dir, run_id = build_session(root, rows)
        con = query.connect(session_dir)
        epoch = EPOCHS // 2
        sample = (rows // EPOCHS) // 3
        cases: dict[str, Callable[[], object]] = {
            "histogram": lambda: query.run_query(con, HISTOGRAM, {"run": run_id, "epoch": epoch}),
            "bands": lambda: reports.quantile_bands(con, run=run_id),
            "trajectory": lambda: reports.trajectory(con, sample, run=run_id),
            "top100": lambda: query.run_query(con, TOP_100, {"run": run_id, "epoch": epoch}),
            "report": lambda: reports.report(con, run=run_id, epoch=epoch, k=20),
            "refresh": lambda: query.refresh(con, session_dir),
        }
        baselines: dict[str, Callable[[], object]] = {
            "histogram": lambda: query.run_query(con, HISTOGRAM_FROM_ROWS, {"run": run_id, "epoch": epoch}),
            "bands": lambda: query.run_query(con, BANDS_FROM_ROWS, {"run": run_id}),
        }
        assert len(reports.trajectory(con, sample, run=run_id)["loss"]) == EPOCHS
        for name, fn in cases.items():
            ms = median_ms(fn, repeat)
            target = TARGETS_MS[name]
            line = f"queries rows={rows} query={name} median_ms={ms:.1f}"
            if name in baselines:
                from_rows = median_ms(baselines[name], repeat)
                line += f" from_rows_ms={from_rows:.1f} speedup={from_rows / ms:.0f}x"
            if target is not None:
                line += f" target_ms={target} " + ("ok" if ms <= target else "SLOW")
            print(line, flush=True)
        con.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for rows in args.rows:
        bench(rows, args.repeat)


if __name__ == "__main__":
    main()
