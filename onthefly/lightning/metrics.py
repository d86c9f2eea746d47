"""Which of Lightning's logged values go into OnTheFly's rows (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["OWN_COLUMNS", "logged_values", "step_loss"]

OWN_COLUMNS = frozenset({
    "step", "epoch", "time", "loss", "lr", "grad_norm", "samples_per_s", "data_ms", "compute_ms", "rss_mb",
    "gpu_mem_mb", "gpu_util", "run_id",
})
"""Step columns OnTheFly fills itself; a logged value of the same name does not replace them."""

_EVAL_PREFIXES = ("val", "test")


def logged_values(metrics: Mapping[str, Any], *, stage: str) -> dict[str, float]:
    """The scalar values logged for ``stage`` ("train", "val" or "test"), as floats.

    For "train": everything except names starting with "val"/"test", epoch
    aggregates (``*_epoch``) and :data:`OWN_COLUMNS`. For "val"/"test": the
    names starting with that prefix. Non-scalar values are skipped.

    Example:
        >>> logged_values({"loss": 0.5, "acc": torch.tensor(0.9), "val_loss": 0.7}, stage="train")
        {'acc': 0.8999999761581543}
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


def step_loss(outputs: Any) -> float | None:
    """The loss a ``training_step`` returned (a tensor or a dict with "loss"), as a float, or None.

    Example:
        >>> step_loss({"loss": torch.tensor(0.25)})
        0.25
    """
    value = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    return _scalar(value)


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().float().item()  # device sync; once a step
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
