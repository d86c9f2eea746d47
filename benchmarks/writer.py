"""Throughput of the ShardWriter against a bare pyarrow write of the same rows.

Run by hand:  .venv/bin/python benchmarks/writer.py --rows 2000000

Prints one line per measurement, each with its ratio measured side by side in
this run (runs alternate; the median of --repeats is reported):

1. rows/s through ShardWriter (log_samples of --batch rows, then close) vs a
   bare ``pyarrow.parquet.write_table`` of the same rows with the same file
   options (zstd, dictionary, statistics, checksums); target >= 0.8x.
2. cost of one ``log_samples`` call on the caller's thread (median µs).
3. compacting one pass made of parts: the pyarrow path the writer uses vs
   a DuckDB ``COPY ... ORDER BY sample_id`` of the same parts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's onthefly, not whichever is installed

from onthefly.store.catalog.catalog import Catalog
from onthefly.store.layout import catalog_path
from onthefly.store.shards.parts import PARQUET_OPTIONS, ROW_GROUP_ROWS
from onthefly.store.shards.schema import concat_sorted, samples_table
from onthefly.store.shards.writer import ShardWriter

COPY_SORTED = (
    "COPY (SELECT * FROM read_parquet($files) ORDER BY sample_id, step) TO '{out}' "
    "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rows})"
)  # the output path and row count are ours, not user input


def make_rows(n: int, *, dataset: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns of ``n`` rows shaped like training: shuffled ids, one epoch after another."""
    rng = np.random.default_rng(seed)
    epochs = -(-n // dataset)
    ids = np.concatenate([rng.permutation(dataset) for _ in range(epochs)])[:n].astype(np.int64)
    label = rng.integers(0, 10, n)
    pred = np.where(rng.random(n) < 0.7, label, rng.integers(0, 10, n))
    return {
        "sample_id": ids,
        "loss": rng.gamma(2.0, 0.5, n).astype(np.float32),
        "label": label,
        "pred": pred,
        "correct": label == pred,
        "margin": rng.normal(size=n).astype(np.float32),
    }


def open_session(root: Path, name: str) -> tuple[Path, Catalog, str]:
    session_dir = root / name
    session_dir.mkdir()
    catalog = Catalog.open(catalog_path(session_dir))
    catalog.init_session(name, "bench")
    return session_dir, catalog, catalog.add_run(name="bench").id


def run_writer(root: Path, name: str, cols: dict, *, batch: int) -> tuple[float, list[float]]:
    """Seconds from the first log_samples to the end of close(), and each call's seconds."""
    session_dir, catalog, run_id = open_session(root, name)
    n = len(cols["loss"])
    calls = []
    writer = ShardWriter(session_dir, catalog)
    clock = time.perf_counter
    start = clock()
    for step, lo in enumerate(range(0, n, batch)):
        sl = slice(lo, lo + batch)
        t = clock()
        writer.log_samples(
            run_id,
            "train",
            0,
            step,
            cols["sample_id"][sl],
            cols["loss"][sl],
            label=cols["label"][sl],
            pred=cols["pred"][sl],
            correct=cols["correct"][sl],
            margin=cols["margin"][sl],
        )
        calls.append(clock() - t)
    writer.close()
    elapsed = clock() - start
    catalog.close()
    return elapsed, calls


def run_bare(root: Path, name: str, cols: dict, *, batch: int) -> float:
    """Seconds to build one table of the same rows and write it with the same options."""
    n = len(cols["loss"])
    start = time.perf_counter()
    steps = np.arange(n, dtype=np.int64) // batch
    table = samples_table(run_id="bench", split="train", epoch=0, step=steps, columns=cols)
    pq.write_table(table, root / f"{name}.parquet", row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
    return time.perf_counter() - start


def compaction(root: Path, cols: dict, *, parts: int, repeats: int) -> tuple[float, float, float]:
    """(end_pass seconds, pyarrow merge seconds, duckdb COPY seconds) over the same parts."""
    session_dir, catalog, run_id = open_session(root, "compaction")
    n = len(cols["loss"])
    with ShardWriter(session_dir, catalog, flush_interval=3600) as writer:
        for step, lo in enumerate(range(0, n, -(-n // parts))):
            sl = slice(lo, lo + -(-n // parts))
            writer.log_samples(
                run_id,
                "train",
                0,
                step,
                cols["sample_id"][sl],
                cols["loss"][sl],
                label=cols["label"][sl],
                pred=cols["pred"][sl],
                correct=cols["correct"][sl],
                margin=cols["margin"][sl],
            )
            writer.flush()
        files = [str(session_dir / s.path) for s in catalog.active_shards("samples")]
        arrow_s, duck_s = [], []
        for _ in range(repeats):  # alternate, as above
            start = time.perf_counter()
            pyarrow_merge(files, root / "merged-pyarrow.parquet")
            arrow_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            with duckdb.connect() as con:
                out = root / "merged-duckdb.parquet"
                con.execute(COPY_SORTED.format(out=out, rows=ROW_GROUP_ROWS), {"files": files})
            duck_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        writer.end_pass(run_id, "train", 0, step).result()
        end_pass_s = time.perf_counter() - start
    catalog.close()
    return end_pass_s, statistics.median(arrow_s), statistics.median(duck_s)


def pyarrow_merge(files: list[str], out: Path) -> None:
    """What the writer does to compact parts: read, concatenate, stable sort, write."""
    tables = [pq.ParquetFile(f, page_checksum_verification=True).read() for f in files]
    table = concat_sorted(tables, "sample_id", constant=("run_id", "split", "epoch"))
    pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dataset", type=int, default=50_000, help="distinct sample ids (one epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", type=int, default=20, help="parts of the pass compacted in line 3")
    args = parser.parse_args()

    cols = make_rows(args.rows, dataset=args.dataset)
    writer_s, bare_s, call_us = [], [], []
    with tempfile.TemporaryDirectory(prefix="otf-bench-writer-") as tmp:
        root = Path(tmp)
        for i in range(args.repeats):  # alternate so drift hits both sides alike
            elapsed, calls = run_writer(root, f"writer{i}", cols, batch=args.batch)
            writer_s.append(elapsed)
            call_us.append(statistics.median(calls) * 1e6)
            bare_s.append(run_bare(root, f"bare{i}", cols, batch=args.batch))
        end_pass_s, arrow_s, duck_s = compaction(root, cols, parts=args.parts, repeats=args.repeats)

    w_rate, b_rate = args.rows / statistics.median(writer_s), args.rows / statistics.median(bare_s)
    print(
        f"writer throughput: {w_rate:,.0f} rows/s via ShardWriter vs {b_rate:,.0f} rows/s bare pyarrow "
        f"= {w_rate / b_rate:.2f}x (target >= 0.80x; {args.rows:,} rows, batch {args.batch}, "
        f"median of {args.repeats})"
    )
    call_ns_row = statistics.median(call_us) * 1e3 / args.batch
    bare_ns_row = statistics.median(bare_s) / args.rows * 1e9
    print(
        f"caller cost: {statistics.median(call_us):.1f} us per log_samples call of {args.batch} rows "
        f"({call_ns_row:.0f} ns/row = {call_ns_row / bare_ns_row:.2f}x the {bare_ns_row:.0f} ns/row of the bare write)"
    )
    print(
        f"compaction of {args.rows:,} rows in {args.parts} parts: pyarrow {arrow_s:.3f} s vs duckdb COPY "
        f"{duck_s:.3f} s = {duck_s / arrow_s:.2f}x duckdb/pyarrow; "
        f"the writer's end_pass (merge + summary + catalog) {end_pass_s:.3f} s"
    )


if __name__ == "__main__":
    main()
