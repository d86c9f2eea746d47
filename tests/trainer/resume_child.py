"""Runs in a fresh process: train (optionally resuming) and save the final weights.

usage: resume_child.py OUT.safetensors [--max-steps K] [--max-epochs E] [--resume-from REF]
Prints the id of the last checkpoint as `checkpoint=<id>`.
"""

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch import nn

from onthefly import Trainer
from tests.trainer.fixtures import build, loaders

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--max-steps", type=int)
parser.add_argument("--max-epochs", type=int)
parser.add_argument("--resume-from")
args = parser.parse_args()

model, optimizer, scheduler = build()
train, val, _ = loaders()
trainer = Trainer(
    project="resume",
    max_epochs=args.max_epochs,
    max_steps=args.max_steps,
    val_every_n_epochs=1,
    connect_dashboard=False,
    progress=False,
)
trainer.fit(
    model=model,
    optimizer=optimizer,
    loss_fn=nn.CrossEntropyLoss(),
    train_loader=train,
    val_loader=val,
    scheduler=scheduler,
    resume_from=args.resume_from,
)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
print("checkpoint=" + trainer.session.status()["checkpoint"])
trainer.close()
