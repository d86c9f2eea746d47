"""A process that saves checkpoints of one run back to back until it is killed.

Run by tests/store/test_checkpoints.py as a subprocess. It creates the
session's catalog and a run, prints ``run <run_id>``, then saves checkpoint
``i`` (step ``i``, model ``{"w": full(n, i)}``) and prints ``saved <i> <id>``
after each, for at most ``--saves`` checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from onthefly.store.catalog.catalog import Catalog
from onthefly.store.checkpoints.checkpoints import CheckpointStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("session_dir", type=Path)
    parser.add_argument("--floats", type=int, default=4 << 20, help="size of the saved tensor")
    parser.add_argument("--saves", type=int, default=500)
    args = parser.parse_args(argv)

    catalog = Catalog.open(args.session_dir / "catalog.sqlite")
    catalog.init_session(args.session_dir.name, "checkpoint-kill")
    run = catalog.add_run(name="killed")
    store = CheckpointStore(args.session_dir, catalog)
    print("run", run.id, flush=True)
    weights = torch.empty(args.floats)
    for step in range(args.saves):
        weights.fill_(float(step))
        info = store.save(
            run_id=run.id, step=step, epoch=0, reason="manual", model={"w": weights}, sampler={"position": step}
        )
        print("saved", step, info.id, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
