"""Whole-process cost of training under OnTheFly's Trainer vs a plain PyTorch loop.

Each variant runs in its own process on the same model, data and seed; runs
alternate, the order rotating each round (plain, trainer, tensorboard, then
trainer, tensorboard, plain, ...), and the median wall time of each is
compared. Per-sample capture is always on in the Trainer.

    .venv/bin/python benchmarks/overhead.py --model cnn --rounds 5
    .venv/bin/python benchmarks/overhead.py --model mlp --rounds 5

Prints one line per variant: median seconds and the ratio to the plain loop.
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
VARIANTS = ("plain", "trainer", "tensorboard")


def build(model_name: str, samples: int):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    if model_name == "cnn":  # about 10 ms a step on one CPU thread
        x = torch.randn(samples, 3, 16, 16)
        y = torch.randint(0, 10, (samples,))
        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
        batch = 64
    else:
        x = torch.randn(samples, 32)
        y = (x[:, :6].sum(1) > 0).long()
        model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
        batch = 128
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, optimizer, nn.CrossEntropyLoss(), loader


def child(variant: str, model_name: str, samples: int, epochs: int) -> None:
    sys.path.insert(0, ROOT)  # this checkout's onthefly, not whichever is installed
    model, optimizer, loss_fn, loader = build(model_name, samples)
    if variant == "trainer":
        from onthefly import Trainer

        trainer = Trainer(project="bench", max_epochs=epochs, progress=False)
        trainer.fit(model=model, optimizer=optimizer, loss_fn=loss_fn, train_loader=loader)
        trainer.close()
        return
    writer = None
    if variant == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(tempfile.mkdtemp(prefix="tb-bench-"))
    step = 0
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            if writer is not None:
                writer.add_scalar("loss", loss.item(), step)
    if writer is not None:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--child", choices=VARIANTS)
    args = parser.parse_args()
    samples = args.samples or (32768 if args.model == "cnn" else 65536)
    epochs = args.epochs or (8 if args.model == "cnn" else 20)
    if args.child:
        child(args.child, args.model, samples, epochs)
        return
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, ONTHEFLY_HOME=home, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        for round_number in range(args.rounds):
            shift = round_number % len(VARIANTS)  # each variant takes each place in turn: drift hits all alike
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                start = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        variant,
                        "--model",
                        args.model,
                        "--samples",
                        str(samples),
                        "--epochs",
                        str(epochs),
                    ],
                    check=True,
                    env=env,
                )
                times[variant].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    steps = epochs * -(-samples // (64 if args.model == "cnn" else 128))
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        runs = " ".join(f"{t:.2f}" for t in times[variant])
        print(
            f"overhead model={args.model} variant={variant} steps={steps} median_s={median:.2f} "
            f"ms_per_step={1e3 * median / steps:.2f} ratio={median / base:.3f} runs_s=[{runs}]"
        )


if __name__ == "__main__":
    main()
