"""Per-sample loss from the training forward pass, and the scalar to backpropagate.

:class:`PerSampleLoss` wraps the user's loss and, from the *same* model output
(the model is never run twice), returns a :class:`LossResult`: the scalar for
``backward`` (the value the user's loss gives, with the same reduction), one
float32 loss per sample, and any extra values the loss returned.

How the per-sample values are obtained, cheapest first (``PerSampleLoss.method``):

``"unreduced"``
    An ``nn.Module`` loss with a ``reduction`` attribute (``CrossEntropyLoss``,
    ``NLLLoss``, ``MSELoss``, ``L1Loss``, ``SmoothL1Loss``, ``HuberLoss``,
    ``BCELoss``, ``BCEWithLogitsLoss``, ``KLDivLoss``, and custom modules
    following the same convention) is called once with ``reduction="none"``;
    the attribute is set for the duration of that call, under a lock, and
    restored even on error. Do not call the same module object from another
    thread while training runs. The backward scalar is then reduced as the
    module would: ``"sum"``; ``"batchmean"`` (sum / batch size); ``"mean"``,
    which for ``CrossEntropyLoss`` / ``NLLLoss`` with class-index targets is
    the sum divided by the summed class weights of the non-ignored targets,
    like torch. Cost: a few small tensor ops; on CPU about 50 us a step for
    ``CrossEntropyLoss`` on a [128, 10] output, mostly the unreduced backward.
``"direct"``
    A callable returning one value per sample (``[B]`` or ``[B, ...]``): the
    backward scalar is the mean of all values. Cost: none.
``"vmap"``
    A callable returning a scalar: the scalar is used for backward as is, and
    the per-sample values come from ``torch.func.vmap`` of the callable over
    the batch, each sample seen as a batch of one, on the detached output under
    ``no_grad``. Cost: one more batched evaluation of the loss (never of the
    model) plus vmap's fixed overhead, about 0.2 ms a step on CPU.
``"loop"``
    When ``vmap`` cannot run the callable (``.item()``, data-dependent Python
    control flow, random ops), the callable is called once per sample. Cost:
    ``B`` small loss calls per step, noticeable for large batches; return
    per-sample values or use a loss module with ``reduction`` to avoid it.

Per-sample values are the loss averaged over each sample's non-batch
dimensions, except with ``reduction="batchmean"`` where they are summed (the
KL divergence of each sample, whose mean is the loss). For
``CrossEntropyLoss`` / ``NLLLoss``, positions whose target equals
``ignore_index`` are left out of the average; a sample with every position
ignored gets NaN (it has no loss), which summaries must skip.

A loss may return a tensor, a dict with a ``"loss"`` entry, or a tuple/list
whose first element is the loss; the other entries become ``extras``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

from onthefly.errors import ConfigError
from onthefly.session.batches import batch_size_of, describe_structure

__all__ = [
    "LossResult",
    "PerSampleLoss",
    "class_index_kept",
    "per_sample_grad_norm",
    "per_sample_values",
    "tokens_per_sample",
]

_REDUCTIONS = ("mean", "sum", "none", "batchmean")
_CHECK_RTOL = 1e-4
_CHECK_ATOL = 1e-6


@dataclass
class LossResult:
    """What :class:`PerSampleLoss` returns for one batch.

    Attributes:
        loss: the scalar to call ``backward`` on; equal to the user's loss value.
        per_sample: shape ``[B]``, float32, detached, on the output's device.
        extras: other values the loss returned (dict or tuple losses), detached.
    """

    loss: torch.Tensor
    per_sample: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class PerSampleLoss:
    """Compute the backward scalar and the per-sample losses from one model output.

    Args:
        loss_fn: an ``nn.Module`` loss or any callable ``loss_fn(output, target)``.

    Raises:
        ConfigError: when ``loss_fn`` is not callable.

    Example:
        >>> per_sample = PerSampleLoss(nn.CrossEntropyLoss())
        >>> result = per_sample(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        >>> tuple(result.per_sample.shape), result.loss.ndim
        ((4,), 0)
    """

    def __init__(self, loss_fn: Callable[..., Any]) -> None:
        if not callable(loss_fn):
            raise ConfigError(
                f"loss_fn must be callable as loss_fn(output, target), got {type(loss_fn).__name__}; "
                "pass for example nn.CrossEntropyLoss()."
            )
        self.loss_fn = loss_fn
        self._lock = threading.Lock()
        self._use_unreduced = isinstance(loss_fn, nn.Module) and getattr(loss_fn, "reduction", None) in _REDUCTIONS
        self._vmap_failed = False
        self._method: str | None = None

    @property
    def method(self) -> str | None:
        """How the last per-sample values were obtained: "unreduced", "direct", "vmap", "loop" (None before)."""
        return self._method

    def __call__(self, output: Any, target: Any, *, batch_size: int | None = None) -> LossResult:
        """Return the backward scalar, the per-sample losses and the extras for one batch.

        Args:
            output: the model's output (a tensor or any structure the loss takes).
            target: the batch's target.
            batch_size: the number of samples; found from the target (then the
                output) when not given.

        Returns:
            A :class:`LossResult`.

        Raises:
            ConfigError: when the loss returns something that is neither a
                scalar nor one value per sample.
        """
        size = _infer_batch_size(output, target) if batch_size is None else int(batch_size)
        if self._use_unreduced:
            value, extras = _split_result(self._call_unreduced(output, target))
            if _has_batch_dim(value, size):
                self._method = "unreduced"
                loss, per_sample = _reduce_unreduced(self.loss_fn, value, target, size)
                return LossResult(loss, per_sample, extras)
            # The module ignores reduction="none": treat it as a plain callable.
            self._use_unreduced = False
        value, extras = _split_result(self.loss_fn(output, target))
        if value.ndim == 0:
            return LossResult(value, self._per_sample_from_scalar(output, target, size), extras)
        if _has_batch_dim(value, size):
            self._method = "direct"
            return LossResult(value.mean(), _mean_over_sample(value.detach(), size), extras)
        raise ConfigError(
            f"the loss returned {describe_structure(value)} for a batch of {size} samples; "
            f"return a scalar or one value per sample (shape [{size}] or [{size}, ...])."
        )

    def check(self, output: Any, target: Any, *, batch_size: int | None = None) -> None:
        """Check, on the first batch and before training, that the loss fits the data.

        Calls the loss on a detached copy of ``output`` under ``no_grad`` (no
        graph, no model or optimizer change), then computes the per-sample
        values and compares the backward scalar with the user's own value. If
        a module's unreduced values do not reduce to the user's value (a custom
        module with its own reduction rule), later calls use the user's scalar
        and the ``vmap`` path instead.

        Args:
            output: the model's output for the first batch.
            target: the first batch's target.
            batch_size: the number of samples, when known.

        Raises:
            ConfigError: when the loss cannot take this output and target, or
                returns neither a scalar nor one value per sample.
        """
        output = tree_map(_detach, output)
        size = _infer_batch_size(output, target) if batch_size is None else int(batch_size)
        with torch.no_grad():
            try:
                raw = self.loss_fn(output, target)
            except Exception as exc:
                raise ConfigError(_incompatible_message(self.loss_fn, output, target, exc)) from exc
            expected, _ = _split_result(raw)
            if expected.ndim != 0 and not _has_batch_dim(expected, size):
                raise ConfigError(
                    f"the loss returned {describe_structure(expected)} for a batch of {size} samples; "
                    f"return a scalar or one value per sample (shape [{size}] or [{size}, ...])."
                )
            try:
                result = self(output, target, batch_size=size)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(_incompatible_message(self.loss_fn, output, target, exc)) from exc
            if self._method == "unreduced" and expected.ndim == 0:
                same = torch.allclose(
                    result.loss.float(), expected.float(), rtol=_CHECK_RTOL, atol=_CHECK_ATOL, equal_nan=True
                )
                if not same:
                    self._use_unreduced = False
                    self(output, target, batch_size=size)

    def _call_unreduced(self, output: Any, target: Any) -> Any:
        """Call the module loss with reduction="none", restoring its reduction afterwards."""
        module = self.loss_fn
        # A plain instance attribute is set in the instance dict directly (nn.Module.__setattr__ checks
        # for parameters, buffers and submodules first, a measurable part of this call's cost).
        table = vars(module) if "reduction" in vars(module) else None
        with self._lock:
            saved = module.reduction
            if table is not None:
                table["reduction"] = "none"
            else:
                module.reduction = "none"
            try:
                return module(output, target)
            finally:
                if table is not None:
                    table["reduction"] = saved
                else:
                    module.reduction = saved

    def _per_sample_from_scalar(self, output: Any, target: Any, size: int) -> torch.Tensor:
        """Evaluate a scalar-returning loss on each sample: vmap, else a loop."""
        output = tree_map(_detach, output)
        target = tree_map(_detach, target)
        with torch.no_grad():
            if not self._vmap_failed:
                try:
                    # a loss of the output alone (target None) sees the same None for every sample
                    values = vmap(self._one_sample, in_dims=(0, None if target is None else 0))(output, target)
                    self._method = "vmap"
                    return values.float()
                except Exception:  # vmap cannot trace this callable; remember and loop
                    self._vmap_failed = True
            self._method = "loop"
            values = [
                self._one_sample(_take(output, i, size), _take(target, i, size), batched=True) for i in range(size)
            ]
            if not values:
                return torch.empty(0, dtype=torch.float32)
            return torch.stack(values).float()

    def _one_sample(self, output: Any, target: Any, *, batched: bool = False) -> torch.Tensor:
        """The loss of one sample, seen by the callable as a batch of one."""
        if not batched:
            output, target = tree_map(_unsqueeze, output), tree_map(_unsqueeze, target)
        value, _ = _split_result(self.loss_fn(output, target))
        return value.mean() if value.ndim else value


def per_sample_grad_norm(
    model: nn.Module,
    loss_fn: Callable[..., Any],
    inputs: Any,
    targets: Any,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Return the L2 norm of each sample's own loss gradient over the trainable parameters.

    Uses ``torch.func``: ``vmap(grad(...))`` over ``functional_call`` of the
    model, each sample seen as a batch of one. The model runs in eval mode
    (dropout off, batch-norm on its running statistics) and is put back in its
    previous mode; its parameters, buffers and gradients, the optimizer and the
    random generators are left untouched.

    Cost: one more forward and backward of the model per batch, vectorised,
    with a copy of the gradients per sample in memory (bound it with
    ``chunk_size``). Measured on CPU (one thread) against a plain training
    step (forward, backward, SGD step), median of interleaved runs: about 1.4
    steps for a small CNN (batch 32, 1x28x28, two convolutions, 8 ms a step),
    about 14 steps for a tiny MLP (batch 64, 64-256-10, 0.4 ms a step) where
    torch.func's fixed overhead of a few milliseconds dominates. This is why
    it is off by default.

    Args:
        model: the model.
        loss_fn: the loss (module or callable) as given to the trainer.
        inputs: the batch's inputs (a tensor or a tuple of inputs, as for
            :func:`~onthefly.session.batches.call_model`).
        targets: the batch's target.
        chunk_size: samples per vectorised chunk (``None``: the whole batch).

    Returns:
        A detached float32 tensor of shape ``[B]``.

    Raises:
        ConfigError: when ``torch.func`` cannot differentiate this model/loss
            per sample (for example in-place buffer updates or random ops in
            eval mode); turn the per-sample gradient norm off.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> norms = per_sample_grad_norm(net, nn.CrossEntropyLoss(), torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
        >>> tuple(norms.shape)
        (5,)
    """
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def sample_loss(params: dict[str, torch.Tensor], x: Any, y: Any) -> torch.Tensor:
        x, y = tree_map(_unsqueeze, x), tree_map(_unsqueeze, y)
        args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        output = functional_call(model, (params, frozen, buffers), args)
        value, _ = _split_result(loss_fn(output, y))
        return value.float().mean()

    was_training = model.training
    model.eval()
    try:
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(trainable, inputs, targets)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot compute per-sample gradient norms for {type(model).__name__} with torch.func "
            f"({type(exc).__name__}: {exc}); turn the per-sample gradient norm off."
        ) from exc
    finally:
        model.train(was_training)
    size = _infer_batch_size(inputs, targets)
    squares = [g.reshape(size, -1).float().pow(2).sum(1) for g in grads.values()]
    if not squares:
        return torch.zeros(size, dtype=torch.float32)
    return torch.stack(squares).sum(0).sqrt().detach()


