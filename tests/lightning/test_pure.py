"""The Lightning adapter's pure functions: what goes into rows and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import torch

from onthefly.lightning.checkpoint import from_store, storable, to_store
from onthefly.lightning.metrics import logged_values, step_loss, step_rows
from onthefly.store.checkpoints.checkpoints import CheckpointData


def test_logged_values_keep_the_stage_own_scalars_only():
    metrics = {
        "loss": torch.tensor(0.5),
        "acc": torch.tensor(0.25),
        "val_loss": torch.tensor(0.7),
        "acc_epoch": 0.3,
        "hist": torch.ones(3),
        "lr": 0.1,
        "test_acc": 1,
    }
    assert logged_values(metrics, stage="train") == {"acc": 0.25}
    assert logged_values(metrics, stage="val") == {"val_loss": torch.tensor(0.7).item()}
    assert logged_values(metrics, stage="test") == {"test_acc": 1.0}


def test_step_loss_reads_a_tensor_or_a_dict():
    loss = torch.tensor(0.5, requires_grad=True) * 1
    held = step_loss(loss)
    assert isinstance(held, torch.Tensor) and not held.requires_grad and float(held) == 0.5  # read later
    assert float(step_loss({"loss": torch.tensor(0.25), "other": 1})) == 0.25
    assert step_loss({"loss": 2}) == 2.0
    assert step_loss(None) is None and step_loss(torch.ones(3)) is None


def test_step_rows_fill_in_the_mean_loss_and_the_gradient_norm_of_each_step():
    held = [
        ({"step": 1, "lr": 0.1}, [torch.tensor(1.0), torch.tensor([3.0])], torch.tensor(2.5)),
        ({"step": 2, "lr": 0.1}, [0.5], None),  # accumulation, or a float logged by hand
        ({"step": 3, "lr": 0.1}, [], torch.tensor(4.0, dtype=torch.float64)),
    ]
    rows = step_rows(held)
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows[:2]] == [(1, 2.0, 2.5), (2, 0.5, None)]
    assert math.isnan(rows[2]["loss"]) and rows[2]["grad_norm"] == 4.0
    assert all(r["lr"] == 0.1 for r in rows) and held[0][0] == {"step": 1, "lr": 0.1}  # held rows untouched
    assert step_rows([]) == []


def test_storable_drops_what_needs_pickling_and_names_it():
    kept, dropped = storable(
        {
            "a": 1,
            "t": torch.ones(2),
            "cls": int,
            "nested": {"ok": (1, 2.0), "bad": object()},
            "arr": np.zeros(2),
            3: "int key",
        }
    )
    assert dropped == ["cls", "nested.bad"]
    assert kept["nested"] == {"ok": (1, 2.0)} and kept[3] == "int key" and torch.equal(kept["t"], torch.ones(2))


def test_lightning_checkpoints_round_trip_through_the_store_parts():
    ck = {
        "state_dict": {"w": torch.ones(2)},
        "optimizer_states": [{"state": {}, "param_groups": []}],
        "lr_schedulers": [],
        "epoch": 2,
        "global_step": 10,
        "loops": {"fit_loop": {"x": 1}},
        "hparams_type": dict,
    }
    parts, dropped = to_store(ck)
    assert dropped == ["hparams_type"] and parts["scheduler"] is None
    back = from_store(
        CheckpointData(
            model=parts["model"],
            optimizer=parts["optimizer"],
            scheduler=parts["scheduler"],
            extra={"lightning": parts["lightning"]},
        )
    )
    assert back["global_step"] == 10 and back["loops"] == {"fit_loop": {"x": 1}} and back["lr_schedulers"] == []
    assert torch.equal(back["state_dict"]["w"], torch.ones(2))
