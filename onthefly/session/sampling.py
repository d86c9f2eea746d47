"""Sample identity and a data order that depends on (seed, epoch) only.

:class:`TrackedLoader` rebuilds the user's ``DataLoader`` around a batch
sampler that records the dataset indices of every batch it hands out, so each
batch comes with the ids of its samples, right with shuffling, custom
samplers, ``drop_last`` and worker processes (a ``DataLoader`` delivers
batches in the order its batch sampler produced them).

**Sample ids.** A sample's id is its index in the *root* dataset: indices
into a ``torch.utils.data.Subset`` (what ``random_split`` returns), nested or
not, are mapped through to the dataset underneath, so one sample keeps one id
across the train/val/test splits of a dataset. For an ``IterableDataset`` the
ids come from a key of a dict batch (``sample_id``, ``id``, ``idx``,
``index``), else from the sample's position in the epoch, in the order batches
arrive; the position is stable only if the dataset yields the same stream
every epoch (see :mod:`onthefly.session.streams`). A ``sample_ids=`` callable,
``batch -> ids``, gives the ids of every batch, streams and map-style datasets
alike.

**Streams.** A stateful loader over an ``IterableDataset`` (``state_dict`` /
``load_state_dict``, such as torchdata's ``StatefulDataLoader``) is iterated
as the user built it, so its state is its own and a checkpoint can keep it
(:meth:`TrackedLoader.stream_position`, :meth:`TrackedLoader.resume`); a
stateless stream is rebuilt like any loader and resumes by dropping the
batches already trained. :attr:`TrackedLoader.length` is ``None`` for a
stream without a length.

**Data order.** Every iteration reseeds a ``torch.Generator`` owned by the
``TrackedLoader`` from ``(seed, epoch)``. That generator drives the user's
sampler (any sampler with a ``generator`` attribute, such as
``RandomSampler``, ``SubsetRandomSampler`` or ``WeightedRandomSampler``; it
replaces a generator the user set) and the workers' base seed. Samplers with a
``set_epoch`` method (``DistributedSampler``) get the epoch instead, and keep
their own ``seed``. With these samplers, iterating never draws from the global
torch, NumPy or Python generators. A custom sampler drawing from the global
torch generator is left as is; its order then follows that generator, which
checkpoints capture. The samplers are shallow-copied first, so the user's own
``DataLoader`` keeps working as before.

**Limits.** ``in_order`` is forced on (the ids rely on it). One iteration at a
time per ``TrackedLoader``. Random transforms run inside worker processes draw
from per-worker generators seeded from ``(seed, epoch)``; after
:meth:`TrackedLoader.skip_batches` batches go to other workers than in an
uninterrupted epoch, and with ``persistent_workers=True`` workers keep their
first epoch's seed, so such transforms are not reproduced bitwise then (with
``num_workers=0`` they draw from the main process' generators, which
checkpoints capture).
"""

from __future__ import annotations

import copy
import inspect
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, Subset

from onthefly.errors import ConfigError
from onthefly.session.streams import (
    SampleIds,
    StreamCursor,
    batch_sample_ids,
    is_stateful,
    iterate_stream,
    loader_length,
    plan_resume,
    stream_position,
)

__all__ = ["TrackedLoader", "epoch_seed", "root_dataset", "unpadded"]

