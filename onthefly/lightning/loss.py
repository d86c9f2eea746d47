"""The loss the LightningModule calls, recording each sample's value on the way.

:class:`RecordingLoss` takes the place of the user's loss where the module
holds it (``model.loss``): the module's own ``training_step`` calls it, it
computes the per-sample values from that one output through
:class:`~onthefly.session.losses.PerSampleLoss` (the model never runs twice)
and hands back the value the module expects. Its parameters and buffers are
the wrapped loss' own (shared, not copied), so the module's ``state_dict``
keys do not change while it is in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..session.batches import batch_size_of
from ..session.losses import PerSampleLoss

__all__ = ["LOSS_NAMES", "LossSite", "RecordingLoss", "find_loss"]

LOSS_NAMES = ("loss", "loss_fn", "criterion", "loss_func")
"""Attribute names searched for the loss when ``loss_fn`` is not given."""

_UNSET = object()


class LossSite(NamedTuple):
    """Where a module holds its loss: ``owner.<attribute>`` is ``loss``."""

    owner: nn.Module
    attribute: str
    loss: Any


def find_loss(model: nn.Module, loss_fn: Any = None) -> LossSite:
    """Where the module holds its loss.

    With ``loss_fn`` given, the attribute holding that very object (on the
    module or any submodule); without, the first of :data:`LOSS_NAMES` on the
    module itself that is callable.

    Raises:
        ConfigError: when no attribute holds it, saying how to make one.

    Example:
        >>> owner, name, loss = find_loss(lit_model, lit_model.loss)  # doctest: +SKIP
        >>> name
        'loss'
    """
    if loss_fn is None:
        for name in LOSS_NAMES:
            value = getattr(model, name, None)
            if callable(value) and not _is_bound_method_of(value, model):
                return LossSite(model, name, value)
        raise ConfigError(
            f"attach_lightning(loss_fn=None) found no loss on {type(model).__name__} (looked for "
            f"{', '.join(LOSS_NAMES)}): pass loss_fn=model.<attribute>, the loss your training_step calls"
        )
    for prefix, module in model.named_modules():
        for name, value in list(module._modules.items()) + list(vars(module).items()):
            if value is loss_fn:
                return LossSite(module, name, value)
    raise ConfigError(
        f"loss_fn ({type(loss_fn).__name__}) is not an attribute of {type(model).__name__}, so OnTheFly cannot "
        "see the per-sample losses of the training forward pass: set it in __init__ (self.loss = loss_fn), "
        "call self.loss(...) in training_step, and pass loss_fn=model.loss"
    )


def _is_bound_method_of(value: Any, model: nn.Module) -> bool:
    return getattr(value, "__self__", None) is model


class RecordingLoss(nn.Module):
    """Calls the user's loss and records per-sample values of the batches announced to it.

    Args:
        loss_fn: the user's loss (module or callable).
        claim: returns the sample ids of the current batch the first time it is
            called for that batch, then None (a second loss call in the same
            step is not recorded twice); None outside recorded batches.
        record: called as ``record(sample_ids, per_sample, output, target)``.

    Example:
        >>> model.loss = RecordingLoss(model.loss, claim=callback.claim, record=callback.record)  # doctest: +SKIP
    """

    def __init__(
        self,
        loss_fn: Any,
        *,
        claim: Callable[[], np.ndarray | None],
        record: Callable[[np.ndarray, torch.Tensor, Any, Any], None],
    ) -> None:
        super().__init__()
        inner = loss_fn
        vars(self)["_otf_inner"] = inner  # not a child: the state dict keeps the loss' own keys
        vars(self)["_otf_claim"] = claim
        vars(self)["_otf_record"] = record
        vars(self)["_otf_checked"] = False
        self._otf_module = isinstance(inner, nn.Module) and isinstance(getattr(inner, "reduction", None), str)
        if isinstance(inner, nn.Module):
            self._parameters = inner._parameters
            self._buffers = inner._buffers
            self._non_persistent_buffers_set = inner._non_persistent_buffers_set
            self._modules = inner._modules
            self.training = inner.training
        self._otf_capture = _Capture(inner)
        self._otf_per_sample = PerSampleLoss(inner if self._otf_module else self._otf_capture)

    @property
    def inner(self) -> Any:
        """The user's loss."""
        return vars(self)["_otf_inner"]

    def forward(self, output: Any, target: Any = _UNSET, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner
        if target is _UNSET or args or kwargs:
            return inner(output, *args, **kwargs) if target is _UNSET else inner(output, target, *args, **kwargs)
        ids = self._otf_claim()
        if ids is None or _batch_size(output, target) != len(ids):
            return inner(output, target)
        per_sample = self._otf_per_sample
        if not self._otf_checked:
            per_sample.check(output, target, batch_size=len(ids))
            vars(self)["_otf_checked"] = True
        capture = self._otf_capture
        capture.first = _UNSET
        result = per_sample(output, target, batch_size=len(ids))
        self._otf_record(ids, result.per_sample, output, target)
        if self._otf_module or capture.first is _UNSET:
            return result.loss
        return capture.first  # a callable's own return value, as the module expects it

    def train(self, mode: bool = True) -> RecordingLoss:
        super().train(mode)
        if isinstance(self.inner, nn.Module):
            self.inner.train(mode)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(vars(self)["_otf_inner"], name)

    def extra_repr(self) -> str:
        return f"recording {type(self.inner).__name__}"

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # A copy or a pickle of the model holds the user's plain loss, not the recorder
        # (which is tied to this process' session).
        return (_same, (self.inner,))


def _same(value: Any) -> Any:
    return value


class _Capture:
    """A callable loss that remembers the first value it returned since reset."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.first: Any = _UNSET

    def __call__(self, output: Any, target: Any) -> Any:
        value = self.fn(output, target)
        if self.first is _UNSET:
            self.first = value
        return value


def _batch_size(output: Any, target: Any) -> int | None:
    try:
        return batch_size_of(target)
    except ConfigError:
        try:
            return batch_size_of(output)
        except ConfigError:
            return None
