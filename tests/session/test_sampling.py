"""Sample ids and a data order set by (seed, epoch) only."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    Subset,
    TensorDataset,
    WeightedRandomSampler,
    random_split,
)

from onthefly.errors import ConfigError
from onthefly.session.sampling import TrackedLoader, epoch_seed, root_dataset

N = 60


def indexed_dataset(n: int = N) -> TensorDataset:
    """Item i holds the value i, so a batch tells which samples it carries."""
    return TensorDataset(torch.arange(n, dtype=torch.float32), torch.arange(n) % 3)


def epoch_batches(tracked: TrackedLoader, epoch: int) -> list[list[int]]:
    tracked.set_epoch(epoch)
    return [ids.tolist() for ids, _ in tracked]


def assert_ids_match_data(tracked: TrackedLoader) -> list[list[int]]:
    batches = []
    for ids, (x, _) in tracked:
        assert ids.dtype == np.int64
        assert ids.tolist() == x.long().tolist()
        batches.append(ids.tolist())
    return batches


@pytest.mark.parametrize("workers", [0, 2])
def test_ids_are_root_indices_with_shuffle_workers_drop_last_and_random_split(workers: int) -> None:
    train, _ = random_split(indexed_dataset(), [45, 15], generator=torch.Generator().manual_seed(0))
    loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True, num_workers=workers)
    tracked = TrackedLoader(loader, seed=1)
    batches = assert_ids_match_data(tracked)
    assert len(batches) == len(tracked) == 5
    assert all(len(b) == 8 for b in batches)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == 40 and set(seen) <= set(train.indices)


def test_nested_subsets_map_to_the_root_dataset() -> None:
    base = indexed_dataset()
    inner = Subset(base, list(range(10, 50)))
    outer = Subset(inner, [39, 0, 5, 20])
    tracked = TrackedLoader(DataLoader(outer, batch_size=3), seed=0)
    assert root_dataset(outer) is base
    assert assert_ids_match_data(tracked) == [[49, 10, 15], [30]]


def test_the_order_is_a_function_of_seed_and_epoch_only() -> None:
    loader = DataLoader(indexed_dataset(), batch_size=7, shuffle=True)
    first, second = TrackedLoader(loader, seed=5), TrackedLoader(loader, seed=5)
    assert epoch_batches(first, 3) == epoch_batches(second, 3)
    assert epoch_batches(first, 3) == epoch_batches(first, 3)  # iterating again replays the epoch
    assert epoch_batches(first, 3) != epoch_batches(first, 4)
    assert epoch_batches(first, 3) != epoch_batches(TrackedLoader(loader, seed=6), 3)
    random.random(), np.random.rand(), torch.rand(1)  # global draws do not matter
    assert epoch_batches(second, 3) == epoch_batches(first, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_iterating_draws_nothing_from_the_global_generators(workers: int) -> None:
    tracked = TrackedLoader(DataLoader(indexed_dataset(), batch_size=16, shuffle=True, num_workers=workers), seed=0)
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    for _ in tracked:
        pass
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert random.getstate() == python_state


def test_the_users_loader_and_sampler_are_left_unchanged() -> None:
    loader = DataLoader(indexed_dataset(), batch_size=16, shuffle=True)
    TrackedLoader(loader, seed=0)
    assert loader.sampler.generator is None
    assert loader.batch_sampler.sampler is loader.sampler
    assert len(list(loader)) == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_batches_resumes_mid_epoch_with_the_same_remaining_ids(workers: int) -> None:
    loader = DataLoader(indexed_dataset(), batch_size=8, shuffle=True, num_workers=workers)
    tracked = TrackedLoader(loader, seed=2)
    full = epoch_batches(tracked, 1)
    resumed = TrackedLoader(loader, seed=2)
    resumed.set_epoch(1)
    resumed.skip_batches(3)
    assert assert_ids_match_data(resumed) == full[3:]
    assert epoch_batches(resumed, 1) == full  # the skip applies to one iteration only


def test_an_abandoned_iteration_does_not_shift_the_next_ones_ids() -> None:
    loader = DataLoader(indexed_dataset(), batch_size=4, shuffle=True, num_workers=2)
    tracked = TrackedLoader(loader, seed=0)
    iterator = iter(tracked)
    next(iterator)  # the workers have prefetched several batches
    del iterator
    assert len(assert_ids_match_data(tracked)) == 15


def test_persistent_workers_keep_ids_right_across_epochs() -> None:
    loader = DataLoader(indexed_dataset(), batch_size=8, shuffle=True, num_workers=2, persistent_workers=True)
    tracked = TrackedLoader(loader, seed=0)
    orders = []
    for epoch in range(2):
        tracked.set_epoch(epoch)
        orders.append(assert_ids_match_data(tracked))
    assert orders[0] != orders[1]


def test_a_custom_batch_sampler_and_a_weighted_sampler_with_replacement_are_tracked() -> None:
    custom = DataLoader(indexed_dataset(), batch_sampler=[[5, 1], [1, 9, 2]])
    tracked = TrackedLoader(custom, seed=0)
    assert tracked.batch_size is None
    assert assert_ids_match_data(tracked) == [[5, 1], [1, 9, 2]]
    weights = torch.zeros(N)
    weights[[3, 7]] = 1.0
    sampler = WeightedRandomSampler(weights, num_samples=20, replacement=True)
    tracked = TrackedLoader(DataLoader(indexed_dataset(), batch_size=5, sampler=sampler), seed=0)
    ids = [i for b in assert_ids_match_data(tracked) for i in b]
    assert len(ids) == 20 and set(ids) <= {3, 7}
    assert sampler.generator is None


def test_a_distributed_sampler_gets_the_epoch() -> None:
    sampler = DistributedSampler(indexed_dataset(), num_replicas=2, rank=0, shuffle=True, seed=0)
    tracked = TrackedLoader(DataLoader(indexed_dataset(), batch_size=10, sampler=sampler), seed=0)
    tracked.set_epoch(0)
    first = assert_ids_match_data(tracked)
    tracked.set_epoch(1)
    second = assert_ids_match_data(tracked)
    assert sum(len(b) for b in first) == 30 and first != second


class Stream(IterableDataset):
    def __iter__(self):
        for i in range(10):
            yield torch.tensor(float(i)), torch.tensor(i % 2)


def test_an_iterable_dataset_gets_positions_as_ids_and_can_skip() -> None:
    tracked = TrackedLoader(DataLoader(Stream(), batch_size=4), seed=0)
    assert assert_ids_match_data(tracked) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    tracked.skip_batches(1)
    assert assert_ids_match_data(tracked) == [[4, 5, 6, 7], [8, 9]]


def test_a_loader_without_batching_is_refused_with_the_remedy() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        TrackedLoader(DataLoader(indexed_dataset(), batch_size=None), seed=0)


@pytest.mark.parametrize("bad", [[1, 2], "loader"])
def test_something_else_than_a_data_loader_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="DataLoader"):
        TrackedLoader(bad, seed=0)  # type: ignore[arg-type]


def test_negative_seed_epoch_and_skip_are_refused() -> None:
    loader = DataLoader(indexed_dataset(), batch_size=4)
    with pytest.raises(ConfigError, match="seed"):
        TrackedLoader(loader, seed=-1)
    tracked = TrackedLoader(loader, seed=0)
    with pytest.raises(ConfigError, match="epoch"):
        tracked.set_epoch(-1)
    with pytest.raises(ConfigError, match="n must"):
        tracked.skip_batches(-2)


def test_epoch_seed_is_pure_and_spreads_epochs() -> None:
    seeds = {epoch_seed(0, e) for e in range(100)}
    assert len(seeds) == 100
    assert epoch_seed(4, 2) == epoch_seed(4, 2)
    assert all(0 <= s < 2**63 for s in seeds)
