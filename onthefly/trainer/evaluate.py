"""Validation and test passes: per-sample rows, a summary, and nothing disturbed.

``evaluate`` puts back what it touches: the model's train/eval mode and every
random number generator (so a mid-run test leaves training bitwise unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from ..session.batches import move_to_device
from ..session.classify import classification_fields
from ..session.losses import PerSampleLoss
from ..session.model_io import forward_batch
from ..session.rng import preserved_rng
from ..session.sampling import TrackedLoader

__all__ = ["evaluate"]


def evaluate(
    model: torch.nn.Module,
    loader: TrackedLoader,
    loss: PerSampleLoss,
    *,
    device: torch.device,
    log_rows: Callable[..., None],
    autocast: Callable[[], Any] = nullcontext,
    should_abort: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Run ``model`` over ``loader`` without gradients and log per-sample rows.

    Args:
        model: the model; its train/eval mode is restored afterwards.
        loader: a tracked loader (sample ids come from its batch sampler).
        loss: the per-sample loss adapter (a PerSampleLoss, or a ModelOutputLoss for a model computing its own).
            Dict batches a transformers-style forward takes are spread into it (model_io.forward_batch).
        device: where batches go.
        log_rows: called per batch as ``log_rows(sample_id, loss, **classification_fields)``.
        autocast: a context factory (AMP) for the forward pass.
        should_abort: polled between batches; a true answer ends the pass early.

    Returns:
        ``{"loss": mean per-sample loss, "count": n, "metrics": {...}}``.
    """
    was_training = model.training
    total, count, correct, labelled, nonfinite = 0.0, 0, 0, 0, 0
    model.eval()
    try:
        with preserved_rng(), torch.no_grad():
            loader.set_epoch(0)
            for sample_ids, batch in loader:
                if should_abort():
                    break
                with autocast():
                    step = forward_batch(model, move_to_device(batch, device))
                    output, target = step.scores, step.target
                    result = loss(step.loss_input(loss), target)
                per_sample = result.per_sample.float()
                fields = classification_fields(output, target) or {}
                log_rows(sample_ids, per_sample.cpu().numpy(), **fields)
                finite = torch.isfinite(per_sample)
                total += float(per_sample[finite].sum())
                count += int(finite.sum())
                nonfinite += int((~finite).sum())
                if "correct" in fields:
                    correct += int(fields["correct"].sum())
                    labelled += int(fields["correct"].size)
    finally:
        model.train(was_training)
    metrics: dict[str, Any] = {}
    if labelled:
        metrics["accuracy"] = correct / labelled
    if nonfinite:
        metrics["nonfinite"] = nonfinite
    return {"loss": (total / count) if count else math.nan, "count": count + nonfinite, "metrics": metrics}
