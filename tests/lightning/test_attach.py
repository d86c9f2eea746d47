"""attach_lightning in-process: rows, steering from another thread, checkpoints and resume."""

from __future__ import annotations

import copy
import threading
import time

import lightning as L
import pytest
import torch
from lit_models import TinyClassifier, dataset, loaders
from lit_models import trainer as make_trainer
from torch import nn

from onthefly.errors import ConfigError
from onthefly.lightning import attach_lightning


def fit(*, epochs: int = 2, drive=None, resume_from=None, do_test_after=False, dropout=0.1, **trainer_kwargs):
    L.seed_everything(0, verbose=False)
    model = TinyClassifier(dropout=dropout)
    train, val, test = loaders()
    trainer = make_trainer(epochs, **trainer_kwargs)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="lit",
        run_name="tiny",
        train_loader=train,
        val_loader=val,
        test_loader=test,
        loss_fn=model.loss,
        do_test_after=do_test_after,
        resume_from=resume_from,
    )
    initial = copy.deepcopy(model.state_dict())
    driver = threading.Thread(target=drive, args=(otf.session,)) if drive else None
    if driver:
        driver.start()
    trainer.fit(model, train, val)
    if driver:
        driver.join(timeout=60)
    return model, otf, initial


def rows(otf, sql):
    return otf.session.query(sql)["rows"]


def test_per_sample_rows_equal_a_hand_computed_reference():
    model, otf, initial = fit(epochs=2, dropout=0.0, num_sanity_val_steps=2)
    x, y = dataset().tensors
    first = rows(otf, "SELECT sample_id, loss FROM samples WHERE split = 'train' AND step = 1 ORDER BY sample_id")
    ids = torch.tensor([r[0] for r in first])
    start = TinyClassifier(dropout=0.0)
    start.load_state_dict(initial)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(start(x[ids]), y[ids], reduction="none")
    assert len(first) == 16
    assert torch.allclose(torch.tensor([r[1] for r in first]), expected, rtol=1e-5, atol=1e-6)

    last_val = rows(
        otf, "SELECT sample_id, loss, pred FROM samples WHERE split = 'val' AND epoch = 2 ORDER BY sample_id"
    )
    ids = torch.tensor([r[0] for r in last_val])
    model.eval()
    with torch.no_grad():
        out = model(x[ids])
    assert torch.allclose(
        torch.tensor([r[1] for r in last_val]),
        nn.functional.cross_entropy(out, y[ids], reduction="none"),
        rtol=1e-5,
        atol=1e-6,
    )
    assert [r[2] for r in last_val] == out.argmax(1).tolist()


def test_every_train_sample_is_recorded_once_per_epoch_and_sanity_checks_are_not():
    _, otf, _ = fit(epochs=2, num_sanity_val_steps=2)
    per_epoch = rows(
        otf, "SELECT split, epoch, count(*), count(DISTINCT sample_id) FROM samples GROUP BY ALL ORDER BY ALL"
    )
    assert per_epoch == [["train", 0, 120, 120], ["train", 1, 120, 120], ["val", 1, 40, 40], ["val", 2, 40, 40]]
    steps = rows(otf, "SELECT count(*), min(step), max(step), count(train_acc), count(lr), count(grad_norm) FROM steps")
    assert steps == [[16, 1, 16, 16, 16, 16]]
    val = otf.session.query("SELECT metrics FROM epochs WHERE split = 'val' ORDER BY epoch")["rows"]
    assert all("val_loss" in r[0] for r in val)


def test_a_query_during_fit_sees_every_row_of_the_steps_done_so_far():
    seen = {}

    def drive(session):
        while session.status()["step"] < 3:
            time.sleep(0.005)
        session.pause()
        step = session.status()["step"]  # paused: no step runs while we look
        seen["step"] = step
        seen["rows"] = session.query("SELECT count(*), max(step) FROM samples WHERE split = 'train'")["rows"]
        session.resume()

    fit(epochs=2, drive=drive)
    # 16 samples a batch; the rows the loop still held were handed to the writer for the query
    assert seen["rows"] == [[16 * seen["step"], seen["step"]]] or seen["step"] == 8 and seen["rows"][0][0] == 120