def per_sample_values(
    unreduced: torch.Tensor, size: int, *, kept: torch.Tensor | None = None, total: bool = False
) -> torch.Tensor:
    """One float32 value per sample from a loss' unreduced values.

    ``unreduced`` is ``[size, ...]`` (one or more values per sample), or ``[size * k]``:
    ``k`` tokens per sample laid out sample after sample, as ``output.view(-1, V)``
    against ``target.view(-1)`` gives them for a ``[size, k]`` batch. Each sample's
    value is the mean of its values (the sum with ``total``, for ``"batchmean"``),
    over the positions ``kept`` marks when given (the targets that are not
    ``ignore_index``); a sample with no kept position gets NaN.

    Raises:
        ValueError: when the values cannot be split into ``size`` samples.

    Example:
        >>> per_sample_values(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2, kept=torch.tensor([True, True, True, False]))
        tensor([2., 2.])
    """
    value = unreduced.detach()
    if value.ndim == 0 or (value.shape[0] != size and tokens_per_sample(value.shape[0], size) is None):
        raise ValueError(f"{tuple(value.shape)} loss values do not split into {size} samples")
    if size == 0:
        return torch.empty(0, dtype=torch.float32, device=value.device)
    flat = value.float().reshape(size, -1)
    if kept is None:
        return flat.sum(1) if total else flat.mean(1)
    mask = kept.reshape(size, -1)
    totals = flat.masked_fill(~mask, 0.0).sum(1)
    return totals if total else totals / mask.sum(1)  # 0 / 0 = NaN: every position of the sample ignored


