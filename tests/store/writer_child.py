"""A training-like process that streams per-sample rows through a ShardWriter.

Run by tests/store/test_writer.py as a subprocess (to be killed, or read from
while it writes). Step ``s`` logs ``batch`` rows with sample ids
``s * batch .. s * batch + batch - 1`` and loss ``sample_id / 1000``. It prints
``flushed <step>`` after each explicit flush, ``ended <epoch>`` after each
train pass closes, and ``done <stats as JSON>`` when it finishes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from onthefly.store.catalog.catalog import Catalog
from onthefly.store.shards.writer import ShardWriter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("session_dir", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--steps", type=int, default=0, help="steps to log; 0 = until killed")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--flush-every", type=int, default=5)
    parser.add_argument("--flush-interval", type=float, default=0.1)
    parser.add_argument("--sleep", type=float, default=0.002, help="seconds of 'compute' per step")
    args = parser.parse_args(argv)

    catalog = Catalog.open(args.session_dir / "catalog.sqlite")
    writer = ShardWriter(args.session_dir, catalog, flush_interval=args.flush_interval)
    step = 0
    while args.steps == 0 or step < args.steps:
        epoch = step // args.steps_per_epoch
        ids = np.arange(step * args.batch, (step + 1) * args.batch, dtype=np.int64)
        writer.log_samples(args.run_id, "train", epoch, step, ids, (ids / 1000).astype(np.float32))
        writer.log_steps(args.run_id, {"step": [step], "loss": [float(step)]})
        if (step + 1) % args.flush_every == 0:
            writer.flush()
            print(f"flushed {step}", flush=True)
        if (step + 1) % args.steps_per_epoch == 0:
            writer.end_pass(args.run_id, "train", epoch, step).result()
            print(f"ended {epoch}", flush=True)
        step += 1
        time.sleep(args.sleep)
    writer.close()
    catalog.close()
    print("done " + json.dumps(writer.stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
