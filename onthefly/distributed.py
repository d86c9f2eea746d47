"""Training on several processes (``torchrun``): ranks, step-boundary control, per-rank shards.

The rules, in one place:

- **Rank 0 leads.** It owns the session's catalog, its checkpoints and the
  dashboard link. At every batch boundary it sends every rank one small
  command tensor (:class:`Collective.command`): go on, stop, hold (paused),
  run a test, take a checkpoint. All ranks therefore pause, test, checkpoint
  and stop at the same step, and none is left waiting inside a collective.
- **Every rank writes its own rows.** Rank ``r > 0`` writes its per-sample
  Parquet shards under ``ranks/<r>/`` of the session folder, listed in a
  catalog of its own (:class:`RankFiles`); readers list the shards of every
  rank catalog next to the session's (see :mod:`onthefly.store.read.query`).
  :func:`distributed_loader` gives each rank a disjoint part of the data; the
  padding ``DistributedSampler`` adds to even out ranks is trained on but not
  recorded (:func:`recorded_count`), so the union holds each sample exactly
  once per epoch.
- **Checkpoints are written once**, by rank 0, with every rank's RNG state;
  a resume restores each rank's own.

Messages between ranks are tensors (JSON bytes for structured values): nothing
is pickled.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .errors import ConfigError
from .store.catalog.catalog import Catalog
from .store.layout import catalog_path, rank_catalogs, rank_dir
from .store.records import EpochSummary, PassKey
from .store.shards.parts import pass_summary, read_parquet
from .store.shards.schema import SAMPLES_SCHEMA
from .store.shards.writer import ShardWriter

__all__ = [
    "CHECKPOINT",
    "GO",
    "HOLD",
    "STOP",
    "TEST",
    "Collective",
    "DistInfo",
    "RankFiles",
    "detect",
    "distributed_loader",
    "pack_rng",
    "recorded_count",
    "union_pass_summary",
    "unpack_rng",
]

GO, STOP, HOLD, TEST, CHECKPOINT = 0, 1, 2, 3, 4
"""Command codes rank 0 sends at a batch boundary."""

_TIMEOUT = datetime.timedelta(hours=6)  # a paused run must not time out the process group


@dataclass(frozen=True)
class DistInfo:
    """This process' place in a multi-process run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def leader(self) -> bool:
        """True on rank 0, which owns the catalog, the checkpoints and the link."""
        return self.rank == 0


def detect(*, environ: dict[str, str] | None = None, init: bool = True) -> DistInfo | None:
    """The multi-process setting of this process, or None for a single process.

    Uses an initialised ``torch.distributed`` process group, else the
    variables ``torchrun`` sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); in
    the latter case the process group is initialised here (NCCL with CUDA,
    gloo otherwise) when ``init`` is true.

    Example:
        >>> detect(environ={}, init=False) is None
        True
    """
    env = os.environ if environ is None else environ
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() < 2:
            return None
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", dist.get_rank())), str(dist.get_backend())
        )
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world < 2:
        return None
    if not init or not dist.is_available():
        return None
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", "0")), backend)


class Collective:
    """Small messages between the ranks, all from or to rank 0.

    Every method is a collective: all ranks call it, in the same order.

    Args:
        info: this process' rank and world size.
        device: where message tensors live (the GPU for NCCL, else the CPU).
    """

    def __init__(self, info: DistInfo, device: torch.device | None = None) -> None:
        self.info = info
        if device is None:
            device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
        self.device = device

    def command(self, code: int = GO, arg: int = 0) -> tuple[int, int]:
        """Rank 0's ``(code, arg)`` reaches every rank (what other ranks pass is ignored)."""
        message = torch.tensor([code, arg], dtype=torch.int64, device=self.device)
        dist.broadcast(message, src=0)
        code, arg = message.tolist()
        return int(code), int(arg)

    def step_agreement(self, finite: bool, boundary: bool) -> tuple[bool, bool]:
        """One all-reduce a batch: whether every rank's loss is finite, and whether rank 0
        wants the next batch boundary (what other ranks pass for ``boundary`` is ignored).

        When rank 0 wants nothing there, every rank passes that boundary without the
        step command: one collective a batch instead of two.
        """
        wanted = 1 if boundary and self.info.leader else 0
        value = torch.tensor([0 if finite else 1, wanted], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        nonfinite, wanted = value.tolist()
        return not nonfinite, bool(wanted)

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def broadcast_float(self, value: float | None) -> float | None:
        """Rank 0's float (or None) on every rank."""
        message = torch.tensor(
            [float("nan") if value is None else float(value), 0.0 if value is None else 1.0],
            dtype=torch.float64,
            device=self.device,
        )
        dist.broadcast(message, src=0)
        number, present = message.tolist()
        return number if present else None

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able value on every rank."""
        data = json.dumps(value).encode() if self.info.leader else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.info.leader:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return json.loads(bytes(buffer.cpu().tolist()).decode())

    def gather_json(self, value: Any) -> list[Any] | None:
        """Every rank's JSON-able value, in rank order, on rank 0 (None elsewhere)."""
        data = json.dumps(value).encode()
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.info.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(s.item()) for s in sizes)
        buffer = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        buffers = [torch.zeros_like(buffer) for _ in range(self.info.world_size)]
        dist.all_gather(buffers, buffer)
        if not self.info.leader:
            return None
        return [json.loads(bytes(b[: int(s.item())].cpu().tolist()).decode()) for b, s in zip(buffers, sizes)]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        dist.barrier()


