"""Lightning in real processes: the README's script unchanged, and a dashboard steering a run over the link."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import onthefly
from tests.link.dashboard import DashboardServer, link_env, wait_until  # noqa: F401 (fixture)

SEED_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "seed_lightning_script.py"
CHILD = Path(__file__).with_name("lit_child.py")
ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_lightning_script_runs_unchanged_and_fills_the_store(tmp_path):
    env = dict(
        os.environ,
        ONTHEFLY_HOME=str(tmp_path / "store"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        ONTHEFLY_DASHBOARD_PORT="9",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, str(SEED_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    con = onthefly.sql(home=tmp_path / "store")
    per_pass = con.execute(
        "SELECT split, epoch, count(*), count(DISTINCT sample_id) FROM samples GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert per_pass == [
        ("train", 0, 3072, 3072),
        ("train", 1, 3072, 3072),
        ("train", 2, 3072, 3072),
        ("val", 1, 1024, 1024),
        ("val", 2, 1024, 1024),
        ("val", 3, 1024, 1024),
    ]
    assert con.execute("SELECT count(*), max(step) FROM steps").fetchall() == [(72, 72)]
    assert con.execute("SELECT name, status FROM runs").fetchall() == [("lightning-baseline", "finished")]
    assert con.execute("SELECT count(*) FROM checkpoints WHERE reason = 'final'").fetchone() == (1,)
    assert "no test ran" in done.stdout  # do_test_after=True without a test loader says so


def test_a_dashboard_steers_a_lightning_process_and_asks_for_more_epochs(tmp_path, link_env):
    dash = DashboardServer()
    env = dict(os.environ, ONTHEFLY_HOME=str(tmp_path / "store"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(dash.port), "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn = dash.accept(timeout=120)
        assert conn.client["project"] == "lit-link"
        wait_until(lambda: conn.notifications("steps"), timeout=60, what="steps")
        assert conn.request("pause", timeout=30)["state"] == "paused"
        step = conn.request("status")["step"]
        time.sleep(0.3)
        assert conn.request("status")["step"] == step, "the step advanced while paused"
        tested = conn.request("test", timeout=60)
        assert tested["split"] == "test" and tested["count"] == 40
        assert conn.request("resume")["state"] == "running"
        # The end-of-run test, then the process waits; one more epoch, then stop.
        wait_until(
            lambda: conn.request("status")["epoch"] == 2 and conn.request("status")["state"] == "paused",
            timeout=120,
            what="the end-of-run wait",
        )
        conn.request("resume", {"epochs": 1})
        wait_until(
            lambda: conn.request("status")["epoch"] == 3 and conn.request("status")["state"] == "paused",
            timeout=120,
            what="the extra epoch",
        )
        conn.request("stop")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        dash.close()
    assert proc.returncode == 0, err[-3000:]
    assert "fit returned 6" in out  # three test passes of two batches: mid-run, end of run, after the extra epoch
    con = onthefly.sql(home=tmp_path / "store")
    assert con.execute(
        "SELECT epoch, count(DISTINCT sample_id) FROM samples WHERE split = 'train' GROUP BY ALL ORDER BY ALL"
    ).fetchall() == [(0, 160), (1, 160), (2, 160)]
    assert con.execute("SELECT count(*) FROM tests").fetchone() == (3,)
