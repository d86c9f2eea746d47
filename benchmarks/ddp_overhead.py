"""Whole-process cost of OnTheFly's Trainer on 2 processes (torchrun, gloo, CPU) vs a plain DDP loop.

Both variants train the same model on the same data with DistributedDataParallel
and a DistributedSampler; runs alternate (plain, onthefly, plain, ...) and the
median wall times of the whole torchrun invocation are compared.

    .venv/bin/python benchmarks/ddp_overhead.py --rounds 3

Prints one line: median seconds of each variant and the ratio onthefly / plain.
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
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    torch.manual_seed(0)
    x, y = torch.randn(8192, 64), torch.randint(0, 10, (8192,))
    data = TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    if variant == "onthefly":
        from onthefly import Trainer

        trainer = Trainer(
            project="bench", max_epochs=epochs, connect_dashboard=False, progress=False, checkpoint_every_n_epochs=0
        )
        trainer.fit(
            model=model,
            optimizer=optimizer,
            loss_fn=loss_fn,
            train_loader=DataLoader(data, batch_size=64, shuffle=True),
        )
        dist.destroy_process_group()
        return
    dist.init_process_group("gloo")
    ddp = nn.parallel.DistributedDataParallel(model)
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = loss_fn(ddp(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # torch's gloo can deadlock tearing down: when the process group dies with the GIL held (the DDP reducer
    # freed at return), its destructor joins a gloo worker that is itself waiting for the GIL to free its last
    # work. Let the workers settle (the sleep releases the GIL) and free the reducer before the group.
    dist.barrier()
    time.sleep(0.2)
    del ddp
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", choices=("plain", "onthefly"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.epochs)
        return
    times: dict[str, list[float]] = {"plain": [], "onthefly": []}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, ONTHEFLY_HOME=home, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        for _ in range(args.rounds):
            for variant in times:
                start = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        "--standalone",
                        "--nproc_per_node",
                        "2",
                        __file__,
                        "--child",
                        variant,
                        "--epochs",
                        str(args.epochs),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    cwd=home,
                    timeout=600,
                )
                times[variant].append(time.perf_counter() - start)
    plain, otf = statistics.median(times["plain"]), statistics.median(times["onthefly"])
    print(
        f"ddp_overhead mlp 2 ranks epochs={args.epochs} rounds={args.rounds}: plain {plain:.2f} s, "
        f"onthefly {otf:.2f} s, ratio {otf / plain:.3f}"
    )


if __name__ == "__main__":
    main()
