"""A real Lightning training process for the link test: steps slow enough to steer.

usage: lit_child.py PORT EPOCHS
"""

import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, random_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lit_models import TinyClassifier, trainer

from onthefly import attach_lightning


class SlowData(Dataset):
    def __init__(self, n=240):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i % 16 == 0:
            time.sleep(0.03)
        return self.x[i], self.y[i]


port, epochs = int(sys.argv[1]), int(sys.argv[2])
L.seed_everything(0, verbose=False)
train, val, test = random_split(SlowData(), [160, 40, 40], generator=torch.Generator().manual_seed(0))
model = TinyClassifier()
lit = trainer(epochs)
attach_lightning(
    trainer=lit,
    model=model,
    project="lit-link",
    run_name="steered",
    loss_fn=model.loss,
    test_loader=DataLoader(test, batch_size=20),
    do_test_after=True,
    dashboard_port=port,
)
lit.fit(model, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=20))
print("fit returned", model.tested_batches, flush=True)
