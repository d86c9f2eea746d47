"""The small values a loop hands its :class:`~onthefly.session.recorder.Recorder`.

:class:`Position` is where training is (read from any thread for the status);
:class:`TrainingState` is what a checkpoint keeps of the loop's objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Position", "TrainingState", "checkpoint_parts", "written_in_background"]


@dataclass(frozen=True)
class Position:
    """Where training is: optimizer steps done, epochs finished, the epoch limit."""

    step: int = 0
    epoch: int = 0
    max_epochs: int | None = None


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint keeps of a loop, besides the RNG (the recorder captures that).

    Attributes:
        step / epoch: the position the state belongs to.
        model: the model's ``state_dict()``.
        optimizer / scheduler / scaler: their ``state_dict()``, or None.
        sampler: the data position (``{"epoch", "batch", "step", "seed", ...}``) a resume starts from.
        extra: integration-specific JSON-able values kept beside the run's record (e.g. ``{"lightning": ...}``).
    """

    step: int
    epoch: int
    model: Any
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    sampler: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


def written_in_background(reason: str) -> bool:
    """Whether a checkpoint taken for ``reason`` is written while training goes on.

    The automatic epoch checkpoints are: nobody waits for them, and on a big
    model their write and fsync would stall every epoch. The ones a caller
    waits for (manual, pause, export, final) are written before the call
    returns.

    Example:
        >>> written_in_background("epoch"), written_in_background("manual")
        (True, False)
    """
    return reason == "epoch"


def checkpoint_parts(
    state: TrainingState, *, rng: dict, session_id: str, run: dict[str, Any], version: str
) -> dict[str, Any]:
    """What a checkpoint of ``run`` (``{id, name, kind, config}``) is saved with: the loop's state,
    the RNG, and the run's record beside them (so a resume elsewhere knows where it came from).

    Returns:
        The keyword arguments of ``CheckpointStore.save`` (all but ``reason``).
    """
    extra = {
        **(state.extra or {}),
        "session_id": session_id,
        "step": state.step,
        "epoch": state.epoch,
        "run": {"id": run["id"], "name": run["name"], "kind": run["kind"], "status": "running"},
        "config": run.get("config"),
        "version": version,
    }
    return {
        "run_id": run["id"],
        "step": state.step,
        "epoch": state.epoch,
        "model": state.model,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "rng": rng,
        "sampler": state.sampler,
        "extra": extra,
    }
