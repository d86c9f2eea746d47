"""The loss the LightningModule calls, recording each sample's value on the way.

:class:`RecordingLoss` takes the place of the user's loss where the module
holds it (``model.loss``, or an instance attribute shadowing a loss method of
the class; see :mod:`onthefly.lightning.capture`, which also intercepts
inline function calls): the module's own ``training_step`` calls it, it
computes the per-sample values from that one output through
:class:`~onthefly.session.losses.PerSampleLoss` (the model never runs twice)
and hands back the value the module expects. Its parameters and buffers are
the wrapped loss' own (shared, not copied), so the module's ``state_dict``
keys do not change while it is in place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..session.batches import batch_size_of
from ..session.losses import (
    PerSampleLoss,
    class_index_kept,
    per_sample_values,
    tokens_per_sample,
)

__all__ = ["LOSS_NAMES", "RecordingLoss", "sample_layout"]

LOSS_NAMES = ("loss", "loss_fn", "criterion", "loss_func")
"""Attribute (or method) names searched for the loss when ``loss_fn`` is not given."""

_UNSET = object()


def sample_layout(values: int, samples: int, target: Any) -> int | None:
    """How a loss call's ``values`` (its output's first dimension) map onto a batch of ``samples``.

    1 when there is one value per sample; ``k`` when the call is over ``k``
    class-index tokens per sample, flattened sample after sample (a language
    model's ``output.view(-1, V)`` against ``target.view(-1)``); None when the
    call does not belong to the batch (another head, a GAN's other batch).

    Example:
        >>> sample_layout(8, 8, None), sample_layout(24, 8, torch.zeros(24, dtype=torch.long))
        (1, 3)
        >>> sample_layout(16, 8, torch.zeros(16)) is None  # float targets: not tokens
        True
    """
    if values == samples:
        return 1
    k = tokens_per_sample(values, samples)
    if k is None or not isinstance(target, torch.Tensor) or target.is_floating_point() or target.numel() != values:
        return None
    return k


class RecordingLoss(nn.Module):
    """Calls the user's loss and records per-sample values of the batches announced to it.

    Called as ``loss(output, target)``, or ``loss(output)`` for a loss of the
    output alone (label-less and self-supervised steps; the per-sample value
    is the loss of each sample seen as a batch of one, e.g. the mean over its
    elements for an elementwise loss). With ``k`` class-index tokens per
    sample (``(B*T, V)`` against ``target.view(-1)``), a sample's value is the
    mean over its tokens that are not ``ignore_index``.

    When no per-sample values can be had, the user's loss is called as is,
    one warning line is given and recording stops: the fit goes on.

    Args:
        loss_fn: the user's loss (module, bound method or callable).
        claim: ``claim(fits)`` returns the sample ids of the current batch the
            first time a call whose values fit them (``fits(len(ids))``) asks,
            then None (a second loss call in the same step is not recorded
            twice); None outside recorded batches.
        record: called as ``record(sample_ids, per_sample, output, target)``.
        warn: logs one warning line (default: none).

    Example:
        >>> model.loss = RecordingLoss(model.loss, claim=callback.claim, record=callback.record)  # doctest: +SKIP
    """

    def __init__(
        self,
        loss_fn: Any,
        *,
        claim: Callable[..., np.ndarray | None],
        record: Callable[[np.ndarray, torch.Tensor, Any, Any], None],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        inner = loss_fn
        vars(self)["_otf_inner"] = inner  # not a child: the state dict keeps the loss' own keys
        vars(self)["_otf_claim"] = claim
        vars(self)["_otf_record"] = record
        vars(self)["_otf_warn"] = warn if warn is not None else _ignore
        vars(self)["_otf_checked"] = False
        vars(self)["failed"] = False
        self._otf_module = isinstance(inner, nn.Module) and isinstance(getattr(inner, "reduction", None), str)
        if isinstance(inner, nn.Module):
            self._parameters = inner._parameters
            self._buffers = inner._buffers
            self._non_persistent_buffers_set = inner._non_persistent_buffers_set
            self._modules = inner._modules
            self.training = inner.training
        self._otf_capture = _Capture(inner)
        self._otf_per_sample = PerSampleLoss(inner if self._otf_module else self._otf_capture)
        vars(self)["_otf_target_name"] = _second_parameter(inner)  # loss(preds, labels=y) names its target
        self._otf_alone = _Capture(inner, alone=True)
        self._otf_per_sample_alone = PerSampleLoss(self._otf_alone)

    @property
    def inner(self) -> Any:
        """The user's loss."""
        return vars(self)["_otf_inner"]

    def forward(self, output: Any, target: Any = _UNSET, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner
        if target is _UNSET and len(kwargs) == 1 and vars(self)["_otf_target_name"] in kwargs and not args:
            kwargs = dict(kwargs)
            target = kwargs.pop(vars(self)["_otf_target_name"])
        if args or kwargs or vars(self)["failed"]:
            return inner(output, *args, **kwargs) if target is _UNSET else inner(output, target, *args, **kwargs)
        alone = target is _UNSET
        values = _batch_size(output, None if alone else target)
        if values is None:
            return inner(output) if alone else inner(output, target)
        ids = self._otf_claim(lambda n: (values == n) if alone else sample_layout(values, n, target) is not None)
        if ids is None:
            return inner(output) if alone else inner(output, target)
        try:
            if alone:
                return self._output_alone(ids, output)
            return self._recorded(ids, output, target, values)
        except Exception as exc:
            vars(self)["failed"] = True
            self._otf_warn(
                f"no per-sample loss rows: {_name(inner)} gave no per-sample values for a batch of "
                f"{len(ids)} ({type(exc).__name__}: {exc}); the fit goes on. To get them, use a loss "
                "with reduction= or one returning one value per sample (docs/lightning.md)"
            )
            return inner(output) if alone else inner(output, target)

    def _recorded(self, ids: np.ndarray, output: Any, target: Any, values: int) -> Any:
        per_sample = self._otf_per_sample
        if not self._otf_checked:
            per_sample.check(output, target, batch_size=values)
            vars(self)["_otf_checked"] = True
        capture = self._otf_capture
        capture.first = _UNSET
        result = per_sample(output, target, batch_size=values)
        if values == len(ids):
            self._otf_record(ids, result.per_sample, output, target)
        else:  # tokens of each sample, sample after sample: the mean over the ones not ignored
            inner = self.inner
            kept = None
            if isinstance(inner, (nn.CrossEntropyLoss, nn.NLLLoss)):
                kept = class_index_kept(target, inner.ignore_index, result.per_sample.shape)
            self._otf_record(ids, per_sample_values(result.per_sample, len(ids), kept=kept), None, None)
        if self._otf_module or capture.first is _UNSET:
            return result.loss
        return capture.first  # a callable's own return value, as the module expects it

    def _output_alone(self, ids: np.ndarray, output: Any) -> Any:
        capture = self._otf_alone
        capture.first = _UNSET
        result = self._otf_per_sample_alone(output, None, batch_size=len(ids))
        self._otf_record(ids, result.per_sample, output, None)
        return result.loss if capture.first is _UNSET else capture.first

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
        return f"recording {_name(self.inner)}"

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # A copy or a pickle of the model holds the user's plain loss, not the recorder
        # (which is tied to this process' session).
        return (_same, (self.inner,))


def _second_parameter(loss: Any) -> str | None:
    """The name of the loss' second positional parameter (its target), when it has one."""
    try:
        params = list(inspect.signature(loss.forward if isinstance(loss, nn.Module) else loss).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[1].name if len(positional) > 1 else None


def _ignore(message: str) -> None:
    return None


def _name(loss: Any) -> str:
    if isinstance(loss, nn.Module):
        return type(loss).__name__
    return getattr(loss, "__qualname__", None) or type(loss).__name__


def _same(value: Any) -> Any:
    return value


class _Capture:
    """A callable loss that remembers the first value it returned since reset.

    ``alone``: the loss is called with the output only.
    """

    def __init__(self, fn: Any, *, alone: bool = False) -> None:
        self.fn = fn
        self.alone = alone
        self.first: Any = _UNSET
        self.__name__ = _name(fn)

    def __call__(self, output: Any, target: Any) -> Any:
        value = self.fn(output) if self.alone else self.fn(output, target)
        if self.first is _UNSET:
            self.first = value
        return value


def _batch_size(output: Any, target: Any) -> int | None:
    if target is None:
        try:
            return batch_size_of(output)
        except ConfigError:
            return None
    try:
        return batch_size_of(target)
    except ConfigError:
        try:
            return batch_size_of(output)
        except ConfigError:
            return None
