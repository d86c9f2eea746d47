"""Create a session store holding one run of N step rows, for the first-render benchmark.

    .venv/bin/python extension/bench/make_store.py HOME [N]

Prints the session id. Uses the store's own writer, like a training run.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from onthefly.store.lifecycle import Store


def main() -> None:
    home = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    store = Store(home)
    with store.open_session("bench", cleanup=False) as session:
        run = session.catalog.add_run(name="million-steps", status="finished")
        rng = np.random.default_rng(0)
        chunk = 100_000
        for start in range(0, n, chunk):
            step = np.arange(start + 1, min(n, start + chunk) + 1, dtype=np.int64)
            loss = 2.0 * np.exp(-step / (n / 5)) + 0.05 * rng.standard_normal(len(step)) + 0.1
            session.writer.log_steps(
                run.id,
                {
                    "step": step.tolist(),
                    "epoch": (step // max(1, n // 100)).tolist(),
                    "loss": loss.tolist(),
                    "lr": (1e-3 * (0.5 + 0.5 * np.cos(math.pi * step / n))).tolist(),
                    "grad_norm": np.abs(rng.standard_normal(len(step))).tolist(),
                    "samples_per_s": (1000 + 10 * rng.standard_normal(len(step))).tolist(),
                    "rss_mb": np.full(len(step), 512.0).tolist(),
                    "time": (1.7e9 + step * 0.01).tolist(),
                },
            )
        session.writer.flush()
        print(session.id)


if __name__ == "__main__":
    main()
