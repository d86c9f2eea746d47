"""A real Lightning training process for the interrupt test: slow enough to be signalled mid-epoch.

usage: lit_interrupt_child.py EPOCHS READY_AFTER [RESUME_FROM]
Prints `ready` (flushed) once READY_AFTER samples were loaded, `done` when fit returns.
"""

import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lit_models import TinyClassifier, trainer

from onthefly import attach_lightning


class SlowData(Dataset):
    def __init__(self, ready_after: int, n: int = 96) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.loaded, self.ready_after = 0, ready_after

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.loaded += 1
        if self.loaded == self.ready_after:
            print("ready", flush=True)
        time.sleep(0.004)
        return self.x[i], self.y[i]


epochs, ready_after = int(sys.argv[1]), int(sys.argv[2])
resume_from = sys.argv[3] if len(sys.argv) > 3 else None
L.seed_everything(0, verbose=False)
model = TinyClassifier()
lit = trainer(epochs)
attach_lightning(
    trainer=lit,
    model=model,
    project="lit-interrupt",
    run_name="interrupted",
    loss_fn=model.loss,
    connect_dashboard=False,
    resume_from=resume_from,
)
lit.fit(model, DataLoader(SlowData(ready_after), batch_size=8, shuffle=True))
print("done", flush=True)
