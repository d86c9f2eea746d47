"""Splitting batches, moving them to a device, and calling the model."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from onthefly.errors import ConfigError
from onthefly.session.batches import (
    batch_size_of,
    call_model,
    describe_structure,
    move_to_device,
    split_batch,
)

X = torch.zeros(4, 3)
Y = torch.arange(4)


@pytest.mark.parametrize(
    "batch",
    [
        (X, Y),
        [X, Y],
        (X, Y, torch.ones(4), "meta"),
        {"image": X, "label": Y},
        {"inputs": X, "targets": Y, "weights": torch.ones(4)},
        OrderedDict(features=X, y=Y),
    ],
    ids=["tuple", "list", "tuple-with-rest", "dict-image-label", "dict-inputs-targets", "ordered-dict"],
)
def test_split_batch_finds_inputs_and_target(batch: object) -> None:
    inputs, target = split_batch(batch)
    assert inputs is X
    assert target is Y


def test_split_batch_keeps_a_tuple_of_several_inputs_together() -> None:
    inputs, target = split_batch(((X, X + 1), Y))
    assert isinstance(inputs, tuple) and len(inputs) == 2
    assert target is Y


def test_split_batch_describes_a_dict_it_cannot_split() -> None:
    with pytest.raises(ConfigError) as info:
        split_batch({"input_ids": X, "mask": Y})
    message = str(info.value)
    assert "'input_ids': Tensor[4, 3] float32" in message
    assert "'mask': Tensor[4] int64" in message
    assert "collate_fn" in message


@pytest.mark.parametrize("batch", [(X,), X, 3], ids=["one-element", "bare-tensor", "int"])
def test_split_batch_refuses_a_batch_without_a_target(batch: object) -> None:
    with pytest.raises(ConfigError, match="target"):
        split_batch(batch)


Pair = namedtuple("Pair", ["a", "b"])


@dataclass
class Holder:
    x: torch.Tensor
    note: str = "n"
    cache: list = field(default_factory=list, init=False)


def test_move_to_device_walks_every_container_and_keeps_their_types() -> None:
    batch = {
        "pair": Pair(torch.ones(2), [torch.zeros(1), "text"]),
        "holder": Holder(torch.ones(3)),
        "ordered": OrderedDict(t=torch.ones(1)),
        "plain": 5,
    }
    moved = move_to_device(batch, torch.device("meta"))
    assert isinstance(moved["pair"], Pair)
    assert moved["pair"].a.device.type == "meta"
    assert moved["pair"].b[0].device.type == "meta" and moved["pair"].b[1] == "text"
    assert isinstance(moved["holder"], Holder) and moved["holder"].x.device.type == "meta"
    assert moved["holder"].note == "n"
    assert isinstance(moved["ordered"], OrderedDict) and moved["ordered"]["t"].device.type == "meta"
    assert moved["plain"] == 5
    assert batch["pair"].a.device.type == "cpu"  # the original is not mutated


def test_move_to_device_returns_a_tensor_already_there_without_copying() -> None:
    assert move_to_device(X, "cpu") is X


@pytest.mark.parametrize(
    ("inputs", "size"),
    [
        (torch.zeros(6, 2), 6),
        ((torch.zeros(5), torch.zeros(5, 3)), 5),
        ({"a": [torch.zeros(7, 1)]}, 7),
        (["one", "two", "three"], 3),
        (Holder(torch.zeros(2, 9)), 2),
    ],
    ids=["tensor", "tuple", "nested-dict", "list-of-strings", "dataclass"],
)
def test_batch_size_of_reads_the_first_dimension(inputs: object, size: int) -> None:
    assert batch_size_of(inputs) == size


@pytest.mark.parametrize("inputs", [torch.tensor(1.0), {"a": 3}, None], ids=["scalar", "no-tensor", "none"])
def test_batch_size_of_refuses_inputs_without_a_batch_dimension(inputs: object) -> None:
    with pytest.raises(ConfigError, match="batch dimension"):
        batch_size_of(inputs)


class _Recorder(nn.Module):
    def forward(self, *args: object, **kwargs: object) -> tuple:
        return args, kwargs


def test_call_model_unpacks_several_inputs_and_passes_one_input_as_is() -> None:
    model = _Recorder()
    args, kwargs = call_model(model, (X, Y))
    assert len(args) == 2 and args[0] is X and not kwargs
    args, kwargs = call_model(model, X)
    assert len(args) == 1 and args[0] is X
    mapping = {"a": X}
    args, kwargs = call_model(model, mapping)
    assert args == (mapping,) and not kwargs


def test_describe_structure_names_shapes_and_dtypes() -> None:
    text = describe_structure((torch.zeros(2, 3), [torch.zeros(2, dtype=torch.long), None]))
    assert text == "tuple(Tensor[2, 3] float32, list(Tensor[2] int64, None))"
