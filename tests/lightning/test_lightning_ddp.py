"""Lightning on two processes (strategy "ddp" and "ddp_spawn", gloo, CPU): rows, steering and checkpoints."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from lit_models import TinyClassifier, loaders
from lit_models import trainer as make_trainer
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

import onthefly
from onthefly import attach_lightning
from onthefly.lightning.loaders import TrainBatches, track
from onthefly.store.checkpoints.checkpoints import load_checkpoint

CHILD = Path(__file__).with_name("lit_ddp_child.py")
ROOT = Path(__file__).resolve().parents[2]


def launch(folder: Path, epochs: int, strategy: str, *extra: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(CHILD), str(folder), str(epochs), strategy, *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def per_pass(home: Path) -> list[tuple]:
    con = onthefly.sql(home=home)
    return con.execute(
        "SELECT split, epoch, count(*), count(DISTINCT sample_id) FROM samples GROUP BY ALL ORDER BY ALL"
    ).fetchall()


def test_ddp_records_each_sample_once_per_epoch_and_pauses_tests_checkpoints_all_ranks_together(
    tmp_path, isolated_store
):
    folder = tmp_path / "run"
    launch(folder, 3, "ddp", "--steer")
    seen = json.loads((folder / "steered.json").read_text())
    assert seen["paused"] == "paused" and seen["still"] and seen["resumed"] == "running"
    assert seen["test"]["count"] == 20  # rank 0 tests the whole test loader
    # 131 train samples split over two ranks: the sampler's padding sample is trained on, not recorded
    assert per_pass(isolated_store) == [
        ("test", 0, 20, 20),
        ("test", 3, 20, 20),
        ("train", 0, 131, 131),
        ("train", 1, 131, 131),
        ("train", 2, 131, 131),
        ("val", 1, 20, 20),
        ("val", 2, 20, 20),
        ("val", 3, 20, 20),
    ]
    session_dir = next((isolated_store / "sessions").iterdir())
    assert list((session_dir / "ranks" / "1" / "samples").rglob("*.parquet")), "rank 1 writes its own shards"
    assert not (session_dir / "ranks" / "0").exists()
    con = onthefly.sql(home=isolated_store)
    assert con.execute("SELECT epoch, count FROM epochs WHERE split = 'train' ORDER BY epoch").fetchall() == [
        (0, 131),
        (1, 131),
        (2, 131),
    ]  # summaries cover both ranks
    step = seen["checkpoint"]["step"]
    # the manual checkpoint may land on an epoch's last step: compare without an order between the two
    assert sorted(con.execute("SELECT reason, step FROM checkpoints").fetchall()) == sorted(
        [("manual", step), ("epoch", 5), ("epoch", 10), ("epoch", 15), ("final", 15)]
    )
    assert con.execute("SELECT count(*), max(step) FROM steps").fetchall() == [(15, 15)]  # rank 0's step rows
    assert con.execute("SELECT kind FROM events WHERE kind IN ('pause', 'resume') ORDER BY created_at").fetchall() == [
        ("pause",),
        ("resume",),
    ]
    assert con.execute("SELECT name, status FROM runs").fetchall() == [("two-ranks", "finished")]
    final = con.execute("SELECT path FROM checkpoints WHERE reason = 'final'").fetchone()[0]
    assert len(load_checkpoint(session_dir / final).rng["ranks"]) == 2  # written once, every rank's generators


def test_a_ddp_run_resumed_on_both_ranks_from_a_mid_epoch_checkpoint_ends_as_if_uninterrupted(tmp_path, isolated_store):
    launch(tmp_path / "steered", 3, "ddp", "--steer")  # pauses and checkpoints at step 3, in epoch 0
    checkpoint = json.loads((tmp_path / "steered" / "steered.json").read_text())["checkpoint"]
    first = next((isolated_store / "sessions").iterdir()).name
    launch(tmp_path / "resumed", 3, "ddp", "--resume", checkpoint["id"])
    steered = load_file(str(tmp_path / "steered" / "weights.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "weights.safetensors"))
    assert steered.keys() == resumed.keys()
    for name in steered:
        assert torch.equal(steered[name], resumed[name]), f"{name} differs after the resume"
    second = [p for p in (isolated_store / "sessions").iterdir() if p.name != first][0]
    con = onthefly.sql(second.name, home=isolated_store)
    # epoch 0 goes on after 3 of its 5 batches on each rank: 16 + 2 rows on rank 0, 16 + 1 on rank 1
    assert con.execute(
        "SELECT epoch, count(*), count(DISTINCT sample_id) FROM samples WHERE split = 'train' GROUP BY ALL ORDER BY ALL"
    ).fetchall() == [(0, 35, 35), (1, 131, 131), (2, 131, 131)]


def test_ddp_spawn_records_each_sample_once_per_epoch(tmp_path, isolated_store):
    launch(tmp_path / "spawned", 2, "ddp_spawn")
    assert per_pass(isolated_store) == [
        ("test", 2, 20, 20),
        ("train", 0, 131, 131),
        ("train", 1, 131, 131),
        ("val", 1, 20, 20),
        ("val", 2, 20, 20),
    ]
    con = onthefly.sql(home=isolated_store)
    assert con.execute("SELECT reason, step FROM checkpoints ORDER BY step, reason").fetchall() == [
        ("epoch", 5),
        ("epoch", 10),
        ("final", 10),
    ]
    assert con.execute("SELECT name, status FROM runs").fetchall() == [("two-ranks", "finished")]
    assert (tmp_path / "spawned" / "weights.safetensors").exists()  # the trained weights came back to the caller


def test_ddp_spawn_intercepts_an_inline_functional_loss_on_each_rank(tmp_path, isolated_store):
    launch(tmp_path / "spawned", 1, "ddp_spawn", "--functional")
    assert per_pass(isolated_store) == [("test", 1, 20, 20), ("train", 0, 131, 131), ("val", 1, 20, 20)]


def test_split_train_batches_mark_the_samplers_padding_so_the_union_of_ranks_is_each_sample_once():
    data = TensorDataset(torch.arange(11.0))
    recorded = []
    for rank in (0, 1):
        batches = track(DataLoader(data, batch_size=4, shuffle=True), seed=3, split="train")
        batches.distribute(rank=rank, world_size=2, seed=3)
        batches.set_epoch(1)
        for (x,) in batches:
            ids = batches.claim()
            assert torch.equal(torch.from_numpy(ids).float(), x)
            recorded.extend(ids[: batches.unpadded].tolist())
    assert sorted(recorded) == list(range(11))


def test_a_copy_of_the_callback_and_its_loaders_leaves_this_process_state_behind():
    # ddp_spawn sends the trainer with its callbacks and the loaders to each new process by pickling them
    model = TinyClassifier()
    lit = make_trainer(1)
    train, val, _ = loaders()
    otf = attach_lightning(trainer=lit, model=model, project="p", loss_fn=model.loss)
    lit.fit(model, train, val)
    twin = copy.deepcopy(otf)
    assert type(twin) is type(otf) and otf.recorder.opened and not twin.recorder.opened
    assert twin.recorder.control is not otf.recorder.control and twin.session.status()["state"] == "idle"
    assert twin._loss_capture.recorder.inner is twin._loss_plan.loss and twin._loss_plan.owner is twin._module

    batches = track(train, seed=0, split="train")
    batches.set_epoch(2)
    copied = copy.deepcopy(batches)
    assert isinstance(copied, TrainBatches)
    for (x, _y), (x2, _y2) in zip(batches, copied):
        assert np.array_equal(batches.claim(), copied.claim()) and torch.equal(x, x2)
