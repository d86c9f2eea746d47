"""Which of Lightning's logged values go into OnTheFly's rows (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["OWN_COLUMNS", "logged_values", "step_loss", "step_rows"]

OWN_COLUMNS = frozenset(
    {
        "step",
        "epoch",
        "time",
        "loss",
        "lr",
        "grad_norm",
        "samples_per_s",
        "data_ms",
        "compute_ms",
        "rss_mb",
        "gpu_mem_mb",
        "gpu_util",
        "run_id",
    }
)
"""Step columns OnTheFly fills itself; a logged value of the same name does not replace them."""

_EVAL_PREFIXES = ("val", "test")


def logged_values(metrics: Mapping[str, Any], *, stage: str) -> dict[str, float]:
    """The scalar values logged for ``stage`` ("train", "val" or "test"), as floats.

    For "train": everything except names starting with "val"/"test", epoch
    aggregates (``*_epoch``) and :data:`OWN_COLUMNS`. For "val"/"test": the
    names starting with that prefix. Non-scalar values are skipped.

    Example:
        >>> logged_values({"loss": 0.5, "acc": torch.tensor(0.9), "val_loss": 0.7}, stage="train")
        {'acc': 0.8999999761581421}
    """
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if stage == "train":
            if name.startswith(_EVAL_PREFIXES) or name.endswith("_epoch") or name in OWN_COLUMNS:
                continue
        elif not name.startswith(stage):
            continue
        number = _scalar(value)
        if number is not None:
            out[name] = number
    return out


def step_loss(outputs: Any) -> torch.Tensor | float | None:
    """The loss a ``training_step`` returned (a tensor or a dict with "loss"): a detached one-element
    tensor (read later, see :func:`step_rows`), a float, or None.

    Example:
        >>> step_loss({"loss": torch.tensor(0.25, requires_grad=True)})
        tensor(0.2500)
        >>> step_loss({"loss": 0.5}), step_loss({"accuracy": 1.0})
        (0.5, None)
    """
    value = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(value, torch.Tensor):
        return value.detach() if value.numel() == 1 else None
    return _scalar(value)


def step_rows(held: Sequence[tuple[dict, list, Any]]) -> list[dict]:
    """Step rows with their loss (mean of the batches' losses) and gradient norm filled in.

    Each held entry is ``(row, losses, grad_norm)``: the row as the step
    produced it, its batches' losses (tensors or floats) and the gradient norm
    (a 0-dim tensor or None). All tensors are read in one host copy.

    Example:
        >>> step_rows([({"step": 1}, [torch.tensor(1.0), 3.0], torch.tensor(2.0)), ({"step": 2}, [], None)])
        [{'step': 1, 'loss': 2.0, 'grad_norm': 2.0}, {'step': 2, 'loss': nan, 'grad_norm': None}]
    """
    tensors = [v for _, losses, norm in held for v in (*losses, norm) if isinstance(v, torch.Tensor)]
    values = iter(torch.stack([t.reshape(()).float() for t in tensors]).tolist() if tensors else [])
    rows = []
    for row, losses, norm in held:
        numbers = [next(values) if isinstance(v, torch.Tensor) else float(v) for v in losses]
        grad_norm = next(values) if isinstance(norm, torch.Tensor) else norm
        rows.append({**row, "loss": sum(numbers) / len(numbers) if numbers else math.nan, "grad_norm": grad_norm})
    return rows


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().float().item()  # device sync; once a step
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
