"""The dashboard link in front of a REAL training process (a subprocess running
the Trainer), driven by the test dashboard over a real socket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import onthefly
from tests.link.dashboard import DashboardServer, RpcError, link_env, wait_until  # noqa: F401 (fixture)

CHILD = Path(__file__).with_name("train_child.py")


@pytest.fixture
def trainer_process(tmp_path, link_env):
    procs = []

    def start(port: int, epochs: int = 4) -> subprocess.Popen:
        env = dict(os.environ, ONTHEFLY_HOME=str(tmp_path / "store"))
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(port), str(epochs)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_dashboard_steers_a_real_training_process(trainer_process, tmp_path):
    dash = DashboardServer()
    proc = trainer_process(dash.port, epochs=8)
    conn = dash.accept(timeout=60)
    assert conn.client["project"] == "link" and conn.client["pid"] == proc.pid
    wait_until(lambda: conn.notifications("steps"), timeout=60, what="steps")

    paused = conn.request("pause", timeout=30)
    assert paused["state"] == "paused"
    step = conn.request("status")["step"]
    time.sleep(0.3)
    assert conn.request("status")["step"] == step, "the step advanced while paused"
    assert conn.request("resume")["state"] == "running"
    wait_until(lambda: conn.request("status")["step"] > step, timeout=30, what="steps after resume")

    tested = conn.request("test", timeout=60)
    assert tested["split"] == "test" and tested["count"] == 64 and tested["loss"] > 0

    wait_until(
        lambda: [n for n in conn.notifications("epoch") if n.params["split"] == "train"],
        timeout=60,
        what="a training epoch summary",
    )
    report = conn.request("report", {"split": "train"}, timeout=30)
    assert report["count"] == 384 and len(report["hardest"]) == 20
    rows = conn.request(
        "query", {"sql": "SELECT count(DISTINCT sample_id) FROM samples WHERE split = 'train' AND epoch = 0"}
    )
    assert rows["rows"] == [[384]]
    with pytest.raises(RpcError) as refused:
        conn.request("query", {"sql": "COPY (SELECT 1) TO 'x.csv'"})
    assert refused.value.code < 0

    exported = conn.request("export", {"path": str(tmp_path / "live.zip")}, timeout=120)
    assert exported["path"] == str(tmp_path / "live.zip") and exported["runs"] == 1 and exported["files"] > 3
    assert (tmp_path / "live.zip").stat().st_size == exported["bytes"]

    # The dashboard goes away mid-run and a new one on the same port picks the run up again.
    port = dash.port
    dash.close()
    time.sleep(0.5)
    dash2 = DashboardServer(port=port)
    conn2 = dash2.accept(timeout=30)
    state = wait_until(lambda: conn2.notifications("state"), timeout=30, what="the snapshot")[0]
    assert state.params["run"] == conn.client["run"] or state.params["session"] == conn.client["session"]

    # The run finishes its epochs, runs the test, then stays open (paused) until the dashboard stops it.
    wait_until(
        lambda: conn2.request("status")["epoch"] == 8 and conn2.request("status")["state"] == "paused",
        timeout=120,
        what="the end-of-run test and the wait",
    )
    conn2.request("stop")
    out, err = proc.communicate(timeout=60)
    dash2.close()
    assert proc.returncode == 0, err[-3000:]
    assert out.count(f"[onthefly] dashboard connected on tcp://127.0.0.1:{port}") == 2

    con = onthefly.sql(home=tmp_path / "store")
    assert con.execute("SELECT status FROM runs").fetchall() == [("finished",)]
    assert con.execute("SELECT count(DISTINCT epoch) FROM samples WHERE split = 'train'").fetchone() == (8,)
    assert con.execute("SELECT count(*) FROM tests").fetchone()[0] == 2
