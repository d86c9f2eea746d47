"""Whole-process cost of attach_lightning: Lightning trainer.fit with and without it.

Each variant runs in its own process on the same model, data and seed; runs
alternate (each variant takes its turn at going first in a round) and the
median wall times are compared. With ``--tensorboard``, a third variant runs
Lightning with its own TensorBoardLogger logging every step, for comparison.

    .venv/bin/python benchmarks/lightning_overhead.py --rounds 5
    .venv/bin/python benchmarks/lightning_overhead.py --rounds 5 --style functional

``--style`` is how the module computes its loss, the same in every variant:
``attribute`` (``self.loss = nn.CrossEntropyLoss()``, called as
``self.loss(...)``; attached with ``loss_fn=model.loss``) or ``functional``
(``F.cross_entropy(...)`` inline in ``training_step``; attached with
``loss_fn=F.cross_entropy``, whose calls OnTheFly intercepts during the fit).

Prints the median seconds of each variant and the ratio attached / plain,
then the median time between consecutive training batches of each (the
per-step cost in the steady state, without the fixed cost of imports,
opening the session and epoch ends), then where each variant's wall time
goes: start (process start to the first training batch: interpreter,
imports, model, attach, fit set-up), fit (first batch to ``trainer.fit``
returning) and exit (from there to the process being gone: interpreter
shutdown, atexit handlers, final garbage collection).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(variant: str, epochs: int, style: str = "attribute") -> None:
    sys.path.insert(0, ROOT)
    import lightning as L

    class StepClock(L.Callback):
        """Both variants: the time between the starts of consecutive training batches (steady state)."""

        def __init__(self):
            self.marks: list[float] = []
            self.first_wall = 0.0

        def on_train_batch_start(self, *args):
            self.marks.append(time.perf_counter())
            if not self.first_wall:
                self.first_wall = time.time()

    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class CNN(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(64 * 8 * 8, 128),
                nn.ReLU(),
                nn.Linear(128, 10),
            )
            self.loss = nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
            if style == "functional":
                loss = F.cross_entropy(self.net(x), y)
            else:
                loss = self.loss(self.net(x), y)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", self.loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    L.seed_everything(0, verbose=False)
    x, y = torch.randn(4096, 3, 32, 32), torch.randint(0, 10, (4096,))
    train = DataLoader(TensorDataset(x[:3584], y[:3584]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[3584:], y[3584:]), batch_size=256)
    model = CNN()
    clock = StepClock()
    logger = False
    if variant == "tensorboard":  # Lightning's own default logger, logging every step like attach_lightning
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(tempfile.mkdtemp(prefix="tb-"), name="bench")
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        callbacks=[clock],
    )
    if variant == "attached":
        from onthefly import attach_lightning

        attach_lightning(
            trainer=trainer,
            model=model,
            project="bench",
            train_loader=train,
            val_loader=val,
            loss_fn=F.cross_entropy if style == "functional" else model.loss,
            connect_dashboard=False,
        )
    trainer.fit(model, train, val)
    fit_done = time.time()
    per_epoch = len(train)
    gaps = [b - a for i, (a, b) in enumerate(zip(clock.marks, clock.marks[1:])) if (i + 1) % per_epoch]
    print(f"first_batch {clock.first_wall!r} fit_done {fit_done!r}")  # wall clock, shared with the parent
    print(f"step_ms {1e3 * statistics.median(gaps):.3f}")  # within epochs: no validation or epoch end inside


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also run Lightning with its TensorBoardLogger (logging every step), no attach",
    )
    parser.add_argument(
        "--style",
        choices=("attribute", "functional"),
        default="attribute",
        help="the module's loss: a held loss module, or F.cross_entropy inline in training_step",
    )
    parser.add_argument("--child", choices=("plain", "attached", "tensorboard"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.epochs, args.style)
        return
    variants = ["plain", "attached"] + (["tensorboard"] if args.tensorboard else [])
    times: dict[str, list[float]] = {v: [] for v in variants}
    steps: dict[str, list[float]] = {v: [] for v in variants}
    phases: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, ONTHEFLY_HOME=home, PYTHONWARNINGS="ignore")
        for round_number in range(args.rounds):
            shift = round_number % len(variants)
            for variant in variants[shift:] + variants[:shift]:  # each variant takes its turn at going first
                start, wall_start = time.perf_counter(), time.time()
                done = subprocess.run(
                    [sys.executable, __file__, "--child", variant, "--epochs", str(args.epochs), "--style", args.style],
                    env=env,
                    check=True,
                    capture_output=True,
                    cwd=home,
                    text=True,
                )
                times[variant].append(time.perf_counter() - start)
                wall_end = time.time()
                steps[variant].append(float(done.stdout.split("step_ms")[-1]))
                marks = done.stdout.split("first_batch")[-1].split()
                first, fit_done = float(marks[0]), float(marks[2])
                phases[variant].append((first - wall_start, fit_done - first, wall_end - fit_done))
    wall = {v: statistics.median(times[v]) for v in variants}
    step = {v: statistics.median(steps[v]) for v in variants}
    print(
        f"lightning_overhead cnn style={args.style} epochs={args.epochs} rounds={args.rounds}: "
        f"plain {wall['plain']:.2f} s"
    )
    for v in variants[1:]:
        print(
            f"  {v}: {wall[v]:.2f} s, ratio {wall[v] / wall['plain']:.3f}; median step {step[v]:.2f} ms "
            f"against {step['plain']:.2f} ms, ratio {step[v] / step['plain']:.3f}"
        )
    for v in variants:
        start, fit, end = (statistics.median(p[i] for p in phases[v]) for i in range(3))
        print(f"  phases {v} (medians): start {start:.2f} s, fit {fit:.2f} s, exit {end:.2f} s")
    for v in variants:
        print(
            f"  runs {v}: "
            + " ".join(f"{t:.2f}" for t in times[v])
            + "  steps: "
            + " ".join(f"{t:.1f}" for t in steps[v])
        )


if __name__ == "__main__":
    main()
