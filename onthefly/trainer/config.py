"""The Trainer's settings, checked once before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["TrainerConfig"]

_AMP_CHOICES = ("auto", True, False, "on", "off", "bf16", "fp16")
_INTERVALS = ("epoch", "step")


@dataclass(frozen=True)
class TrainerConfig:
    project: str
    run_name: str | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    do_test_after: bool = False
    val_every_n_epochs: int = 0
    seed: int = 0
    amp: Any = "auto"
    grad_clip_norm: float | None = None
    accumulate_grad_batches: int = 1
    dashboard_port: int | None = None
    home: str | None = None
    scheduler_interval: str = "epoch"
    checkpoint_every_n_epochs: int = 1
    per_sample_grad_norm: bool = False
    connect_dashboard: bool = True
    progress: bool | None = None  # None: a bar when stdout is a terminal
    nonfinite_patience: int = 5

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("Trainer(...) got unusable arguments: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if k == "home" and v is not None else v) for k, v in asdict(self).items()}


def _problems(c: TrainerConfig):
    if not isinstance(c.project, str) or not c.project.strip():
        yield "project must be a non-empty string, e.g. project='demo'"
    if c.run_name is not None and not isinstance(c.run_name, str):
        yield f"run_name must be a string or None, got {c.run_name!r}"
    for name in ("max_epochs", "max_steps"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            yield f"{name} must be a positive integer or None, got {value!r}"
    if c.max_epochs is None and c.max_steps is None:
        yield "set max_epochs or max_steps (or both) so training knows when to stop"
    if not isinstance(c.val_every_n_epochs, int) or c.val_every_n_epochs < 0:
        yield f"val_every_n_epochs must be an integer >= 0 (0 turns validation off), got {c.val_every_n_epochs!r}"
    if not isinstance(c.seed, int) or isinstance(c.seed, bool):
        yield f"seed must be an integer, got {c.seed!r}"
    if c.amp not in _AMP_CHOICES:
        yield f"amp must be one of {_AMP_CHOICES}, got {c.amp!r}"
    if c.grad_clip_norm is not None and not (isinstance(c.grad_clip_norm, (int, float)) and c.grad_clip_norm > 0):
        yield f"grad_clip_norm must be a positive number or None, got {c.grad_clip_norm!r}"
    if not isinstance(c.accumulate_grad_batches, int) or c.accumulate_grad_batches < 1:
        yield f"accumulate_grad_batches must be an integer >= 1, got {c.accumulate_grad_batches!r}"
    if c.dashboard_port is not None and not (isinstance(c.dashboard_port, int) and 0 < c.dashboard_port < 65536):
        yield f"dashboard_port must be a TCP port (1-65535) or None, got {c.dashboard_port!r}"
    if c.scheduler_interval not in _INTERVALS:
        yield f"scheduler_interval must be 'epoch' or 'step', got {c.scheduler_interval!r}"
    if not isinstance(c.checkpoint_every_n_epochs, int) or c.checkpoint_every_n_epochs < 0:
        yield (
            "checkpoint_every_n_epochs must be an integer >= 0 (0: only the final checkpoint), "
            f"got {c.checkpoint_every_n_epochs!r}"
        )
    if not isinstance(c.nonfinite_patience, int) or c.nonfinite_patience < 1:
        yield f"nonfinite_patience must be an integer >= 1, got {c.nonfinite_patience!r}"
