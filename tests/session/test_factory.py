"""Fresh model copies: the three model_factory forms, and a deep copy that sets
aside process-bound attachments and puts them back."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from onthefly.errors import ConfigError
from onthefly.session.factory import clone_model, resolve_model_factory


class Scaled(nn.Module):
    def __init__(self, n_in, n_out, *, scale=1.0):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)
        self.scale = scale


@pytest.mark.parametrize(
    "form",
    [
        lambda: Scaled(4, 2, scale=3.0),
        (Scaled, (4, 2), {"scale": 3.0}),
        {"factory": Scaled, "args": (4, 2), "kwargs": {"scale": 3.0}},
    ],
    ids=["callable", "tuple", "dict"],
)
def test_each_factory_form_builds_the_same_model(form):
    model = resolve_model_factory(form)()
    assert isinstance(model, Scaled) and model.scale == 3.0 and model.lin.in_features == 4


def test_a_malformed_factory_is_refused_with_the_accepted_forms():
    with pytest.raises(ConfigError, match="'factory'"):
        resolve_model_factory({"build": Scaled})
    with pytest.raises(ConfigError, match=r"\(callable, args, kwargs\)"):
        resolve_model_factory((Scaled, (), {}, "extra"))
    assert resolve_model_factory(None) is None


def test_a_clone_with_a_factory_has_the_trained_weights():
    model = Scaled(4, 2)
    with torch.no_grad():
        model.lin.weight.fill_(0.5)
    fresh = clone_model(model, resolve_model_factory((Scaled, (4, 2))))
    assert fresh is not model and torch.equal(fresh.lin.weight, model.lin.weight)


def test_a_deep_copy_sets_aside_a_lock_and_a_trainer_and_puts_them_back():
    model = Scaled(4, 2)
    lock = threading.Lock()
    model.lock = lock
    model.trainer = object()  # stands for a Lightning trainer: not part of the weights
    trainer = model.trainer
    copy = clone_model(model)
    assert torch.equal(copy.lin.weight, model.lin.weight)
    assert copy.lock is None and copy.trainer is None
    assert model.lock is lock and model.trainer is trainer


class Uncopyable:
    def __deepcopy__(self, memo):
        raise TypeError("cannot copy a device handle")


def test_a_model_that_cannot_be_copied_names_the_attribute_and_asks_for_a_factory():
    model = Scaled(4, 2)
    model.lin.handle = Uncopyable()
    with pytest.raises(ConfigError, match=r"attribute 'lin.handle'.*model_factory"):
        clone_model(model)
    assert isinstance(model.lin.handle, Uncopyable)
