"""A run paused and resumed, tested mid-way, or resumed from a checkpoint in a
new process ends bitwise equal to the uninterrupted run (CPU)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from onthefly import Trainer
from tests.trainer.fixtures import assert_bitwise_equal, build, loaders, weights

EPOCHS = 3


def train(*, during=None, max_epochs=EPOCHS):
    model, optimizer, scheduler = build()
    train_loader, val_loader, test_loader = loaders()
    trainer = Trainer(
        project="det", max_epochs=max_epochs, val_every_n_epochs=1, connect_dashboard=False, progress=False
    )
    worker = None
    if during is not None:
        worker = threading.Thread(target=during, args=(trainer,), daemon=True)
        worker.start()
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
        scheduler=scheduler,
    )
    if worker is not None:
        worker.join(timeout=30)
    trainer.close()
    return weights(model), trainer


def wait_for_step(trainer, step: int) -> None:
    deadline = time.monotonic() + 60
    while trainer.session.status()["step"] < step and time.monotonic() < deadline:
        time.sleep(0.001)


def test_paused_and_resumed_run_matches_the_uninterrupted_one_bitwise():
    reference, _ = train()
    seen = {}

    def pause_then_resume(trainer):
        wait_for_step(trainer, 5)
        seen["paused"] = trainer.session.pause()
        step = trainer.session.status()["step"]
        time.sleep(0.3)
        seen["still"] = trainer.session.status()["step"] == step
        trainer.session.resume()

    paused, _ = train(during=pause_then_resume)
    assert seen["paused"]["state"] == "paused"
    assert seen["still"], "the step advanced while paused"
    assert_bitwise_equal(reference, paused)


def test_a_mid_run_test_does_not_change_the_result():
    reference, _ = train()
    results = []

    def run_test(trainer):
        wait_for_step(trainer, 7)
        results.append(trainer.session.test())

    tested, trainer = train(during=run_test)
    assert results and results[0]["split"] == "test" and results[0]["count"] == 40
    assert_bitwise_equal(reference, tested)


def test_a_run_resumed_from_a_checkpoint_in_a_new_process_matches_bitwise(tmp_path):
    child = Path(__file__).with_name("resume_child.py")

    def run(*args):
        out = subprocess.run([sys.executable, str(child), *args], capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    run(str(tmp_path / "straight.safetensors"), "--max-epochs", str(EPOCHS))
    first = run(str(tmp_path / "first.safetensors"), "--max-steps", "13")  # mid-epoch 2 (10 batches an epoch)
    checkpoint = [line.split("=", 1)[1] for line in first.splitlines() if line.startswith("checkpoint=")][-1]
    run(str(tmp_path / "resumed.safetensors"), "--max-epochs", str(EPOCHS), "--resume-from", checkpoint)
    straight = load_file(tmp_path / "straight.safetensors")
    resumed = load_file(tmp_path / "resumed.safetensors")
    assert_bitwise_equal(straight, resumed)
    assert not all((straight[k] == load_file(tmp_path / "first.safetensors")[k]).all() for k in straight), (
        "the resumed process trained nothing"
    )


def test_an_epoch_checkpoint_written_while_training_goes_on_holds_that_epochs_state(monkeypatch):
    from onthefly.store.checkpoints.checkpoints import CheckpointStore, load_checkpoint

    after_one_epoch, _ = train(max_epochs=1)
    real_commit = CheckpointStore._commit

    def slow_commit(self, pending):
        time.sleep(0.3)  # the next epoch changes the live weights and optimizer state in place meanwhile
        return real_commit(self, pending)

    monkeypatch.setattr(CheckpointStore, "_commit", slow_commit)
    model, optimizer, scheduler = build()
    train_loader, val_loader, _ = loaders()
    trainer = Trainer(project="det", max_epochs=2, val_every_n_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=train_loader,
        val_loader=val_loader,
        scheduler=scheduler,
    )
    store = trainer.recorder.files()
    listed = store.catalog.checkpoints()  # fit returned: every epoch checkpoint is written and listed
    assert [(c.reason, c.epoch) for c in listed] == [("epoch", 1), ("epoch", 2), ("final", 2)]
    first = load_checkpoint(store.checkpoints.path_of(listed[0]), sha256=listed[0].sha256)
    trainer.close()
    assert_bitwise_equal(after_one_epoch, first.model)
