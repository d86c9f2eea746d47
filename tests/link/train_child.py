"""A real training process for the link tests: slow enough steps to steer.

usage: train_child.py PORT [EPOCHS]
"""

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from onthefly import Trainer


class SlowData(Dataset):
    def __init__(self, n=512):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 16, generator=g)
        self.y = (self.x[:, :4].sum(1) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i % 16 == 0:
            time.sleep(0.04)  # about 40 ms a batch of 16: an epoch takes about a second
        return self.x[i], self.y[i]


port = int(sys.argv[1])
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
torch.manual_seed(0)
train, val, test = random_split(SlowData(), [384, 64, 64], generator=torch.Generator().manual_seed(0))
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
trainer = Trainer(
    project="link",
    run_name="steered",
    max_epochs=epochs,
    do_test_after=True,
    val_every_n_epochs=1,
    dashboard_port=port,
    progress=False,
)
trainer.fit(
    model=model,
    optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
    loss_fn=nn.CrossEntropyLoss(),
    train_loader=DataLoader(train, batch_size=16, shuffle=True),
    val_loader=DataLoader(val, batch_size=32),
    test_loader=DataLoader(test, batch_size=32),
)
print("fit returned", flush=True)
