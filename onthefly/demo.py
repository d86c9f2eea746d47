"""A tiny model and dataset shipped with OnTheFly, and the quickstart job.

``python -m onthefly.demo`` trains the README's minimal script on a built-in
synthetic dataset (no download, no server), then reads back what the session
recorded. The same pieces serve the tests.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

__all__ = ["make_dataset", "make_loaders", "TinyClassifier", "main"]


def make_dataset(n: int = 4096, features: int = 32, *, seed: int = 0) -> TensorDataset:
    """A binary task: is the sum of the first six features positive? With some label noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :6].sum(dim=1) > 0).long()
    flip = torch.rand(n, generator=g) < 0.03  # a few mislabelled samples: the hardest ones
    y[flip] = 1 - y[flip]
    return TensorDataset(x, y)


def make_loaders(n: int = 4096, *, batch_size: int = 128, seed: int = 0, num_workers: int = 0):
    """Train/val/test loaders over ``make_dataset`` split 75/19/6 like the README's script."""
    dataset = make_dataset(n, seed=seed)
    n_train, n_val = int(n * 0.75), int(n * 0.1875)
    train, val, test = random_split(
        dataset, [n_train, n_val, n - n_train - n_val], generator=torch.Generator().manual_seed(seed)
    )
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers),
        DataLoader(val, batch_size=256),
        DataLoader(test, batch_size=256),
    )


class TinyClassifier(nn.Module):
    """The README's two-layer MLP."""

    def __init__(self, features: int = 32, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m onthefly.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--home", default=None, help="store root (default ./.onthefly or $ONTHEFLY_HOME)")
    args = parser.parse_args(argv)

    from . import Trainer, sql

    torch.manual_seed(0)
    train_loader, val_loader, test_loader = make_loaders()
    model = TinyClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    trainer = Trainer(
        project="demo",
        run_name="baseline",
        max_epochs=args.epochs,
        do_test_after=True,
        val_every_n_epochs=1,
        home=args.home,
    )
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
    )

    con = sql(trainer.session.status()["session"], home=args.home)
    print("\nPer-epoch training loss (from the epoch summaries):")
    print(
        con.sql(
            "SELECT epoch, count, round(mean, 4) AS mean, round(p50, 4) AS p50, round(p99, 4) AS p99 "
            "FROM epochs WHERE split = 'train' ORDER BY epoch"
        )
    )
    last = trainer.session.status()["epoch"] - 1
    print(f"Hardest training samples of epoch {last} (label noise shows up here):")
    print(
        con.sql(
            "SELECT sample_id, round(loss, 3) AS loss, label, pred FROM samples "
            "WHERE split = 'train' AND epoch = ? ORDER BY loss DESC LIMIT 5",
            params=[last],
        )
    )
    print(
        f"Session stored in {os.path.relpath(trainer.session.dir)}; `onthefly ls` lists it, `onthefly sql` queries it."
    )
    trainer.close()


if __name__ == "__main__":
    main()
