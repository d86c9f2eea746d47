"""What the dashboard is sent about a run: pure functions from records to notification payloads.

The recorder builds each payload here and hands it to the link; the shapes are
those of docs/protocol.md.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .state import Position

__all__ = ["checkpoint_payload", "epoch_payload", "finite_or_none", "status_payload", "test_payload"]


def finite_or_none(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (JSON has no NaN).

    Example:
        >>> finite_or_none(0.5), finite_or_none(float("nan"))
        (0.5, None)
    """
    return value if value is not None and math.isfinite(value) else None


def status_payload(*, state: str, position: Position, session_id: str | None, run_id: str | None, project: str,
                   checkpoint: str | None) -> dict[str, Any]:
    """``{state, step, epoch, session, run, project, pid, max_epochs, checkpoint}``."""
    return {
        "state": state, "step": position.step, "epoch": position.epoch, "session": session_id, "run": run_id,
        "project": project, "pid": os.getpid(), "max_epochs": position.max_epochs, "checkpoint": checkpoint,
    }


def test_payload(*, run_id: str, split: str, position: Position, result: dict[str, Any]) -> dict[str, Any]:
    """A recorded test: ``result`` is ``{loss, count, metrics}`` as an evaluation returns it."""
    return {"run": run_id, "split": split, "step": position.step, "epoch": position.epoch,
            "loss": finite_or_none(result["loss"]), "metrics": result["metrics"], "count": result["count"]}


def checkpoint_payload(info: Any, reason: str) -> dict[str, Any]:
    """A written checkpoint (its :class:`~onthefly.store.records.CheckpointInfo`)."""
    return {"id": info.id, "run": info.run_id, "step": info.step, "epoch": info.epoch,
            "reason": reason, "path": info.path, "bytes": info.bytes}


def epoch_payload(s: Any) -> dict[str, Any]:
    """A pass's summary (its :class:`~onthefly.store.records.EpochSummary`)."""
    return {
        "run": s.run_id, "split": s.split, "epoch": s.epoch, "step": s.step, "count": s.count,
        "mean": s.mean, "min": s.min, "max": s.max,
        "quantiles": {"p10": s.p10, "p50": s.p50, "p90": s.p90, "p99": s.p99},
        "hist": {"edges": s.hist_edges, "counts": s.hist_counts}, "metrics": s.metrics,
    }