def tokens_per_sample(values: int, size: int) -> int | None:
    """``k`` when ``values`` loss values are ``k`` tokens of each of ``size`` samples (``k >= 1``), else None.

    Example:
        >>> tokens_per_sample(12, 4), tokens_per_sample(10, 4), tokens_per_sample(4, 4)
        (3, None, 1)
    """
    if size <= 0 or values <= 0 or values % size:
        return None
    return values // size


def class_index_kept(target: Any, ignore_index: int, shape: torch.Size) -> torch.Tensor | None:
    """For ``cross_entropy`` / ``nll_loss``: the positions whose class-index target is not ``ignore_index``.

    None for probability (floating) targets or a target not shaped like the unreduced values.

    Example:
        >>> class_index_kept(torch.tensor([1, -100, 0]), -100, torch.Size([3]))
        tensor([ True, False,  True])
    """
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.shape != shape:
        return None
    return target != ignore_index


def _reduce_unreduced(
    module: nn.Module, value: torch.Tensor, target: Any, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (backward scalar, per-sample) from a module's unreduced values."""
    reduction = module.reduction
    mask = _kept_positions(module, value, target)
    if mask is not None and getattr(module, "weight", None) is None and bool(mask.all()):
        mask = None  # nothing ignored, no class weights: the plain mean is the module's own reduction
    if mask is not None and value.ndim == 1:
        per_sample = value.detach().float().masked_fill(~mask, math.nan)  # an ignored sample has no loss
    elif mask is not None:
        kept = mask.reshape(size, -1)
        totals = value.detach().float().masked_fill(~mask, 0.0).reshape(size, -1).sum(1)
        per_sample = totals / kept.sum(1)  # 0 / 0 = NaN for a sample with every position ignored
    elif reduction == "batchmean":
        per_sample = value.detach().float().reshape(size, -1).sum(1)
    else:
        per_sample = _mean_over_sample(value.detach(), size)
    if reduction == "sum":
        loss = value.sum()
    elif reduction == "batchmean":
        loss = value.sum() / size
    elif reduction == "mean" and mask is not None:
        loss = value.sum() / _target_weight_total(module, target, mask)
    else:  # "mean", or "none" (the user's loss is not a scalar: backpropagate the mean)
        loss = value.mean()
    return loss, per_sample


def _kept_positions(module: nn.Module, value: torch.Tensor, target: Any) -> torch.Tensor | None:
    """Positions counted by a class-index loss (target != ignore_index), else None."""
    if not isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return None
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.shape != value.shape:
        return None
    return target != module.ignore_index


def _target_weight_total(module: nn.Module, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The denominator torch uses for a class-index "mean": summed weights of kept targets."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return mask.sum()
    safe = target.masked_fill(~mask, 0)
    return (weight[safe] * mask).sum()


def _split_result(raw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Split what a loss returned into (loss tensor, extras)."""
    if isinstance(raw, torch.Tensor):
        return raw, {}
    if isinstance(raw, Mapping):
        if "loss" not in raw:
            raise ConfigError(
                f"the loss returned a dict without a 'loss' entry (keys: {sorted(map(str, raw))}); "
                "put the value to minimise under the key 'loss'."
            )
        value, named = raw["loss"], {str(k): v for k, v in raw.items() if k != "loss"}
    elif isinstance(raw, (tuple, list)) and len(raw) > 0:
        names = getattr(raw, "_fields", None) or [f"extra_{i}" for i in range(len(raw))]
        value, named = raw[0], dict(zip(names[1:], raw[1:]))
    else:
        raise ConfigError(
            f"the loss returned {describe_structure(raw)}; return a tensor, a dict with a 'loss' entry, "
            "or a tuple whose first element is the loss."
        )
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"the loss value is {describe_structure(value)}, not a tensor; compute it with torch operations."
        )
    extras = {k: _as_extra(v) for k, v in named.items() if isinstance(v, (torch.Tensor, int, float))}
    return value, extras


def _as_extra(value: torch.Tensor | int | float) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.tensor(float(value))


def _mean_over_sample(value: torch.Tensor, size: int) -> torch.Tensor:
    """Average a [B, ...] tensor over its non-batch dimensions, as float32."""
    if value.ndim == 1:
        return value.float()
    if size == 0:
        return torch.empty(0, dtype=torch.float32, device=value.device)
    return value.float().reshape(size, -1).mean(1)


def _has_batch_dim(value: torch.Tensor, size: int) -> bool:
    return value.ndim >= 1 and value.shape[0] == size


def _infer_batch_size(output: Any, target: Any) -> int:
    try:
        return batch_size_of(target)
    except ConfigError:
        return batch_size_of(output)


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value


def _unsqueeze(value: Any) -> Any:
    return value.unsqueeze(0) if isinstance(value, torch.Tensor) else value


def _take(value: Any, index: int, size: int) -> Any:
    """Slice sample `index` (keeping a batch dimension of one) out of every batched tensor."""

    def take(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.ndim >= 1 and leaf.shape[0] == size:
            return leaf[index : index + 1]
        return leaf

    return tree_map(take, value)


def _incompatible_message(loss_fn: Any, output: Any, target: Any, exc: Exception) -> str:
    name = type(loss_fn).__name__ if isinstance(loss_fn, nn.Module) else getattr(loss_fn, "__name__", "loss_fn")
    hint = "check that the loader yields (inputs, target) and that the loss takes (output, target)"
    if (
        isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))
        and isinstance(output, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and output.ndim == 3
        and target.ndim == 2
        and output.shape[:2] == target.shape
    ):
        hint = "for sequence outputs [B, T, C] return output.transpose(1, 2) from the model or pass a loss callable"
    return (
        f"the loss {name} cannot take the model output {describe_structure(output)} and the target "
        f"{describe_structure(target)} ({type(exc).__name__}: {exc}); {hint}."
    )
