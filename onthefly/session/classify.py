"""Per-sample classification fields: label, prediction, correctness and margin.

Two layouts are recognised:

* **multiclass**: output ``[B, C]`` (``C >= 2``) logits, log-probabilities or
  scores, target ``[B]`` integer class ids. ``pred`` is the top-1 class and
  ``margin`` the softmax probability of the top-1 class minus that of the
  top-2 class (log-probabilities give the same softmax as the probabilities).
* **binary**: output ``[B]`` or ``[B, 1]`` logits, target of the same number of
  elements holding 0/1 floats. ``p = sigmoid(output)``, ``pred = p > 0.5`` and
  ``margin = |2p - 1|``. With ``probabilities=True`` the output is taken as
  ``p`` directly (a model ending in a sigmoid, trained with ``BCELoss``).

Anything else (regression, sequences, soft targets) gets no fields.

Telling a binary target from a regression target needs a look at the values,
which costs one device-to-host sync; :func:`classification_kind` does it, and
the training loop calls it once on the first batch, then passes ``kind=`` on
every step so that :func:`classification_fields` never syncs.

The fields are returned as numpy arrays, ready for the writer. On the CPU
the scores are reduced in numpy (:func:`onthefly.store.shards.scores.top_two`); on
an accelerator, on the device. The training loops hand the writer the scores
themselves instead when :func:`scores_deferred` says so (CPU scores with few
classes): once a step, after the model's kernels, even this small work starts
cold on the training thread, while the writer's thread does it for a whole
part at once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from onthefly.errors import ConfigError
from onthefly.store.shards.scores import top_two

__all__ = [
    "ClassificationKind",
    "DEFERRED_MAX_CLASSES",
    "classification_kind",
    "classification_fields",
    "scores_deferred",
]

ClassificationKind = Literal["multiclass", "binary"]
_KINDS = ("multiclass", "binary")

DEFERRED_MAX_CLASSES = 64
"""Up to this many classes, the scores travel to the writer (at most 256 bytes a row)."""


def classification_kind(output: torch.Tensor, target: torch.Tensor) -> ClassificationKind | None:
    """Tell whether an output/target pair is multiclass, binary, or neither.

    Args:
        output: the model's output for one batch.
        target: the batch's target.

    Returns:
        ``"multiclass"``, ``"binary"`` or ``None``. A binary target must hold
        only 0 and 1 (this check reads the values: one host sync).

    Example:
        >>> classification_kind(torch.zeros(4, 3), torch.tensor([0, 2, 1, 1]))
        'multiclass'
        >>> classification_kind(torch.zeros(4), torch.tensor([0.0, 1.0, 1.0, 0.0]))
        'binary'
        >>> classification_kind(torch.zeros(4), torch.tensor([0.3, 1.0, 2.0, 0.0])) is None
        True
    """
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    if not output.is_floating_point() or output.ndim == 0:
        return None
    batch = output.shape[0]
    if _is_multiclass_shape(output, target):
        return "multiclass"
    binary_output = output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)
    if binary_output and target.shape[:1] == (batch,) and target.numel() == batch and target.is_floating_point():
        with torch.no_grad():
            is_01 = bool(((target == 0) | (target == 1)).all())  # host sync, once
        return "binary" if is_01 else None
    return None


def classification_fields(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: ClassificationKind | None | Literal["auto"] = "auto",
    probabilities: bool = False,
) -> dict[str, np.ndarray] | None:
    """Compute label, pred, correct and margin for every sample of a batch.

    Args:
        output: the model's output for the batch.
        target: the batch's target.
        kind: ``"multiclass"`` or ``"binary"`` when already known (no host
            sync), ``None`` for no fields, or ``"auto"`` to call
            :func:`classification_kind` (one sync for binary-looking batches).
        probabilities: for the binary kind, the output already holds
            probabilities instead of logits.

    Returns:
        ``None`` when the batch is not a classification batch; otherwise a dict
        of numpy arrays (copied to the host), each of shape ``[B]``:
        ``label`` (int64), ``pred`` (int64), ``correct`` (bool), ``margin``
        (float32).

    Raises:
        ConfigError: when ``kind`` is not one of the values above, or names a
            kind the shapes do not fit.

    Example:
        >>> f = classification_fields(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> f["pred"].tolist(), f["correct"].tolist()
        ([0, 1], [True, False])
    """
    if kind == "auto":
        kind = classification_kind(output, target)
    if kind is None:
        return None
    if kind not in _KINDS:
        raise ConfigError(f"kind must be 'auto', 'multiclass', 'binary' or None, got {kind!r}.")
    with torch.no_grad():
        if kind == "multiclass":
            if not _is_multiclass_shape(output, target):
                raise ConfigError(
                    f"kind='multiclass' needs output [B, C] and integer target [B], got output "
                    f"{tuple(output.shape)} and target {tuple(target.shape)} {target.dtype}; pass kind='auto'."
                )
            return _multiclass_fields(output.detach(), target.detach())
        if output.numel() != target.numel() or output.numel() != output.shape[0]:
            raise ConfigError(
                f"kind='binary' needs output [B] or [B, 1] and a target of B values, got output "
                f"{tuple(output.shape)} and target {tuple(target.shape)}; pass kind='auto'."
            )
        return _binary_fields(output.detach(), target.detach(), probabilities=probabilities)


def scores_deferred(output: torch.Tensor, target: torch.Tensor, *, kind: ClassificationKind | None) -> bool:
    """Whether the writer's thread derives this batch's fields from its scores (a pure decision).

    For multiclass scores on the CPU with at most :data:`DEFERRED_MAX_CLASSES`
    classes; anything else gets its fields computed where the scores are.
    """
    return (
        kind == "multiclass"
        and output.device.type == "cpu"
        and _is_multiclass_shape(output, target)
        and output.shape[1] <= DEFERRED_MAX_CLASSES
    )


def _is_multiclass_shape(output: torch.Tensor, target: torch.Tensor) -> bool:
    return (
        output.ndim == 2
        and output.shape[1] >= 2
        and target.ndim == 1
        and target.shape[0] == output.shape[0]
        and not target.is_floating_point()
        and not target.is_complex()
        and target.dtype != torch.bool
    )


def _multiclass_fields(output: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    pred, margin = _top_two(output.float())
    label = _host(target, np.int64)
    return {"label": label, "pred": pred, "correct": pred == label, "margin": margin}


def _top_two(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class, softmax top-1 minus top-2 probability) of each row of ``scores`` ``[B, C]``.

    On the CPU the scores are read as numpy (no copy) and reduced there; on
    an accelerator the reduction runs on the device and only ``[B]`` values
    per field come back.
    """
    if scores.device.type != "cpu":
        return _top_two_on_device(scores)
    return top_two(scores.numpy())


def _top_two_on_device(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    top = scores.topk(2, dim=1)
    p = torch.exp(top.values - torch.logsumexp(scores, dim=1, keepdim=True))
    return top.indices[:, 0].cpu().numpy(), (p[:, 0] - p[:, 1]).cpu().numpy().astype(np.float32, copy=False)


def _binary_fields(output: torch.Tensor, target: torch.Tensor, *, probabilities: bool) -> dict[str, np.ndarray]:
    values = output.reshape(-1).float()
    p = (values if probabilities else torch.sigmoid(values)).cpu().numpy()
    pred = (p > 0.5).astype(np.int64)
    label = _host(target.reshape(-1), np.int64)
    return {"label": label, "pred": pred, "correct": pred == label, "margin": np.abs(2.0 * p - 1.0, dtype=np.float32)}


def _host(tensor: torch.Tensor, dtype: type) -> np.ndarray:
    return tensor.cpu().numpy().astype(dtype, copy=False)