_HAS_IN_ORDER = "in_order" in inspect.signature(DataLoader.__init__).parameters


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the generator seed used for one epoch: a pure function of (seed, epoch).

    Args:
        seed: the run's seed (>= 0).
        epoch: the epoch number (>= 0).

    Returns:
        A 63-bit non-negative integer; different epochs give unrelated values.

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    state = np.random.SeedSequence([_non_negative("seed", seed), _non_negative("epoch", epoch)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def root_dataset(dataset: Dataset) -> Dataset:
    """Return the dataset under any nesting of ``Subset``.

    Example:
        >>> base = torch.utils.data.TensorDataset(torch.arange(4))
        >>> root_dataset(Subset(Subset(base, [1, 2, 3]), [0])) is base
        True
    """
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


class TrackedLoader:
    """A ``DataLoader`` that yields ``(sample_ids, batch)`` in an order set by (seed, epoch).

    Args:
        loader: the user's ``DataLoader`` (left unchanged). It must batch
            (``batch_size`` or ``batch_sampler`` set).
        seed: the run's seed (>= 0).
        sample_ids: a function ``batch -> ids`` (one integer per sample) giving
            the ids of every batch instead of the loader's indices or positions.

    Raises:
        ConfigError: for an object that is not a ``DataLoader``, a loader
            without batching, or a negative seed.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.arange(10.0))
        >>> tracked = TrackedLoader(DataLoader(data, batch_size=4, shuffle=True), seed=0)
        >>> tracked.set_epoch(0)
        >>> ids, (x,) = next(iter(tracked))
        >>> bool((torch.from_numpy(ids).float() == x).all())
        True
    """

    def __init__(self, loader: DataLoader, *, seed: int, sample_ids: SampleIds | None = None) -> None:
        if not isinstance(loader, DataLoader):
            raise ConfigError(
                f"expected a torch.utils.data.DataLoader, got {type(loader).__name__}; wrap the data in a DataLoader."
            )
        if loader.batch_sampler is None:
            raise ConfigError(
                "the DataLoader was built with batch_size=None (no batching), so samples cannot be "
                "tracked per batch; pass batch_size=N (or a batch_sampler) to the DataLoader."
            )
        if sample_ids is not None and not callable(sample_ids):
            raise ConfigError(
                f"sample_ids must be a function batch -> ids, got {type(sample_ids).__name__}; "
                "pass for example sample_ids=lambda batch: batch['uid']."
            )
        self._seed = _non_negative("seed", seed)
        self._epoch = 0
        self._skip = 0
        self._sample_ids_fn = sample_ids
        self._start: int | None = None  # a stream's first position id in the next iteration (resume)
        self._cursor = StreamCursor()  # a stream's batches and samples of the current iteration read so far
        self._restored = 0  # batches a restored loader state is past, for the next iteration
        self._user_loader = loader
        self._generator = torch.Generator()
        self._pending: deque[Sequence[Any]] = deque()
        self._iterable = isinstance(loader.dataset, IterableDataset)
        self._index_maps = _subset_index_maps(loader.dataset)
        self._batch_sampler: _RecordingBatchSampler | None = None
        if not self._iterable:
            own = _with_generator(loader.batch_sampler, self._generator)
            self._batch_sampler = _RecordingBatchSampler(own, self._pending)
        self._stateful_stream = self._iterable and is_stateful(loader)
        self._loader = loader if self._stateful_stream else self._rebuild(loader)

    @property
    def loader(self) -> DataLoader:
        """The rebuilt ``DataLoader`` (iterate the ``TrackedLoader`` itself to get ids)."""
        return self._loader

    @property
    def dataset(self) -> Dataset:
        """The loader's dataset (possibly a ``Subset``)."""
        return self._user_loader.dataset

    @property
    def batch_size(self) -> int | None:
        """The loader's batch size, or its batch sampler's, or None when neither says."""
        if self._user_loader.batch_size is not None:
            return self._user_loader.batch_size
        return getattr(self._user_loader.batch_sampler, "batch_size", None)

    @property
    def length(self) -> int | None:
        """Batches in a full epoch, or ``None`` for a stream without a length (never raises)."""
        return loader_length(self._loader)

    @property
    def is_stream(self) -> bool:
        """Whether the loader reads an ``IterableDataset``."""
        return self._iterable

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return self._epoch

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self._seed

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (its order depends on (seed, epoch) only).

        Args:
            epoch: the epoch number (>= 0).

        Raises:
            ConfigError: for a negative or non-integer epoch.
        """
        self._epoch = _non_negative("epoch", epoch)
        self._sync_samplers()

    def skip_batches(self, n: int) -> None:
        """Make the next iteration start at batch ``n`` of the epoch (to resume mid-epoch).

        For map-style datasets the first ``n`` batches are dropped at the batch
        sampler, so their data is never loaded; an ``IterableDataset`` has to
        produce and drop them. The skip applies to the next iteration only.

        Args:
            n: number of batches to skip (>= 0).

        Raises:
            ConfigError: for a negative or non-integer ``n``.
        """
        self._skip = _non_negative("n", n)

    def stream_position(self) -> dict[str, Any] | None:
        """For a stream: the position a checkpoint keeps (:func:`~onthefly.session.streams.stream_position`).

        Returns:
            ``None`` for a map-style dataset (the epoch, batch and seed say it all);
            for a stream, the batches and samples of the current iteration handed
            out so far and, for a stateful loader, its ``state_dict()``.
        """
        if not self._iterable:
            return None
        return stream_position(self._loader, batches=self._cursor.batches, samples=self._cursor.samples)

    def resume(self, batches: int, *, saved: Any = None) -> str | None:
        """Make the next iteration resume an epoch after ``batches`` batches already trained.

        A map-style dataset skips them at the batch sampler (:meth:`skip_batches`).
        A stateful stream loads its state from ``saved`` (the checkpoint's
        :meth:`stream_position`); another stream reads and drops them.

        Args:
            batches: batches of the epoch already trained (>= 0).
            saved: what :meth:`stream_position` returned when the checkpoint was taken.

        Returns:
            For a stream, one line saying how it resumes (``None`` when ``batches``
            is 0 and nothing was restored); ``None`` for a map-style dataset.

        Raises:
            ConfigError: a negative ``batches``; a loader that refuses the saved state.
        """
        batches = _non_negative("batches", batches)
        if not self._iterable:
            self.skip_batches(batches)
            return None
        plan = plan_resume(self._loader, saved if isinstance(saved, dict) else None, batches_seen=batches)
        self._skip, self._start = plan.skip, plan.start
        self._restored = batches if plan.restored else 0
        return plan.message

    def __len__(self) -> int:
        """Batches in a full epoch (skipped batches included)."""
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(sample_ids, batch)``: int64 ids of shape ``[B]`` and the collated batch."""
        self._generator.manual_seed(epoch_seed(self._seed, self._epoch))
        self._sync_samplers()
        skip, self._skip = self._skip, 0
        start, self._start = self._start, None
        if self._iterable:
            # restored from its state, the loader is past the batches already trained; dropped batches count as read
            restored, self._restored = self._restored, 0
            self._cursor = StreamCursor(batches=restored)
            yield from iterate_stream(
                self._loader, skip=skip, start=start, sample_ids=self._sample_ids_fn, cursor=self._cursor
            )
            return
        self._pending.clear()
        self._batch_sampler.skip = skip
        for batch in self._loader:
            indices = self._pending.popleft()
            if self._sample_ids_fn is not None:
                ids, _ = batch_sample_ids(batch, start=0, sample_ids=self._sample_ids_fn)
            else:
                ids = self._sample_ids(indices)
            yield ids, batch

    def _sample_ids(self, indices: Sequence[Any]) -> np.ndarray:
        """Map a batch's dataset indices through any Subset nesting to root indices."""
        try:
            ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"the batch sampler yielded indices that are not integers ({list(indices)[:4]}...); "
                "sample ids must be integer dataset indices: use an index-based sampler."
            ) from exc
        for index_map in self._index_maps:
            ids = index_map[ids]
        return ids

    def _sync_samplers(self) -> None:
        """Pass the epoch to samplers that take one (DistributedSampler and the like)."""
        source = self._batch_sampler.inner if self._batch_sampler is not None else None
        for sampler in (source, getattr(source, "sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self._epoch)

    def _rebuild(self, loader: DataLoader) -> DataLoader:
        """The user's DataLoader again, with our batch sampler and our generator."""
        options: dict[str, Any] = {
            "num_workers": loader.num_workers,
            "collate_fn": loader.collate_fn,
            "pin_memory": loader.pin_memory,
            "timeout": loader.timeout,
            "worker_init_fn": loader.worker_init_fn,
            "multiprocessing_context": loader.multiprocessing_context,
            "generator": self._generator,
            "prefetch_factor": loader.prefetch_factor if loader.num_workers > 0 else None,
            "persistent_workers": loader.persistent_workers,
        }
        if getattr(loader, "pin_memory_device", ""):
            options["pin_memory_device"] = loader.pin_memory_device
        if _HAS_IN_ORDER:
            options["in_order"] = True
        if self._iterable:
            return DataLoader(loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last, **options)
        return DataLoader(loader.dataset, batch_sampler=self._batch_sampler, **options)


class _RecordingBatchSampler(Sampler):
    """Wraps a batch sampler; records each batch it hands out, in order, in a shared deque."""

    def __init__(self, inner: Any, pending: deque) -> None:
        self.inner = inner
        self.pending = pending
        self.skip = 0

    def __iter__(self) -> Iterator[Sequence[Any]]:
        batches = iter(self.inner)
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            if next(batches, None) is None:
                return
        for batch in batches:
            self.pending.append(batch)
            yield batch

    def __len__(self) -> int:
        return len(self.inner)


def _with_generator(batch_sampler: Any, generator: torch.Generator) -> Any:
    """Shallow copies of the batch sampler and its sampler, drawing from `generator`."""
    own = _shallow_copy(batch_sampler)
    _set_generator(own, generator)
    sampler = getattr(own, "sampler", None)
    if sampler is not None:
        copied = _shallow_copy(sampler)
        try:
            own.sampler = copied
        except AttributeError:  # a read-only attribute: share the user's sampler
            copied = sampler
        _set_generator(copied, generator)
    return own


def _set_generator(sampler: Any, generator: torch.Generator) -> None:
    if hasattr(sampler, "generator"):
        try:
            sampler.generator = generator
        except AttributeError:  # read-only: the sampler keeps its own randomness
            pass


def _shallow_copy(obj: Any) -> Any:
    """A shallow copy, or the object itself when it cannot be copied."""
    try:
        return copy.copy(obj)
    except Exception:  # an exotic sampler; using it as is only means sharing it
        return obj


def _subset_index_maps(dataset: Dataset) -> list[np.ndarray]:
    """Index arrays of each Subset level, outermost first."""
    maps = []
    while isinstance(dataset, Subset):
        maps.append(np.asarray(dataset.indices, dtype=np.int64).reshape(-1))
        dataset = dataset.dataset
    return maps


def _non_negative(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}; pass for example {name}=0.")
    return int(value)


def unpadded(batch: int, *, seen: int, recorded: int | None) -> int:
    """How many samples of a batch to record: all, except a sampler's padding past ``recorded``.

    ``seen`` counts the samples this rank took earlier in the epoch; ``recorded``
    is how many of its samples per epoch are real (None: all).

    Example:
        >>> unpadded(16, seen=60, recorded=66), unpadded(16, seen=0, recorded=None)
        (6, 16)
    """
    if recorded is None:
        return batch
    return max(0, min(batch, recorded - seen))
