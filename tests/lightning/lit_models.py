"""A tiny LightningModule and loaders for the Lightning tests (dropout and shuffling on purpose)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split


class TinyClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.05, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
        self.loss = nn.CrossEntropyLoss()
        self.tested_batches = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("loss", loss)
        self.log("train_acc", (self(x).argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", self.loss(self(x), y))

    def test_step(self, batch, _):
        x, y = batch
        self.tested_batches += 1
        self.log("test_loss", self.loss(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def dataset(n: int = 200):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y)


def loaders(n: int = 200, batch_size: int = 16):
    train, val, test = random_split(dataset(n), [n - 80, 40, 40], generator=torch.Generator().manual_seed(1))
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=20),
        DataLoader(test, batch_size=20),
    )


def trainer(max_epochs: int = 2, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)
