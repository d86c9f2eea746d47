"""Each record's wire shape, owned by one function.

The training process, ``onthefly serve`` and the store's read side all send
the same records: a pass's loss summary (the ``epoch`` notification and,
with its hardest samples, the ``report`` result), a test's result (the
``test`` notification and result) and a saved checkpoint (the ``checkpoint``
notification and result). Each is shaped here and nowhere else, so the
fields of docs/protocol.md have one implementation; numbers that JSON cannot
hold (NaN, infinities) become ``None``.

The functions read plain attributes, so any object holding them will do
(``onthefly.store`` records among them): this package imports nothing of the
store.

Example:
    >>> from types import SimpleNamespace
    >>> s = SimpleNamespace(p10=0.1, p50=0.5, p90=float("nan"), p99=2.0)
    >>> quantiles(s)
    {'p10': 0.1, 'p50': 0.5, 'p90': None, 'p99': 2.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "CheckpointRecord",
    "PassSummary",
    "checkpoint",
    "epoch_summary",
    "histogram",
    "quantiles",
    "report",
    "test_result",
]

QUANTILE_KEYS = ("p10", "p50", "p90", "p99")


class PassSummary(Protocol):
    """What a pass's loss summary holds (``onthefly.store`` calls it ``EpochSummary``)."""

    run_id: str
    split: str
    epoch: int
    step: int
    count: int
    mean: float | None
    min: float | None
    max: float | None
    p10: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    hist_edges: Sequence[float]
    hist_counts: Sequence[int]
    metrics: Mapping[str, Any] | None


class CheckpointRecord(Protocol):
    """What a saved checkpoint's record holds (``onthefly.store`` calls it ``CheckpointInfo``)."""

    id: str
    run_id: str
    step: int
    epoch: int
    reason: str
    path: str
    bytes: int


def _number(value: Any) -> float | None:
    """A finite float, or None for None, NaN and infinities."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def quantiles(summary: Any) -> dict[str, float | None]:
    """``{p10, p50, p90, p99}`` of a pass's losses."""
    return {key: _number(getattr(summary, key)) for key in QUANTILE_KEYS}


def histogram(edges: Iterable[float] | None, counts: Iterable[int] | None) -> dict[str, list[Any]]:
    """``{edges, counts}``: ``n + 1`` bin edges and ``n`` counts (both empty for a pass without finite losses)."""
    return {"edges": [_number(e) for e in edges or ()], "counts": [int(c) for c in counts or ()]}


def epoch_summary(summary: PassSummary) -> dict[str, Any]:
    """The ``epoch`` notification: a finished pass's loss summary, histogram included.

    Example:
        >>> from onthefly.store.records import EpochSummary
        >>> s = EpochSummary("r1", "train", 0, 10, 4, 0.5, 0.1, 0.9, 0.1, 0.5, 0.8, 0.9, [0.0, 1.0], [4])
        >>> epoch_summary(s)["hist"]
        {'edges': [0.0, 1.0], 'counts': [4]}
    """
    return {
        "run": summary.run_id,
        "split": summary.split,
        "epoch": summary.epoch,
        "step": summary.step,
        "count": summary.count,
        "mean": _number(summary.mean),
        "min": _number(summary.min),
        "max": _number(summary.max),
        "quantiles": quantiles(summary),
        "hist": histogram(summary.hist_edges, summary.hist_counts),
        "metrics": summary.metrics,
    }


def report(summary: PassSummary, hardest: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``report`` result: a pass's loss summary and its hardest samples (highest loss first).

    Args:
        summary: the pass's summary (``min``, ``max`` and ``metrics`` are not part of a report).
        hardest: ``{sample_id, loss, label, pred}`` per sample, already JSON-ready.
    """
    return {
        "run": summary.run_id,
        "split": summary.split,
        "epoch": summary.epoch,
        "step": summary.step,
        "count": summary.count,
        "mean": _number(summary.mean),
        "quantiles": quantiles(summary),
        "hist": histogram(summary.hist_edges, summary.hist_counts),
        "hardest": list(hardest),
    }


def test_result(
    *, run: str | None, split: str, step: int, epoch: int, loss: float | None, metrics: Mapping[str, Any], count: int
) -> dict[str, Any]:
    """The ``test`` notification and result: an evaluation of the model on a split at a step."""
    return {
        "run": run,
        "split": split,
        "step": step,
        "epoch": epoch,
        "loss": _number(loss),
        "metrics": metrics,
        "count": count,
    }


def checkpoint(info: CheckpointRecord) -> dict[str, Any]:
    """The ``checkpoint`` notification and result: a saved checkpoint (``path`` relative to the session)."""
    return {
        "id": info.id,
        "run": info.run_id,
        "step": info.step,
        "epoch": info.epoch,
        "reason": info.reason,
        "path": info.path,
        "bytes": info.bytes,
    }
