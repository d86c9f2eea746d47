"""Checkpoint save/load throughput against torch.save/torch.load and raw file I/O.

The state is a model of square Linear layers plus its Adam state (about
300 MB by default). Each round runs every method once, in a rotating order,
on the same state; the line printed gives medians and ratios.

Saves: ``save_checkpoint`` (flatten, header, sha256 on a side thread, atomic
write); the raw baseline writes the checkpoint's exact bytes in the same
pieces (header, then each tensor's memory); ``torch.save`` and safetensors'
own ``save_file`` (same tensors, no skeleton, no sha256) write the same
state. Every save goes through the same temp-file, fsync, rename,
fsync-folder sequence as a checkpoint, so all are equally durable. The
sha256 of the bytes in memory is timed too: a save cannot beat it when the
disk is faster than the hash or the hashing thread finds no free core.

Loads: ``load_checkpoint`` with and without sha256 verification,
``torch.load(weights_only=True)``, and a raw ``readinto`` of the file; they
read files just written, so all come from the page cache alike.

Run:
    .venv/bin/python benchmarks/checkpoints.py [--mb 300] [--rounds 9] [--dir PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's onthefly, not whichever is installed

from onthefly.store.checkpoints.checkpoints import load_checkpoint, save_checkpoint
from onthefly.store.checkpoints.tree import flatten


def build_state(megabytes: int) -> tuple[dict, dict]:
    """A model state dict and its Adam state, about ``megabytes`` MB in all."""
    width = 1024
    layer_bytes = width * (width + 1) * 4 * 3  # weights + bias, exp_avg, exp_avg_sq
    layers = max(1, round(megabytes * 2**20 / layer_bytes))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()
    return model.state_dict(), optimizer.state_dict()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Run ``write`` on a temporary path, then fsync, rename, fsync the folder (as a checkpoint does)."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    fsync_path(partial)
    os.replace(partial, path)
    fsync_path(path.parent)


def raw_write(path: Path, chunks: list[memoryview]) -> None:
    with open(path, "wb", buffering=0) as f:
        for chunk in chunks:
            done = 0
            while done < len(chunk):
                done += f.write(chunk[done:])


def raw_read(path: Path, buffer: bytearray) -> None:
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buffer)
        done = 0
        while done < len(view):
            done += f.readinto(view[done:])


def sha256_of(chunks: list[memoryview]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _file_order(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Tensors in the order a checkpoint file holds them (largest element size first)."""
    return sorted(tensors.values(), key=lambda t: -t.element_size())


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="approximate state size in MB")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, optimizer = build_state(args.mb)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        ours, theirs, raw = folder / "ours.safetensors", folder / "theirs.pt", folder / "raw.bin"
        size, sha = save_checkpoint(ours, model=model, optimizer=optimizer)
        buffer = bytearray(size)
        _, tensors = flatten({"model": model, "optimizer": optimizer})
        # The raw write gets the file's exact bytes in the same pieces: the header, then each tensor.
        data = ours.read_bytes()
        header = data[: 8 + int.from_bytes(data[:8], "little")]
        chunks = [memoryview(header)] + [
            memoryview(t.reshape(-1).view(torch.uint8).numpy()) for t in _file_order(tensors) if t.numel()
        ]
        assert b"".join(chunks) == data
        del data

        library = folder / "library.safetensors"
        both = {"model": model, "optimizer": optimizer}
        saves = {
            "ours": lambda: save_checkpoint(ours, model=model, optimizer=optimizer),
            "torch": lambda: atomically(theirs, lambda p: torch.save(both, p)),
            "raw": lambda: atomically(raw, lambda p: raw_write(p, chunks)),
            # safetensors' own writer: the same tensors, without skeleton or sha256
            "library": lambda: atomically(library, lambda p: save_file(tensors, str(p))),
            "sha256": lambda: sha256_of(chunks),  # the hashing alone, in memory
        }
        loads = {
            "ours": lambda: load_checkpoint(ours, sha256=sha),
            "ours_nosha": lambda: load_checkpoint(ours),
            "torch": lambda: torch.load(theirs, weights_only=True),
            "raw": lambda: raw_read(raw, buffer),
        }
        times: dict[str, list[float]] = {f"save_{k}": [] for k in saves} | {f"load_{k}": [] for k in loads}
        for round_ in range(args.rounds):
            for group, methods in (("save", saves), ("load", loads)):
                names = list(methods)
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    times[f"{group}_{name}"].append(timed(methods[name]))
        torch_bytes = theirs.stat().st_size

    mb = size / 2**20
    rate = {key: mb / statistics.median(values) for key, values in times.items()}
    paired = statistics.median(r / o for r, o in zip(times["save_raw"], times["save_ours"]))
    print(
        f"checkpoints {mb:.0f} MB (torch.save file {torch_bytes / 2**20:.0f} MB), medians of {args.rounds}: "
        f"save {rate['save_ours']:.0f} MB/s = {rate['save_ours'] / rate['save_raw']:.2f}x raw "
        f"({rate['save_raw']:.0f}), {rate['save_ours'] / rate['save_torch']:.2f}x torch.save "
        f"({rate['save_torch']:.0f}), {rate['save_ours'] / rate['save_library']:.2f}x safetensors.save_file "
        f"({rate['save_library']:.0f}); per-round median {paired:.2f}x raw; "
        f"sha256 alone {rate['save_sha256']:.0f} MB/s "
        f"| load+sha256 {rate['load_ours']:.0f} MB/s = "
        f"{rate['load_ours'] / rate['load_raw']:.2f}x raw read ({rate['load_raw']:.0f}), "
        f"{rate['load_ours'] / rate['load_torch']:.2f}x torch.load ({rate['load_torch']:.0f}) | "
        f"load without sha256 {rate['load_ours_nosha']:.0f} MB/s = "
        f"{rate['load_ours_nosha'] / rate['load_torch']:.2f}x torch.load"
    )


if __name__ == "__main__":
    main()
