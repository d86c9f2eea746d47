"""Pure functions that summarise the per-sample losses of one pass.

A pass summary (count, mean, quantiles, histogram) is what the dashboard
draws per epoch, so its views cost O(epochs) rather than O(rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onthefly.errors import ConfigError

__all__ = ["QUANTILES", "summarize_losses", "accuracy"]

QUANTILES = {"p10": 0.10, "p50": 0.50, "p90": 0.90, "p99": 0.99}
"""The quantiles a summary holds, by key."""

_WIDEN_REL = 1e-3  # a degenerate range [v, v] becomes v -/+ max(|v| * this, _WIDEN_ABS)
_WIDEN_ABS = 1e-6


def summarize_losses(loss: np.ndarray, *, bins: int = 50) -> dict[str, Any]:
    """Count, mean, extremes, quantiles and histogram of per-sample losses.

    Non-finite values (nan, inf) are left out of every statistic and counted
    under ``"nonfinite"``; ``count`` counts every value given, so
    ``count - nonfinite`` values enter the statistics and the histogram.

    Args:
        loss: the per-sample losses of one pass, any shape (flattened).
        bins: number of histogram bins, linear over ``[min, max]`` of the
            finite values (a range of one value is widened a little so the
            bins have width).

    Returns:
        A dict with ``count``, ``nonfinite``, ``mean``, ``min``, ``max``,
        ``p10``, ``p50``, ``p90``, ``p99`` (Python floats, linear
        interpolation; ``None`` when no finite value was given),
        ``hist_edges`` (``bins + 1`` floats) and ``hist_counts`` (``bins``
        ints), both empty lists when no finite value was given.

    Raises:
        ConfigError: ``bins`` is smaller than 1.

    Example:
        >>> s = summarize_losses(np.array([1.0, 2.0, 3.0, np.nan]), bins=2)
        >>> s["count"], s["nonfinite"], s["p50"], s["hist_counts"]
        (4, 1, 2.0, [1, 2])
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"bins={bins!r} is not a positive integer: pass bins >= 1 (default 50)")
    values = np.asarray(loss, dtype=np.float64).ravel()
    finite_mask = np.isfinite(values)
    finite = values[finite_mask]
    summary: dict[str, Any] = {
        "count": int(values.size),
        "nonfinite": int(values.size - finite.size),
    }
    if finite.size == 0:
        summary.update({"mean": None, "min": None, "max": None})
        summary.update({key: None for key in QUANTILES})
        summary.update({"hist_edges": [], "hist_counts": []})
        return summary
    lo, hi = float(finite.min()), float(finite.max())
    quantiles = np.quantile(finite, list(QUANTILES.values()), method="linear")
    summary.update({"mean": float(finite.mean()), "min": lo, "max": hi})
    summary.update({key: float(q) for key, q in zip(QUANTILES, quantiles)})
    edges = _histogram_edges(lo, hi, int(bins))
    counts, _ = np.histogram(finite, bins=edges)
    summary["hist_edges"] = [float(e) for e in edges]
    summary["hist_counts"] = [int(c) for c in counts]
    return summary


def accuracy(correct: np.ndarray) -> float | None:
    """Fraction of true values, or ``None`` when nothing was given.

    Args:
        correct: booleans (or 0/1), any shape.

    Returns:
        The mean of ``correct`` as a Python float, ``None`` for an empty array.

    Example:
        >>> accuracy(np.array([True, False, True, True]))
        0.75
    """
    values = np.asarray(correct).ravel()
    if values.size == 0:
        return None
    return float(np.count_nonzero(values) / values.size)


def _histogram_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if hi <= lo:
        half = max(abs(lo) * _WIDEN_REL, _WIDEN_ABS)
        lo, hi = lo - half, hi + half
    return np.linspace(lo, hi, bins + 1)
