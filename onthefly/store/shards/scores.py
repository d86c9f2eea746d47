"""Classification fields derived from class scores, in numpy.

The training loops hand the writer each batch's class scores (``[B, C]``
logits, log-probabilities or probabilities' logs) with the labels instead of
computing the fields themselves: done once a step on the training thread,
after the model's kernels, even small numpy work starts cold and costs about
ten times what it costs in bulk. The writer's thread derives the fields for
a whole part at once with :func:`fields_from_scores`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["top_two", "fields_from_scores"]


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top-1 class and the softmax margin (top-1 minus top-2 probability) of each row.

    Args:
        scores: ``[N, C]`` scores, ``C >= 2``; rows with a non-finite score
            get a NaN margin.

    Returns:
        ``(pred, margin)``: int64 and float32 arrays of ``N`` values.

    Example:
        >>> pred, margin = top_two(np.array([[2.0, 0.0], [0.0, 0.0]]))
        >>> pred.tolist(), np.round(margin, 3).tolist()
        ([0, 0], [0.762, 0.0])
    """
    n = scores.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    pred = scores.argmax(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(scores - scores[np.arange(n), pred][:, None])  # the top class becomes exp(0) = 1
        second = np.partition(e, -2, axis=1)[:, -2]
        margin = (1.0 - second) / e.sum(axis=1)
    return pred.astype(np.int64, copy=False), margin.astype(np.float32, copy=False)


def fields_from_scores(scores: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """``pred``, ``correct`` and ``margin`` of each row, from its scores and label.

    Example:
        >>> fields_from_scores(np.array([[0.1, 3.0]]), np.array([1]))["correct"].tolist()
        [True]
    """
    pred, margin = top_two(scores)
    return {"pred": pred, "correct": pred == label, "margin": margin}