def test_pause_test_checkpoint_and_resume_from_another_thread_leave_the_run_unchanged():
    seen = {}

    def drive(session):
        while session.status()["step"] < 3:
            time.sleep(0.005)
        seen["paused"] = session.pause()  # lands at the next batch boundary, usually mid-epoch
        step = session.status()["step"]
        time.sleep(0.2)
        seen["still"] = session.status()["step"] == step
        seen["test"] = session.test()
        seen["val"] = session.test(split="val")
        seen["checkpoint"] = session.checkpoint()
        seen["resumed"] = session.resume()

    plain, _, _ = fit(epochs=3)
    steered, otf, _ = fit(epochs=3, drive=drive)
    assert seen["paused"]["state"] == "paused" and seen["still"]
    assert seen["resumed"]["state"] == "running"
    assert seen["test"]["split"] == "test" and seen["test"]["count"] == 40
    assert seen["test"]["metrics"]["test_loss"] == pytest.approx(seen["test"]["loss"], rel=1e-5)
    assert steered.tested_batches == 2  # the module's own test_step ran (Lightning's test loop)
    assert rows(otf, "SELECT count(*), count(DISTINCT sample_id) FROM samples WHERE split = 'test'") == [[40, 40]]
    assert rows(otf, "SELECT split, step FROM tests ORDER BY split") == [
        ["test", seen["test"]["step"]],
        ["val", seen["test"]["step"]],
    ]
    for name, value in plain.state_dict().items():
        assert torch.equal(value, steered.state_dict()[name]), f"{name} changed by the steering"
    ck = seen["checkpoint"]
    assert ck["step"] == seen["test"]["step"] and ck["reason"] == "manual"

    resumed, otf2, _ = fit(epochs=3, resume_from=ck["id"])
    for name, value in plain.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), f"{name} differs after resume"
    first = rows(otf2, "SELECT min(step), count(*) FROM samples WHERE split = 'train' AND epoch = 0")
    if ck["step"] < 8:  # 8 batches an epoch: the resumed run finishes epoch 0
        assert first == [[ck["step"] + 1, 120 - 16 * ck["step"]]]
    else:  # paused after the epoch's last batch: the resumed run starts at epoch 1
        assert first == [[None, 0]]
    lineage = rows(otf2, "SELECT role FROM run_edges")
    assert lineage == [["resumed_from"]]


def test_stop_ends_fit_at_a_batch_boundary_and_marks_the_run_stopped():
    def drive(session):
        while session.status()["step"] < 3:
            time.sleep(0.005)
        session.stop()

    _, otf, _ = fit(epochs=50, drive=drive)
    status = rows(otf, "SELECT status FROM runs")
    assert status == [["stopped"]]
    assert rows(otf, "SELECT max(step) < 40 FROM steps") == [[True]]


def test_do_test_after_runs_lightnings_test_loop_and_records_test_rows():
    model, otf, _ = fit(epochs=1, do_test_after=True)
    assert model.tested_batches == 2
    assert rows(otf, "SELECT count(DISTINCT sample_id) FROM samples WHERE split = 'test'") == [[40]]
    assert rows(otf, "SELECT reason FROM checkpoints ORDER BY step, reason") == [["epoch"], ["final"]]
    assert rows(otf, "SELECT status FROM runs") == [["finished"]]


def test_checkpoints_are_safetensors_holding_lightning_loop_state(tmp_path):
    from safetensors import safe_open

    _, otf, _ = fit(epochs=1)
    path = otf.session.query("SELECT path FROM checkpoints WHERE reason = 'final'")["rows"][0][0]
    folder = otf.session.dir
    with safe_open(str(folder / path), framework="pt") as f:
        keys = set(f.keys())
    assert {"model.net.0.weight", "optimizer.0.state.0.momentum_buffer"} <= keys
    data = otf.recorder.files().checkpoints.load(
        otf.session.query("SELECT id FROM checkpoints WHERE reason = 'final'")["rows"][0][0]
    )
    assert data.extra["lightning"]["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    assert data.scheduler[0]["last_epoch"] == 1


def test_a_loss_the_module_does_not_hold_is_named_with_the_remedy_and_the_fit_goes_on():
    model = TinyClassifier()
    otf = attach_lightning(trainer=make_trainer(), model=model, project="p", loss_fn=nn.CrossEntropyLoss())
    assert otf._loss_plan.strategy == "none" and "self.loss = loss_fn" in otf._loss_plan.reason


def test_attaching_twice_and_fitting_another_model_are_refused():
    model, trainer = TinyClassifier(), make_trainer()
    attach_lightning(trainer=trainer, model=model, project="p")
    with pytest.raises(ConfigError, match="already"):
        attach_lightning(trainer=trainer, model=model, project="p")
    with pytest.raises(ConfigError, match="same LightningModule"):
        trainer.fit(TinyClassifier(), loaders()[0])


def test_the_module_state_dict_keys_do_not_change_while_the_loss_records():
    model = TinyClassifier()
    model.loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    otf = attach_lightning(trainer=make_trainer(), model=model, project="p", loss_fn=model.loss)
    before = set(model.state_dict())
    with otf._loss_in_place():
        assert type(model.loss).__name__ == "RecordingLoss"
        assert set(model.state_dict()) == before
        assert isinstance(copy.deepcopy(model).loss, nn.CrossEntropyLoss)
    assert isinstance(model.loss, nn.CrossEntropyLoss)


def test_clone_names_the_attribute_that_blocks_it_and_model_factory_forms_work():
    model = TinyClassifier()
    otf = attach_lightning(trainer=make_trainer(), model=model, project="p")
    assert torch.equal(otf.clone_model().net[0].weight, model.net[0].weight)
    model.net.stream = (i for i in range(3))
    with pytest.raises(ConfigError, match="net.stream"):
        otf.clone_model()
    for factory in (TinyClassifier, (TinyClassifier, (), {"lr": 0.1}), {"factory": TinyClassifier}):
        other = attach_lightning(trainer=make_trainer(), model=model, project="p", model_factory=factory)
        assert torch.equal(other.clone_model().net[0].weight, model.net[0].weight)


def test_pytorch_lightning_trainers_are_accepted_too():
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 3)
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
            return self.criterion(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Module()
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    otf = attach_lightning(trainer=trainer, model=model, project="p", train_loader=loaders()[0])
    trainer.fit(model)
    assert rows(otf, "SELECT count(DISTINCT sample_id) FROM samples") == [[120]]
