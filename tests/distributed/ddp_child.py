"""A native Trainer run under torchrun for the distributed tests.

usage: torchrun --nproc_per_node 2 ddp_child.py TRIGGER_DIR EPOCHS [--slow] [--resume REF]

Rank 0 watches TRIGGER_DIR: a file ``steer`` makes it pause (after step 3),
check that no step passes while paused, test, checkpoint and resume, writing
what it saw to ``steered.json``. At the end rank 0 writes the final weights
to ``weights.safetensors``.
"""

import gc
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from onthefly import Trainer
from tests.ddp_parts import Data, save_weights, split, steer


def steer_on_request(trainer, folder: Path) -> None:
    while not (folder / "steer").exists():
        time.sleep(0.01)
    steer(trainer.session, folder)


folder, epochs = Path(sys.argv[1]), int(sys.argv[2])
slow = "--slow" in sys.argv
resume = sys.argv[sys.argv.index("--resume") + 1] if "--resume" in sys.argv else None
torch.manual_seed(0)
train, val, test = split(Data(delay=0.02 if slow else 0.0))
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
trainer = Trainer(
    project="ddp", run_name="two-ranks", max_epochs=epochs, do_test_after=True, val_every_n_epochs=1, progress=False
)
calls = {"broadcast": 0, "all_reduce": 0}  # the Python-level collectives (DDP's gradient buckets are not)


def counted(name):
    real = getattr(dist, name)

    def call(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    return call


dist.broadcast, dist.all_reduce = counted("broadcast"), counted("all_reduce")
driver = None
if int(__import__("os").environ.get("RANK", "0")) == 0:
    driver = threading.Thread(target=steer_on_request, args=(trainer, folder), daemon=True)
    driver.start()
trainer.fit(
    model=model,
    optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
    loss_fn=nn.CrossEntropyLoss(),
    train_loader=DataLoader(train, batch_size=16, shuffle=True),
    val_loader=DataLoader(val, batch_size=10),
    test_loader=DataLoader(test, batch_size=10),
    resume_from=resume,
)
if dist.get_rank() == 0:
    save_weights(model, folder)
    print("session", trainer.session.status()["session"], "run", trainer.session.status()["run"], flush=True)
    # The trainer's DistributedDataParallel is gone before the script destroys the group (see Trainer._unwrap).
    wrappers = [o for o in gc.get_objects() if isinstance(o, torch.nn.parallel.DistributedDataParallel)]
    print("ddp_wrappers", len(wrappers), flush=True)
else:
    print("rank1 broadcasts", calls["broadcast"], "all_reduces", calls["all_reduce"], flush=True)
dist.barrier()
dist.destroy_process_group()