def distributed_loader(loader: DataLoader, *, rank: int, world_size: int, seed: int) -> DataLoader:
    """``loader`` itself when it already has a ``DistributedSampler``, else the same loader over one.

    The sampler made here shuffles when the user's loader did (a
    ``RandomSampler``), with ``seed``; its order is a function of (seed, epoch).

    Raises:
        ConfigError: for a loader with a custom batch sampler or sampler, which
            cannot be split between ranks without knowing its logic.

    Example:
        >>> part = distributed_loader(DataLoader(range(10), batch_size=2), rank=1, world_size=2, seed=0)
        >>> list(part.sampler)[:3]
        [1, 3, 5]
    """
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    custom_batches = type(loader.batch_sampler).__name__ != "BatchSampler"
    custom_sampler = type(loader.sampler).__name__ not in ("RandomSampler", "SequentialSampler")
    if custom_batches or custom_sampler:
        raise ConfigError(
            f"the train loader uses a {type(loader.batch_sampler if custom_batches else loader.sampler).__name__}, "
            "which OnTheFly cannot split between ranks: build the DataLoader with "
            "sampler=DistributedSampler(dataset, shuffle=...) yourself"
        )
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=False,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        persistent_workers=loader.persistent_workers,
    )


def recorded_count(sampler: Any, *, rank: int) -> int | None:
    """How many of this rank's samples per epoch are real (the rest is ``DistributedSampler`` padding).

    ``DistributedSampler`` without ``drop_last`` repeats the first samples of
    the epoch's order so every rank gets as many; rank ``r`` takes positions
    ``r, r + world, ...`` of the padded order, so its real samples are its
    first ``len(range(r, n, world))``. None for other samplers.

    Example:
        >>> recorded_count(DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False), rank=1)
        2
    """
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(rank, len(sampler.dataset), sampler.num_replicas))


class RankFiles:
    """Where rank ``r > 0`` writes: ``<session>/ranks/<r>/`` with its own catalog and shard writer.

    Only this rank's process writes there; the session's catalog stays rank 0's.
    Readers find the folder through :func:`rank_catalogs`.

    Args:
        session_dir: the session folder rank 0 opened.
        session_id / project: the session's id and project.
        rank: this process' rank (> 0).
    """

    def __init__(self, session_dir: Path, *, session_id: str, project: str, rank: int) -> None:
        self.id = session_id
        self.session_dir = Path(session_dir)
        self.dir = rank_dir(self.session_dir, rank)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog.open(catalog_path(self.dir))
        self.catalog.init_session(session_id, project, meta={"rank": rank})
        self.writer = ShardWriter(self.dir, self.catalog)

    def add_run(self, run_id: str, name: str) -> None:
        """Record rank 0's run here too, so this rank's shards and summaries belong to it."""
        if run_id not in {r.id for r in self.catalog.runs()}:
            self.catalog.add_run(run_id=run_id, name=name)

    def flush(self) -> None:
        """Wait until this rank's queued rows are written (it writes no checkpoints)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.catalog.close()


def union_pass_summary(
    session_dir: Path, catalog: Catalog, key: PassKey, step: int, metrics: dict | None
) -> EpochSummary:
    """The summary of one pass over the rows of every rank, stored in the session catalog.

    Call on rank 0 once every rank has sealed the pass (after a barrier).
    """
    folder = Path(session_dir)
    sources = [(folder, s.path) for s in catalog.active_shards("samples") if (s.run_id, s.split, s.epoch) == key]
    for prefix, path in rank_catalogs(folder):
        with Catalog.open(path, readonly=True) as rank_catalog:
            sources += [
                (folder / prefix, s.path)
                for s in rank_catalog.active_shards("samples")
                if (s.run_id, s.split, s.epoch) == key
            ]
    tables = [read_parquet(base / rel, rel).select(SAMPLES_SCHEMA.names) for base, rel in sources]
    table = pa.concat_tables(tables) if tables else SAMPLES_SCHEMA.empty_table()
    return catalog.add_epoch(pass_summary(key, step, table, dict(metrics or {})))


def pack_rng(state: dict[str, Any]) -> dict[str, Any]:
    """A captured RNG state as JSON-able values (to send it between ranks)."""
    numpy = state["numpy"]
    packed = {
        "python": state["python"],
        "numpy": {**numpy, "keys": np.asarray(numpy["keys"]).tolist()},
        "torch": state["torch"].tolist(),
    }
    if "cuda" in state:
        packed["cuda"] = [s.tolist() for s in state["cuda"]]
    return packed


def unpack_rng(packed: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`pack_rng`: arrays and tensors again."""
    state = {
        "python": packed["python"],
        "numpy": {**packed["numpy"], "keys": np.asarray(packed["numpy"]["keys"], dtype=np.uint32)},
        "torch": torch.tensor(packed["torch"], dtype=torch.uint8),
    }
    if "cuda" in packed:
        state["cuda"] = [torch.tensor(s, dtype=torch.uint8) for s in packed["cuda"]]
    return state
