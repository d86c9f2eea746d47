"""The dashboard link in front of a real training process.

1. Pause latency: the time from sending `pause` to receiving the `state: paused`
   notification, against the median step time of the same run.
2. Training overhead of a connected dashboard: whole-process wall time of the
   same training with a dashboard connected vs none listening, alternating runs.

    .venv/bin/python benchmarks/link_training.py --rounds 3

The dashboard here is the test dashboard of tests/link/dashboard.py (a real
TCP server speaking docs/protocol.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import sys, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from onthefly import Trainer
torch.manual_seed(0)
x = torch.randn(4096, 3, 32, 32); y = torch.randint(0, 10, (4096,))
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10))
trainer = Trainer(project="bench", max_epochs=int(sys.argv[2]), dashboard_port=int(sys.argv[1]), progress=False)
trainer.fit(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_fn=nn.CrossEntropyLoss(),
            train_loader=DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
"""


def run_child(port: int, epochs: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(epochs)], env=env, cwd=ROOT)


def pause_latency(env: dict, pauses: int) -> None:
    from tests.link.dashboard import DashboardServer, wait_until

    with DashboardServer() as dash:
        proc = run_child(dash.port, 20, env)
        conn = dash.accept(timeout=120)
        wait_until(lambda: len(conn.notifications("steps")) >= 3, timeout=120, what="steps")
        latencies = []
        for _ in range(pauses):
            seen = len(conn.notifications("state"))
            start = time.perf_counter()
            conn.send_request("pause")
            wait_until(
                lambda seen=seen: any(n.params["state"] == "paused" for n in conn.notifications("state")[seen:]),
                timeout=30,
                what="paused",
            )
            latencies.append(time.perf_counter() - start)
            conn.request("resume")
            time.sleep(0.2)
        steps = conn.notifications("steps")
        ms = [d + c for n in steps for d, c in zip(n.params["data_ms"], n.params["compute_ms"])]
        conn.request("stop")
        proc.wait(timeout=120)
    step_ms = statistics.median(ms)
    lat = sorted(latencies)
    print(
        f"link pause latency median_ms={1e3 * statistics.median(lat):.1f} max_ms={1e3 * lat[-1]:.1f} "
        f"step_median_ms={step_ms:.1f} ratio_to_step={1e3 * statistics.median(lat) / step_ms:.2f} pauses={pauses}"
    )


def overhead(env: dict, rounds: int, epochs: int) -> None:
    from tests.link.dashboard import DashboardServer

    times = {"none": [], "connected": []}
    for _ in range(rounds):
        for variant in ("none", "connected"):
            if variant == "connected":
                dash = DashboardServer()
                port = dash.port
            else:
                dash, port = None, 9  # nothing listens: the link keeps retrying in the background
            start = time.perf_counter()
            proc = run_child(port, epochs, env)
            if dash is not None:
                dash.accept(timeout=120)
            proc.wait(timeout=600)
            times[variant].append(time.perf_counter() - start)
            if dash is not None:
                dash.close()
    base = statistics.median(times["none"])
    for variant, values in times.items():
        print(
            f"link overhead variant={variant} median_s={statistics.median(values):.2f} "
            f"ratio={statistics.median(values) / base:.3f} rounds={rounds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pauses", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            ONTHEFLY_HOME=f"{tmp}/store",
            XDG_CONFIG_HOME=f"{tmp}/config",
            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        )
        os.environ["XDG_CONFIG_HOME"] = env["XDG_CONFIG_HOME"]  # the dashboard writes its token there
        pause_latency(env, args.pauses)
        overhead(env, args.rounds, args.epochs)


if __name__ == "__main__":
    main()
