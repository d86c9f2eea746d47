"""Runs in a fresh process: trains slowly until a signal arrives (or to the end), then saves the weights.

usage: interrupt_child.py OUT.safetensors [--max-epochs E] [--resume-from REF] [--ready-after N]
Prints `ready` (flushed) once N samples were loaded, so the parent knows an epoch is under way.
"""

import argparse
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from onthefly import Trainer
from tests.trainer.fixtures import build

N, BATCH = 96, 8  # 12 batches an epoch


class SlowData(Dataset):
    def __init__(self, ready_after: int, delay: float) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.loaded, self.ready_after, self.delay = 0, ready_after, delay

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        self.loaded += 1
        if self.loaded == self.ready_after:
            print("ready", flush=True)
        time.sleep(self.delay)
        return self.x[i], self.y[i]


parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--max-epochs", type=int, default=2)
parser.add_argument("--resume-from")
parser.add_argument("--ready-after", type=int, default=0)
parser.add_argument("--delay", type=float, default=0.0)
args = parser.parse_args()

model, optimizer, _ = build()
trainer = Trainer(project="interrupt", max_epochs=args.max_epochs, connect_dashboard=False, progress=False)
trainer.fit(
    model,
    optimizer,
    nn.CrossEntropyLoss(),
    DataLoader(SlowData(args.ready_after, args.delay), batch_size=BATCH, shuffle=True),
    resume_from=args.resume_from,
)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
print("done", flush=True)
trainer.close()
