"""What the native and the Lightning multi-process child scripts share: the data, the split, the steering
sequence rank 0 runs from another thread, and the final weights file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset, random_split


class Data(Dataset):
    """171 samples of 8 features, label ``x[0] > 0``; with ``delay``, every 8th sample takes that long to load."""

    def __init__(self, n: int = 171, delay: float = 0.0) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.delay = delay

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.delay and i % 8 == 0:
            time.sleep(self.delay)
        return self.x[i], self.y[i]


def split(data: Dataset):
    """(train, val, test) of 131, 20 and 20 samples, the same on every rank."""
    return random_split(data, [131, 20, 20], generator=torch.Generator().manual_seed(0))


def steer(session, folder: Path) -> None:
    """Pause after step 3, check that no step passes while paused, test, checkpoint, resume; write what was seen
    to ``folder/steered.json``."""
    while session.status()["step"] < 3:
        time.sleep(0.005)
    seen = {"paused": session.pause()["state"]}
    step = session.status()["step"]
    time.sleep(0.3)
    seen["still"] = session.status()["step"] == step
    seen["test"] = session.test()
    seen["checkpoint"] = session.checkpoint()
    seen["resumed"] = session.resume()["state"]
    (folder / "steered.json").write_text(json.dumps(seen))


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
