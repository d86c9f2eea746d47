"""The live ``status`` the recorder answers: a pure function of its state and position.

The other records' wire shapes (epoch summary, test, checkpoint, report) are
built in :mod:`onthefly.protocol.payloads`, one function per record.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .state import Position

__all__ = ["finite_or_none", "status_payload"]


def finite_or_none(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (JSON has no NaN).

    Example:
        >>> finite_or_none(0.5), finite_or_none(float("nan"))
        (0.5, None)
    """
    return value if value is not None and math.isfinite(value) else None


def status_payload(
    *, state: str, position: Position, session_id: str | None, run_id: str | None, project: str, checkpoint: str | None
) -> dict[str, Any]:
    """``{state, step, epoch, session, run, project, pid, max_epochs, checkpoint}``."""
    return {
        "state": state,
        "step": position.step,
        "epoch": position.epoch,
        "session": session_id,
        "run": run_id,
        "project": project,
        "pid": os.getpid(),
        "max_epochs": position.max_epochs,
        "checkpoint": checkpoint,
    }
