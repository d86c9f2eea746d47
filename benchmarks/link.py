"""Benchmark of the dashboard link on loopback.

Measures, in one run and side by side:

- the round trip of a ``status`` request (median and p99), against a bare
  TCP echo of a line of the same size on the same machine;
- the cost of ``push_step`` and ``notify`` on the caller's (training) thread
  while a dashboard is connected, against copying the row into a list.

Prints one line. Run from the repository root:

    .venv/bin/python benchmarks/link.py [--requests 2000] [--calls 200000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onthefly.link import DashboardLink
from onthefly.protocol.codec import Response, encode
from onthefly.protocol.spec import HOST
from tests.link.dashboard import DashboardServer, wait_until
from tests.link.handle import CounterHandle


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def echo_round_trips(line: bytes, n: int) -> list[float]:
    """Round trips of ``line`` through a thread that echoes it over loopback TCP."""
    server = socket.create_server((HOST, 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = conn.makefile("rb")
        for received in f:
            conn.sendall(received)
        conn.close()

    threading.Thread(target=echo, daemon=True).start()
    client = socket.create_connection((HOST, port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = client.makefile("rb")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.sendall(line)
        reader.readline()
        times.append(time.perf_counter() - t0)
    client.close()
    server.close()
    return times


def status_round_trips(trainer, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        trainer.request("status")
        times.append(time.perf_counter() - t0)
    return times


def per_call_us(call, n: int, *, rounds: int = 20) -> float:
    """Median over ``rounds`` of the mean cost of ``n`` calls, in microseconds."""
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            call(i)
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="onthefly-bench-")
    os.environ.pop("ONTHEFLY_TOKEN", None)

    handle = CounterHandle()  # not started: the benchmark makes the calls itself
    with DashboardServer() as dash:
        link = DashboardLink(handle, port=dash.port, client_info={"session": "bench"}, printer=lambda _: None)
        link.start()
        trainer = dash.accept()
        wait_until(lambda: link.connected, what="the link")
        status_round_trips(trainer, 100)  # warm up
        rtt = status_round_trips(trainer, args.requests)
        answer = encode(Response("d1", handle.status()))  # a line the size of status's answer
        echo = echo_round_trips(answer, args.requests)

        calls = args.calls // 20
        row = {"step": 0, "epoch": 0, "loss": 0.5, "lr": 0.01}
        baseline: list[dict] = []
        copy_us = per_call_us(lambda i: baseline.append(dict(row)), calls)
        baseline.clear()
        push_us = per_call_us(lambda i: link.push_step({"step": i, "epoch": 0, "loss": 0.5, "lr": 0.01}), calls)
        state = {"state": "running", "step": 0, "epoch": 0}
        notify_us = per_call_us(lambda i: link.notify("state", state), calls)
        link.close()

    rtt_med, rtt_p99 = statistics.median(rtt) * 1e3, percentile(rtt, 0.99) * 1e3
    echo_med = statistics.median(echo) * 1e3
    print(
        f"link: status rtt median {rtt_med:.3f} ms p99 {rtt_p99:.3f} ms "
        f"(bare TCP echo {echo_med:.3f} ms, x{rtt_med / echo_med:.1f}); "
        f"push_step {push_us:.2f} us, notify(state) {notify_us:.2f} us "
        f"(dict copy + append {copy_us:.2f} us, x{push_us / copy_us:.1f} / x{notify_us / copy_us:.1f}); "
        f"requests={args.requests} calls={calls * 20}"
    )


if __name__ == "__main__":
    main()
