"""Ctrl+C and SIGTERM sent to a real Lightning training process under attach_lightning: the rows so far
are durable, the run is marked interrupted, one line says how to continue, the process ends with the
signal's status, and the resume it names continues."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import onthefly

CHILD = Path(__file__).with_name("lit_interrupt_child.py")
ROOT = Path(__file__).resolve().parents[2]
N, BATCH = 96, 8

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, ONTHEFLY_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_keeps_the_rows_marks_the_run_and_says_how_to_continue(tmp_path, signum):
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "3", str(2 * N + 3 * BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home),
    )
    try:
        before = []
        for line in proc.stdout:
            before.append(line)
            if line.strip() == "ready":
                break
        assert before and before[-1].strip() == "ready", (before, proc.stderr.read() if proc.poll() else "")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signum, (proc.returncode, stderr[-3000:])
    assert "done" not in stdout
    lines = [line for line in (stdout + stderr).splitlines() if line.startswith("[onthefly] training interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert f"({signal.Signals(signum).name})" in line and "every row so far is saved in session" in line
    resume_from = re.search(r'resume_from="([^"]+)"', line).group(1)
    session_id, run_id = resume_from.split("/")

    con = onthefly.sql(session_id, home=home)
    rows = con.sql("SELECT epoch, sample_id, loss FROM samples WHERE split = 'train'").fetchall()
    assert all(loss is not None for _, _, loss in rows)
    assert sorted(sid for epoch, sid, _ in rows if epoch == 0) == list(range(N))  # the first epochs, whole
    assert sorted(sid for epoch, sid, _ in rows if epoch == 1) == list(range(N))
    assert [r for r in rows if r[0] == 2]  # and the third, begun
    assert con.sql(f"SELECT status FROM runs WHERE id = '{run_id}'").fetchall() == [("interrupted",)]
    con.close()

    resumed = subprocess.run(
        [sys.executable, str(CHILD), "3", "0", resume_from],
        capture_output=True,
        text=True,
        timeout=240,
        env=child_env(home),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done" in resumed.stdout
