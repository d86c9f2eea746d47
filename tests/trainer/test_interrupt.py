"""Ctrl+C and SIGTERM sent to a real training process: the rows so far are durable, the run is marked
interrupted, one line says how to continue, the process ends with the signal's status, and the
resume it names ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import onthefly

CHILD = Path(__file__).with_name("interrupt_child.py")
ROOT = Path(__file__).resolve().parents[2]
N, BATCH = 96, 8

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, ONTHEFLY_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(home: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHILD), str(out), *args], capture_output=True, text=True, timeout=240, env=child_env(home)
    )


def interrupted_child(home: Path, out: Path, signum: int) -> tuple[int, str, str]:
    """Start a child, wait until its second epoch is under way, send ``signum``; its status and output."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(out), "--ready-after", str(N + 5 * BATCH), "--delay", "0.004"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home),
    )
    try:
        before = []
        for line in proc.stdout:  # epoch lines, then "ready"
            before.append(line)
            if line.strip() == "ready":
                break
        assert before and before[-1].strip() == "ready", before
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
        stdout = "".join(before) + stdout
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_keeps_the_rows_marks_the_run_and_says_how_to_continue(tmp_path, signum):
    home = tmp_path / "home"
    straight = run_child(home / "straight", tmp_path / "straight.safetensors")
    assert straight.returncode == 0, straight.stderr

    code, stdout, stderr = interrupted_child(home, tmp_path / "never.safetensors", signum)
    assert code == -signum, (code, stderr)  # the status of the signal, as without OnTheFly
    assert "done" not in stdout
    name = signal.Signals(signum).name
    lines = [line for line in (stdout + stderr).splitlines() if line.startswith("[onthefly] training interrupted")]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert f"({name})" in line and "every row so far is saved in session" in line
    resume_from = re.search(r'resume_from="([^"]+)"', line).group(1)
    session_id, run_id = resume_from.split("/")
    step = int(re.search(r"at step (\d+)", line).group(1))
    assert N // BATCH < step < 2 * (N // BATCH)  # in the middle of the second epoch

    con = onthefly.sql(session_id, home=home)
    rows = con.sql(
        "SELECT epoch, sample_id, step, loss FROM samples WHERE split = 'train' ORDER BY epoch, step, sample_id"
    ).fetchall()
    assert [r for r in rows if r[0] == 0] and all(r[3] is not None for r in rows)
    assert len({r[1] for r in rows if r[0] == 0}) == N  # the whole first epoch
    assert len([r for r in rows if r[0] == 1]) == (step - N // BATCH) * BATCH  # every step of the second so far
    status = con.sql(f"SELECT status FROM runs WHERE id = '{run_id}'").fetchall()
    assert status == [("interrupted",)]
    con.close()

    resumed = run_child(home, tmp_path / "resumed.safetensors", "--resume-from", resume_from)
    assert resumed.returncode == 0, resumed.stderr
    reference, weights = load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "resumed.safetensors")
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key


def test_the_handlers_are_put_back_after_fit(tmp_path, monkeypatch):
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    monkeypatch.setenv("ONTHEFLY_HOME", str(tmp_path))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    model = nn.Linear(3, 2)
    trainer = onthefly.Trainer("handlers", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4),
    )
    trainer.close()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
