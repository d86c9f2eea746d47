"""The loaders Lightning iterates: the user's batches, their sample ids on the side.

Lightning iterates a :class:`LightningBatches` like any iterable of batches and
sees exactly the batches the user's ``DataLoader`` makes. Underneath, a
:class:`~onthefly.session.sampling.TrackedLoader` records the dataset indices
its batch sampler hands out; they wait in a first-in first-out queue until the
callback claims them at the start of the batch they belong to (a loader
delivers batches in the order its batch sampler produced them, so prefetching
by Lightning or by worker processes keeps the pairing right).

On several processes the train loader is split between ranks before it is
tracked (:meth:`LightningBatches.distribute`): Lightning never sees a
``DataLoader`` it could give a sampler of its own, so the ids recorded are the
ids each rank trains on. The padding ``DistributedSampler`` adds to even out
ranks is trained on but marked as not to be recorded (:attr:`LightningBatches.unpadded`).

The train loader also speaks Lightning's stateful-loader protocol
(``state_dict`` / ``load_state_dict``), so a checkpoint taken in the middle of
an epoch resumes at the next batch instead of replaying the epoch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..distributed import distributed_loader, recorded_count
from ..errors import ConfigError
from ..session.sampling import TrackedLoader, unpadded

__all__ = ["LightningBatches", "TrainBatches", "track"]


class LightningBatches:
    """An iterable of the user's batches whose sample ids the callback claims.

    Args:
        loader: the user's ``DataLoader`` (left unchanged).
        seed: the run's seed; with ``epoch`` it sets the data order.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Example:
        >>> batches = LightningBatches(DataLoader(data, batch_size=4), seed=0, split="val")  # doctest: +SKIP
        >>> first = next(iter(batches)); batches.claim()                                     # doctest: +SKIP
        array([0, 1, 2, 3])
    """

    def __init__(self, loader: DataLoader, *, seed: int, split: str) -> None:
        self.tracked = TrackedLoader(loader, seed=seed)
        self.user_loader = loader
        self._seed = seed
        self.split = split
        self._ids: deque[np.ndarray] = deque()
        self._epoch = 0
        self._skip = 0
        self.consumed = 0  # batches of the current iteration claimed by the loop
        self.recorded: int | None = None  # several processes: this rank's real (unpadded) samples per epoch
        self.unpadded = 0  # how many of the last claimed batch's samples are real
        self._seen = 0

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn sends the loaders to new processes: the tracking (its generator, ids in flight) is made anew
        # there, from the user's loader, and split between ranks again.
        state = dict(vars(self))
        state["tracked"] = None
        state["_ids"] = deque()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.tracked = TrackedLoader(self.user_loader, seed=self._seed)

    def distribute(self, *, rank: int, world_size: int, seed: int) -> None:
        """Iterate this rank's part of the user's loader from now on (a ``DistributedSampler`` split).

        The user's own ``DistributedSampler`` is kept; otherwise one is made
        (shuffling when the loader shuffled, seeded with ``seed``).

        Raises:
            ConfigError: for a loader with a custom sampler that cannot be split.

        Example:
            >>> batches.distribute(rank=1, world_size=2, seed=0)  # doctest: +SKIP
        """
        part = distributed_loader(self.user_loader, rank=rank, world_size=world_size, seed=seed)
        self.tracked = TrackedLoader(part, seed=seed)
        self.recorded = recorded_count(part.sampler, rank=rank)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return self._epoch

    @property
    def batch_size(self) -> int | None:
        """The user's batch size (Lightning reads it for logging)."""
        return self.tracked.batch_size

    @property
    def dataset(self) -> Any:
        """The user's dataset."""
        return self.user_loader.dataset

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (its order depends on (seed, epoch) only)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.tracked)

    def __iter__(self) -> Iterator[Any]:
        self._ids.clear()
        self.tracked.set_epoch(self._epoch)
        skip, self._skip = self._skip, 0
        if skip:
            self.tracked.skip_batches(skip)
        self.consumed = skip
        self._seen = skip * (self.batch_size or 0)
        for ids, batch in self.tracked:
            self._ids.append(ids)
            yield batch

    def claim(self) -> np.ndarray | None:
        """The sample ids of the next batch the loop takes (None when none is waiting)."""
        if not self._ids:
            return None
        self.consumed += 1
        ids = self._ids.popleft()
        self.unpadded = unpadded(len(ids), seen=self._seen, recorded=self.recorded)
        self._seen += len(ids)
        return ids


class TrainBatches(LightningBatches):
    """The train loader: also saves and restores its position in the epoch."""

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch"}``: the epoch and the batches the loop has taken from it."""
        return {"epoch": self._epoch, "batch": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration run ``state["epoch"]`` from batch ``state["batch"]``."""
        try:
            self._epoch, self._skip = int(state["epoch"]), int(state["batch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the checkpoint's loader position {state!r} is not {{'epoch': int, 'batch': int}}; "
                "resume from a checkpoint OnTheFly wrote"
            ) from exc
        if self._skip >= len(self):  # the epoch had ended: Lightning moves on to the next one
            self._skip = 0


def track(loader: Any, *, seed: int, split: str) -> Any:
    """Wrap a ``DataLoader`` for Lightning; anything else (already wrapped, None, a list) is returned as is.

    Example:
        >>> isinstance(track(DataLoader(data, batch_size=2), seed=0, split="train"), TrainBatches)  # doctest: +SKIP
        True
    """
    if not isinstance(loader, DataLoader):
        return loader
    kind = TrainBatches if split == "train" else LightningBatches
    return kind(loader, seed=seed, split=split)
