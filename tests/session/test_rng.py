"""Seeding, capturing and restoring the random generators."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from onthefly.errors import ConfigError
from onthefly.session.rng import (
    capture_rng,
    preserved_rng,
    restore_rng,
    seed_everything,
)


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_makes_every_generator_repeat() -> None:
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_seed_everything_refuses_seeds_outside_the_integer_range(bad: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        seed_everything(bad)  # type: ignore[arg-type]


def test_restoring_a_capture_replays_the_same_draws() -> None:
    seed_everything(7)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's generator
    np.random.standard_normal()  # and in NumPy's
    state = capture_rng()
    expected = (_draw(), random.gauss(0, 1), float(np.random.standard_normal()))
    restore_rng(state)
    assert (_draw(), random.gauss(0, 1), float(np.random.standard_normal())) == expected


def test_a_capture_is_a_copy_that_later_draws_do_not_change() -> None:
    state = capture_rng()
    torch_before = state["torch"].clone()
    keys_before = state["numpy"]["keys"].copy()
    _draw()
    assert torch.equal(state["torch"], torch_before)
    assert np.array_equal(state["numpy"]["keys"], keys_before)


def test_the_python_part_is_json_and_the_state_survives_a_round_trip_through_plain_types() -> None:
    state = capture_rng()
    expected = _draw()
    stored = {
        "python": json.loads(json.dumps(state["python"])),
        "numpy": {**state["numpy"], "keys": state["numpy"]["keys"].tolist()},
        "torch": state["torch"].numpy().copy(),
    }
    _draw()
    restore_rng(stored)
    assert _draw() == expected


def test_preserved_rng_puts_the_generators_back_even_when_the_block_raises() -> None:
    seed_everything(3)
    expected = _draw()
    seed_everything(3)
    with pytest.raises(RuntimeError):
        with preserved_rng():
            _draw()
            raise RuntimeError("boom")
    assert _draw() == expected


def test_an_incomplete_state_is_refused_and_changes_nothing() -> None:
    state = capture_rng()
    del state["numpy"]
    seed_everything(5)
    expected = _draw()
    seed_everything(5)
    with pytest.raises(ConfigError, match="numpy"):
        restore_rng(state)
    assert _draw() == expected


def test_a_malformed_state_is_refused_with_a_config_error() -> None:
    state = capture_rng()
    state["python"] = {"version": 3}
    with pytest.raises(ConfigError, match="malformed"):
        restore_rng(state)
