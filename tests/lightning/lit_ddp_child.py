"""A Lightning run on two CPU processes (gloo) for the multi-process tests.

usage: lit_ddp_child.py FOLDER EPOCHS STRATEGY [--steer] [--resume REF] [--functional]

STRATEGY is "ddp" (Lightning re-runs this script for rank 1) or "ddp_spawn".
With ``--steer`` rank 0 pauses after step 3, checks that no step passes while
paused, tests, checkpoints and resumes, writing what it saw to
``FOLDER/steered.json``. With ``--functional`` the training step calls
``F.cross_entropy`` inline and OnTheFly is given ``loss_fn=F.cross_entropy``.
At the end the weights go to ``FOLDER/weights.safetensors``.
"""

import os
import sys
import threading
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from onthefly import attach_lightning
from tests.ddp_parts import Data, save_weights, split, steer

FUNCTIONAL = "--functional" in sys.argv


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y) if FUNCTIONAL else self.loss(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", self.loss(self(x), y))

    def test_step(self, batch, _):
        x, y = batch
        self.log("test_loss", self.loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main():
    folder, epochs, strategy = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    resume = sys.argv[sys.argv.index("--resume") + 1] if "--resume" in sys.argv else None
    L.seed_everything(0, verbose=False)
    train, val, test = split(Data(delay=0.01 if "--steer" in sys.argv else 0.0))
    model = Model()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="lit-ddp",
        run_name="two-ranks",
        loss_fn=F.cross_entropy if FUNCTIONAL else model.loss,
        test_loader=DataLoader(test, batch_size=10),
        do_test_after=True,
        resume_from=resume,
    )
    if "--steer" in sys.argv and os.environ.get("LOCAL_RANK", "0") == "0":
        threading.Thread(target=steer, args=(otf.session, folder), daemon=True).start()
    trainer.fit(model, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=10))
    if trainer.global_rank == 0:
        save_weights(model, folder)


if __name__ == "__main__":
    main()
