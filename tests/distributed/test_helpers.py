"""The pure parts of multi-process training: data split, padding, RNG messages."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from onthefly.distributed import (
    detect,
    distributed_loader,
    pack_rng,
    recorded_count,
    unpack_rng,
)
from onthefly.errors import ConfigError
from onthefly.session.rng import capture_rng, restore_rng
from onthefly.session.sampling import unpadded


def test_a_single_process_is_not_distributed():
    assert detect(environ={}, init=False) is None
    assert detect(environ={"WORLD_SIZE": "1"}, init=False) is None


def test_ranks_get_disjoint_parts_and_padding_is_not_recorded():
    data = list(range(11))
    parts = [
        distributed_loader(DataLoader(data, batch_size=4, shuffle=True), rank=r, world_size=2, seed=3) for r in (0, 1)
    ]
    orders = [list(p.sampler) for p in parts]
    kept = [order[: recorded_count(p.sampler, rank=r)] for r, (p, order) in enumerate(zip(parts, orders))]
    assert sorted(kept[0] + kept[1]) == data  # each sample once in the union
    assert len(orders[0]) == len(orders[1]) == 6  # equal step counts per rank (one padded sample)


def test_a_users_distributed_sampler_is_kept_and_custom_samplers_are_refused():
    own = DataLoader(list(range(8)), batch_size=2, sampler=DistributedSampler(list(range(8)), num_replicas=2, rank=0))
    assert distributed_loader(own, rank=0, world_size=2, seed=0) is own
    weighted = DataLoader(list(range(8)), batch_size=2, sampler=WeightedRandomSampler([1.0] * 8, 8))
    with pytest.raises(ConfigError, match="DistributedSampler"):
        distributed_loader(weighted, rank=0, world_size=2, seed=0)


def test_unpadded_keeps_the_real_samples_of_a_batch():
    assert unpadded(16, seen=0, recorded=None) == 16
    assert unpadded(16, seen=60, recorded=66) == 6
    assert unpadded(16, seen=70, recorded=66) == 0


def test_rng_states_travel_as_json_and_come_back_equal():
    state = capture_rng()
    expected = torch.rand(3)
    restore_rng(unpack_rng(pack_rng(state)))
    assert torch.equal(torch.rand(3), expected)
