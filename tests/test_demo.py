"""The README's first command runs `python -m onthefly.demo`: keep it working."""

import os
import subprocess
import sys


def test_the_quickstart_demo_trains_and_queries_its_session(tmp_path):
    env = dict(
        os.environ,
        ONTHEFLY_HOME=str(tmp_path / "store"),
        ONTHEFLY_DASHBOARD_PORT="9",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    out = subprocess.run(
        [sys.executable, "-m", "onthefly.demo", "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Hardest training samples of epoch 0" in out.stdout
    assert "test loss" in out.stdout
