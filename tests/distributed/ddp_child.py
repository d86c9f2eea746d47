"""A native Trainer run under torchrun for the distributed tests.

usage: torchrun --nproc_per_node 2 ddp_child.py TRIGGER_DIR EPOCHS [--slow] [--resume REF]

Rank 0 watches TRIGGER_DIR: a file ``steer`` makes it pause (after step 3),
check that no step passes while paused, test, checkpoint and resume, writing
what it saw to ``steered.json``. At the end rank 0 writes the final weights
to ``weights.safetensors``.
"""

import json
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from onthefly import Trainer


class Data(Dataset):
    def __init__(self, n=171, slow=False):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.slow = slow

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.slow and i % 8 == 0:
            time.sleep(0.02)
        return self.x[i], self.y[i]


def steer(trainer, folder: Path):
    session = trainer.session
    while not (folder / "steer").exists():
        time.sleep(0.01)
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


folder, epochs = Path(sys.argv[1]), int(sys.argv[2])
slow = "--slow" in sys.argv
resume = sys.argv[sys.argv.index("--resume") + 1] if "--resume" in sys.argv else None
torch.manual_seed(0)
train, val, test = random_split(Data(slow=slow), [131, 20, 20], generator=torch.Generator().manual_seed(0))
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
trainer = Trainer(project="ddp", run_name="two-ranks", max_epochs=epochs, do_test_after=True, val_every_n_epochs=1,
                  progress=False)
driver = None
if int(__import__("os").environ.get("RANK", "0")) == 0:
    driver = threading.Thread(target=steer, args=(trainer, folder), daemon=True)
    driver.start()
trainer.fit(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), loss_fn=nn.CrossEntropyLoss(),
            train_loader=DataLoader(train, batch_size=16, shuffle=True), val_loader=DataLoader(val, batch_size=10),
            test_loader=DataLoader(test, batch_size=10), resume_from=resume)
if dist.get_rank() == 0:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    print("session", trainer.session.status()["session"], "run", trainer.session.status()["run"], flush=True)
dist.barrier()
dist.destroy_process_group()
