"""Checks and small decisions the Trainer makes before training starts.

Pure functions of their arguments: each either answers or raises a
``ConfigError`` that says what to change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..session.batches import split_batch

__all__ = ["check_inputs", "first_forward", "describe", "resolve_device", "amp_mode", "hparams_of"]


def check_inputs(model, optimizer, loss_fn, train_loader) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise ConfigError(
            f"loss_fn must be callable (e.g. nn.CrossEntropyLoss()), or None for a model that computes its own "
            f"loss, got {type(loss_fn).__name__}"
        )
    if not isinstance(train_loader, torch.utils.data.DataLoader):
        raise ConfigError(f"train_loader must be a torch DataLoader, got {type(train_loader).__name__}")
    model_params = {id(p) for p in model.parameters()}
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    if opt_params and not any(id(p) in model_params for p in opt_params):
        raise ConfigError("the optimizer holds none of the model's parameters: build it from model.parameters()")


def first_forward(forward, loss, batch):
    """The first batch, with errors that say which input did not fit.

    Args:
        forward: the loop's :class:`~onthefly.session.model_io.BatchForward`.
        loss: the loss adapter (checked against this batch).
        batch: the first batch, on the device.

    Returns:
        ``(inputs, scores, target, loss_result)``.
    """
    try:
        inputs, scores, target, loss_input = forward(batch)
    except ConfigError:
        raise
    except Exception as exc:
        plan = forward._plan_for(batch)
        shown = {key: batch[key] for key in plan.inputs} if plan is not None else _inputs_of(batch)
        raise ConfigError(
            f"the model could not take the first batch of train_loader ({describe(shown)}): "
            f"{type(exc).__name__}: {exc}. Check that the loader yields (inputs, target) the model accepts"
        ) from exc
    loss.check(loss_input, target)
    return inputs, scores, target, loss(loss_input, target)


def _inputs_of(batch):
    try:
        return split_batch(batch)[0]
    except ConfigError:
        return batch


def describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor {tuple(obj.shape)} {obj.dtype} on {obj.device}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(describe(o) for o in obj) + ")"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in obj.items()) + "}"
    return type(obj).__name__


def resolve_device(model: nn.Module, device) -> torch.device:
    devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if device is not None:
        return torch.device(device)
    if len(devices) > 1:
        raise ConfigError(
            f"the model's parameters are on several devices ({sorted(map(str, devices))}): "
            "pass device=... to fit so OnTheFly moves the model and the data there"
        )
    return devices.pop() if devices else torch.device("cpu")


def amp_mode(amp: Any, device: torch.device) -> tuple[bool, torch.dtype | None]:
    if amp in (False, "off"):
        return False, None
    if amp == "auto":
        return (True, torch.float16) if device.type == "cuda" else (False, None)
    if amp == "bf16":
        return True, torch.bfloat16
    if device.type != "cuda":
        raise ConfigError(
            f"amp={amp!r} (float16 with a GradScaler) needs a CUDA device; use amp='bf16' or 'auto' on {device}"
        )
    return True, torch.float16


def hparams_of(optimizer: torch.optim.Optimizer, loader) -> dict[str, Any]:
    group = optimizer.param_groups[0]
    keep = {k: v for k, v in group.items() if k != "params" and isinstance(v, (int, float, str, bool, type(None)))}
    return {"optimizer": type(optimizer).__name__, **keep, "batch_size": getattr(loader, "batch_size", None)}
