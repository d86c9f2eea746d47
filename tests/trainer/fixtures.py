"""Tiny models and loaders for trainer tests (dropout and shuffling on purpose:
they exercise every random number generator a resume must restore)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split


class JitteredDataset(Dataset):
    """Adds a little noise from the global torch RNG to each input, like a random augmentation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] + 0.01 * torch.randn(self.x.shape[1:]), self.y[i]


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def loaders(n: int = 240, batch_size: int = 16, num_workers: int = 0):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    ds = JitteredDataset(x, y)
    train, val, test = random_split(ds, [n - 80, 40, 40], generator=torch.Generator().manual_seed(1))
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers),
        DataLoader(val, batch_size=32),
        DataLoader(test, batch_size=32),
    )


def build(seed: int = 7):
    torch.manual_seed(seed)
    model = DropoutNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
    return model, optimizer, scheduler


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{k} differs"
