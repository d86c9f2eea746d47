"""Bundle export and import of a ~1 GB session against a plain copy of the same bytes.

The session is built once: zstd Parquet shards of per-sample rows (random
losses, sorted sample ids, as the writer lays them out) listed in the
catalog, plus safetensors checkpoints of float32 weights and Adam state,
saved through the checkpoint store. About 60% of the bytes are shards.

Each round runs, in alternating order, ``export_session`` (catalog backup,
hard links, the zip with sha256 of every file, fsync, rename) and a plain copy
of the same files with ``shutil.copyfile`` into a fresh folder, each file
fsynced (the bundle is fsynced too, so both are equally durable). Both read
files the previous rounds read, from the page cache alike. The line printed
gives the medians and the median of the per-round ratios copy/export (the
target is >= 0.8), then the median time of ``import_bundle`` (every file
extracted, hashed, fsynced, checked) into a fresh store, the CPU seconds of
export and copy (export computes a sha256 and a CRC-32 of every byte, which
the copy does not: on a busy machine that CPU time, not the disk, sets the
ratio) and the load average.

Run:
    .venv/bin/python benchmarks/bundle.py [--mb 1024] [--rounds 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's onthefly, not whichever is installed

from onthefly.store.bundle.export import export_session
from onthefly.store.bundle.import_ import import_bundle
from onthefly.store.layout import catalog_path, samples_folder
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.shards.parts import PARQUET_OPTIONS, ROW_GROUP_ROWS
from onthefly.store.shards.schema import SAMPLES_SCHEMA

SHARD_ROWS = 1_000_000  # about 7 MB of Parquet a shard
SHARD_SHARE = 0.6


def build_session(store: StoreRoot, megabytes: int) -> tuple[str, list[Path]]:
    """A closed session of about ``megabytes`` MB; returns its id and its data files."""
    rng = np.random.default_rng(0)
    shard_bytes = int(megabytes * SHARD_SHARE) << 20
    with store.open_session("bench", cleanup=False) as session:
        run = session.catalog.add_run(name="bench")
        written, epoch = 0, 0
        while written < shard_bytes:
            ids = np.arange(SHARD_ROWS, dtype=np.int64)
            table = pa.table(
                {
                    "run_id": pa.array([run.id] * SHARD_ROWS),
                    "split": pa.array(["train"] * SHARD_ROWS),
                    "epoch": np.full(SHARD_ROWS, epoch, np.int32),
                    "step": rng.integers(0, 10_000, SHARD_ROWS),
                    "sample_id": ids,
                    "loss": rng.gamma(2.0, 0.5, SHARD_ROWS).astype(np.float32),
                    "label": rng.integers(0, 10, SHARD_ROWS),
                    "pred": rng.integers(0, 10, SHARD_ROWS),
                    "correct": rng.random(SHARD_ROWS) < 0.5,
                    "margin": rng.random(SHARD_ROWS).astype(np.float32),
                    "grad_norm": pa.nulls(SHARD_ROWS, pa.float32()),
                },
                schema=SAMPLES_SCHEMA,
            )
            rel = (samples_folder(run.id, "train") / f"e{epoch:06d}-s000001.parquet").as_posix()
            (session.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, session.dir / rel, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
            size = (session.dir / rel).stat().st_size
            session.catalog.add_shard(
                kind="samples",
                run_id=run.id,
                split="train",
                epoch=epoch,
                path=rel,
                rows=SHARD_ROWS,
                bytes=size,
                min_step=0,
                max_step=9_999,
                level=1,
                sealed=True,
            )
            written += size
            epoch += 1
        checkpoint_bytes = (megabytes << 20) - written
        width = 1024
        per_checkpoint = 3 * width * width * 4 * 8  # 8 layers: weights, exp_avg, exp_avg_sq
        for i in range(max(1, round(checkpoint_bytes / per_checkpoint))):
            model = {f"l{j}.weight": torch.randn(width, width) for j in range(8)}
            state = {
                j: {"exp_avg": torch.randn(width, width), "exp_avg_sq": torch.rand(width, width)} for j in range(8)
            }
            optimizer = {"state": state, "param_groups": [{"lr": 1e-3, "params": list(range(8))}]}
            session.checkpoints.save(run_id=run.id, step=i, epoch=i, reason="epoch", model=model, optimizer=optimizer)
        files = [session.dir / s.path for s in session.catalog.active_shards()]
        files += [session.dir / c.path for c in session.catalog.checkpoints()]
        files.append(catalog_path(session.dir))
        return session.id, files


def plain_copy(files: list[Path], source_root: Path, target: Path) -> None:
    for path in files:
        out = target / path.relative_to(source_root)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    cpu = cpu_seconds()
    wall = timed(fn)
    return wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="session size in MB (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of export and copy (default 5)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temporary folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onthefly-bundle-bench-", dir=args.dir))
    try:
        store = StoreRoot(work / "store")
        session_id, files = build_session(store, args.mb)
        folder = store.session_dir(session_id)
        total = sum(p.stat().st_size for p in files)
        exports, copies, ratios, imports, export_cpu, copy_cpu = [], [], [], [], [], []
        for i in range(args.rounds):
            bundle = work / f"round{i}.zip"
            copy_dir = work / f"copy{i}"

            def export(bundle: Path = bundle) -> None:
                export_session(session_id, store=store, path=bundle)

            def copy(copy_dir: Path = copy_dir) -> None:
                plain_copy(files, folder, copy_dir)

            if i % 2 == 0:
                (e, ec), (c, cc) = measured(export), measured(copy)
            else:
                (c, cc), (e, ec) = measured(copy), measured(export)
            exports.append(e)
            copies.append(c)
            export_cpu.append(ec)
            copy_cpu.append(cc)
            ratios.append(c / e)
            shutil.rmtree(copy_dir)
            target = StoreRoot(work / f"imported{i}")
            imports.append(timed(lambda bundle=bundle, target=target: import_bundle(bundle, store=target)))
            shutil.rmtree(target.root)
            bundle.unlink()
        mb = total / 2**20
        print(
            f"bundle {mb:.0f} MB ({len(files)} files) x{args.rounds}: export {statistics.median(exports):.2f} s "
            f"({mb / statistics.median(exports):.0f} MB/s), copyfile+fsync {statistics.median(copies):.2f} s "
            f"({mb / statistics.median(copies):.0f} MB/s), export speed / copy speed {statistics.median(ratios):.2f} "
            f"(target >= 0.8); import {statistics.median(imports):.2f} s ({mb / statistics.median(imports):.0f} MB/s); "
            f"CPU export {statistics.median(export_cpu):.2f} s, copy {statistics.median(copy_cpu):.2f} s; "
            f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
