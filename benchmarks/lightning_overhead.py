"""Whole-process cost of attach_lightning: Lightning trainer.fit with and without it.

Each variant runs in its own process on the same model, data and seed; runs
alternate (plain, attached, attached, plain, ...) and the median wall times are compared.

    .venv/bin/python benchmarks/lightning_overhead.py --rounds 5

Prints the median seconds of each variant and the ratio attached / plain,
then the median time between consecutive training batches of each (the
per-step cost in the steady state, without the fixed cost of imports,
opening the session and epoch ends).
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


def child(variant: str, epochs: int) -> None:
    sys.path.insert(0, ROOT)
    import lightning as L

    class StepClock(L.Callback):
        """Both variants: the time between the starts of consecutive training batches (steady state)."""

        def __init__(self):
            self.marks: list[float] = []

        def on_train_batch_start(self, *args):
            self.marks.append(time.perf_counter())

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class CNN(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
            )
            self.loss = nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
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
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[clock])
    if variant == "attached":
        from onthefly import attach_lightning

        attach_lightning(trainer=trainer, model=model, project="bench", train_loader=train, val_loader=val,
                         loss_fn=model.loss, connect_dashboard=False)
    trainer.fit(model, train, val)
    per_epoch = len(train)
    gaps = [b - a for i, (a, b) in enumerate(zip(clock.marks, clock.marks[1:])) if (i + 1) % per_epoch]
    print(f"step_ms {1e3 * statistics.median(gaps):.3f}")  # within epochs: no validation or epoch end inside


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--child", choices=("plain", "attached"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.epochs)
        return
    times: dict[str, list[float]] = {"plain": [], "attached": []}
    steps: dict[str, list[float]] = {"plain": [], "attached": []}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, ONTHEFLY_HOME=home, PYTHONWARNINGS="ignore")
        for round_number in range(args.rounds):
            for variant in list(times)[:: 1 if round_number % 2 == 0 else -1]:  # alternate who goes first
                start = time.perf_counter()
                done = subprocess.run([sys.executable, __file__, "--child", variant, "--epochs", str(args.epochs)],
                                      env=env, check=True, capture_output=True, cwd=home, text=True)
                times[variant].append(time.perf_counter() - start)
                steps[variant].append(float(done.stdout.split("step_ms")[-1]))
    plain, attached = statistics.median(times["plain"]), statistics.median(times["attached"])
    runs = "; ".join(f"{v} " + " ".join(f"{t:.2f}" for t in times[v]) for v in times)
    step_plain, step_attached = statistics.median(steps["plain"]), statistics.median(steps["attached"])
    print(f"lightning_overhead cnn epochs={args.epochs} rounds={args.rounds}: plain {plain:.2f} s, "
          f"attached {attached:.2f} s, ratio {attached / plain:.3f} (runs: {runs})")
    print(f"  median step: plain {step_plain:.2f} ms, attached {step_attached:.2f} ms, "
          f"ratio {step_attached / step_plain:.3f} (+{1e3 * (step_attached - step_plain):.0f} us)")


if __name__ == "__main__":
    main()
