"""The native Trainer on two processes (torchrun, gloo, CPU): rows, steering and resume across ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import onthefly
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.checkpoints.checkpoints import load_checkpoint

CHILD = Path(__file__).with_name("ddp_child.py")


def torchrun(folder: Path, epochs: int, *extra: str, home: Path | None = None) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if home is not None:
        env["ONTHEFLY_HOME"] = str(home)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(CHILD),
        str(folder),
        str(epochs),
        *extra,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    return out


def test_two_ranks_record_each_sample_once_per_epoch_and_pause_test_checkpoint_together(tmp_path, isolated_store):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "steer").touch()
    out = finish(torchrun(folder, 3))
    assert "ddp_wrappers 0" in out  # no wrapper left to free the process group at exit (torch's gloo hang)
    seen = json.loads((folder / "steered.json").read_text())
    assert seen["paused"] == "paused" and seen["still"] and seen["resumed"] == "running"
    assert seen["test"]["count"] == 20  # rank 0 tests the whole test loader
    con = onthefly.sql(home=isolated_store)
    train = con.execute(
        "SELECT epoch, count(*), count(DISTINCT sample_id) FROM samples WHERE split = 'train' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert train == [(0, 131, 131), (1, 131, 131), (2, 131, 131)]  # 131 is odd: the sampler's padding is not recorded
    session_dir = next((isolated_store / "sessions").iterdir())
    assert list((session_dir / "ranks" / "1" / "samples").rglob("*.parquet")), "rank 1 writes its own shards"
    summaries = con.execute("SELECT epoch, count FROM epochs WHERE split = 'train' ORDER BY epoch").fetchall()
    assert summaries == [(0, 131), (1, 131), (2, 131)]
    # the manual checkpoint may land on an epoch's last step: compare without an order between the two
    assert sorted(con.execute("SELECT reason, step FROM checkpoints").fetchall()) == sorted(
        [("manual", seen["checkpoint"]["step"]), ("epoch", 5), ("epoch", 10), ("epoch", 15), ("final", 15)]
    )
    assert con.execute(
        "SELECT split, count(*) FROM samples WHERE split != 'train' GROUP BY ALL ORDER BY ALL"
    ).fetchall() == [("test", 40), ("val", 60)]
    assert con.execute("SELECT count(*), max(step) FROM steps").fetchall() == [(15, 15)]  # rank 0 logs the step metrics
    ck = con.execute("SELECT path FROM checkpoints WHERE reason = 'final'").fetchone()[0]
    data = load_checkpoint(session_dir / ck)
    assert len(data.rng["ranks"]) == 2


def test_a_run_killed_on_both_ranks_resumes_from_its_checkpoint_as_if_uninterrupted(tmp_path, isolated_store):
    killed = torchrun(tmp_path / "killed", 4, "--slow")
    try:
        deadline = time.monotonic() + 90
        while len(list(isolated_store.glob("sessions/*/checkpoints/*/*.safetensors"))) < 2:
            assert killed.poll() is None and time.monotonic() < deadline, "no second checkpoint"
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    session_dir = next((isolated_store / "sessions").iterdir())
    with Catalog.open(session_dir / "catalog.sqlite", readonly=True) as catalog:
        run = catalog.runs()[0]
        latest = catalog.latest_checkpoint(run.id)
    assert latest.epoch in (2, 3)

    resuming = torchrun(tmp_path / "resumed", 4, "--resume", f"{session_dir.name}/{run.id}")
    plain = torchrun(tmp_path / "plain", 4, home=tmp_path / "other-store")  # side by side, apart
    finish(resuming)
    plain_out = finish(plain)
    # The all-reduce of each batch also says whether rank 0 wants the next boundary; when it does not, no step
    # command is broadcast there. What broadcasts remain (set-up, one boundary and the validation loss per epoch,
    # the end) do not grow with the batches: one per boundary would make them at least as many as the batches.
    broadcasts, all_reduces = (int(n) for n in plain_out.split("rank1 broadcasts ")[1].split()[::2][:2])
    assert all_reduces == 20 and broadcasts < all_reduces, (broadcasts, all_reduces)
    resumed = load_file(str(tmp_path / "resumed" / "weights.safetensors"))
    plain = load_file(str(tmp_path / "plain" / "weights.safetensors"))
    assert resumed.keys() == plain.keys()
    for name in plain:
        assert torch.equal(resumed[name], plain[name]), f"{name} differs after the resume"
