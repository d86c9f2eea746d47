"""Trainer options: gradient accumulation, clipping, schedulers, validation cadence."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from onthefly import Trainer


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def fit(*, batch_size, model=None, lr=0.1, scheduler=None, optimizer=None, val=False, **options):
    torch.manual_seed(3)
    model = model or nn.Linear(6, 2)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = scheduler(optimizer) if callable(scheduler) else scheduler
    trainer = Trainer(project="opts", connect_dashboard=False, progress=False, **options)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(data(), batch_size=batch_size, shuffle=True),
        val_loader=DataLoader(data(32, seed=1), batch_size=16) if val else None,
        scheduler=scheduler,
    )
    steps = trainer.session.query("SELECT step, epoch, lr, grad_norm FROM steps ORDER BY step")["rows"]
    vals = trainer.session.query("SELECT epoch FROM epochs WHERE split = 'val' ORDER BY epoch")["rows"]
    trainer.close()
    return model, steps, vals


def test_two_accumulated_batches_of_8_train_like_one_batch_of_16():
    accumulated, steps_a, _ = fit(batch_size=8, accumulate_grad_batches=2, max_epochs=2)
    whole, steps_w, _ = fit(batch_size=16, max_epochs=2)
    assert len(steps_a) == len(steps_w) == 8
    for a, b in zip(accumulated.parameters(), whole.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_max_steps_stops_mid_epoch_without_a_validation_pass():
    _, steps, vals = fit(batch_size=8, max_steps=5, max_epochs=3, val_every_n_epochs=1, val=True)
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5]
    assert vals == []


def test_validation_runs_every_n_epochs_only():
    _, _, vals = fit(batch_size=16, max_epochs=4, val_every_n_epochs=2, val=True)
    assert vals == [[2], [4]]  # the epoch counter after the pass: validation after epochs 2 and 4
    _, _, none = fit(batch_size=16, max_epochs=2, val=True)
    assert none == []


def test_a_per_step_scheduler_moves_the_learning_rate_every_step():
    _, steps, _ = fit(
        batch_size=16,
        max_epochs=1,
        scheduler_interval="step",
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    assert [round(s[2], 6) for s in steps] == [0.05, 0.025, 0.0125, 0.00625]


def test_an_epoch_scheduler_moves_the_learning_rate_after_each_epoch():
    _, steps, _ = fit(
        batch_size=32, max_epochs=2, scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    )
    assert [round(s[2], 6) for s in steps] == [0.1, 0.1, 0.05, 0.05]


class RecordingPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    def __init__(self, optimizer, seen):
        super().__init__(optimizer, factor=0.5, patience=0)
        self.seen = seen

    def step(self, metrics):
        self.seen.append(float(metrics))
        super().step(metrics)


def test_reduce_on_plateau_gets_the_validation_loss():
    seen: list[float] = []
    model = nn.Linear(6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = RecordingPlateau(optimizer, seen)
    torch.manual_seed(3)
    trainer = Trainer(project="opts", max_epochs=3, val_every_n_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(data(), batch_size=32, shuffle=True),
        val_loader=DataLoader(data(32, seed=1), batch_size=16),
        scheduler=scheduler,
    )
    val_means = [
        r[0] for r in trainer.session.query("SELECT mean FROM epochs WHERE split = 'val' ORDER BY epoch")["rows"]
    ]
    trainer.close()
    assert len(seen) == 3
    assert all(abs(a - b) < 1e-6 for a, b in zip(seen, val_means))


def test_gradient_clipping_bounds_each_update():
    model = nn.Linear(6, 2)
    with torch.no_grad():
        model.weight.mul_(50)  # large logits, large gradients
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, steps, _ = fit(batch_size=64, max_steps=1, max_epochs=1, model=model, lr=1.0, grad_clip_norm=0.5)
    moved = torch.sqrt(sum(((model.state_dict()[k] - before[k]) ** 2).sum() for k in before))
    assert steps[0][3] > 0.5  # the recorded norm is the one before clipping
    assert float(moved) <= 0.5 + 1e-5  # SGD with lr 1: the update is the clipped gradient
