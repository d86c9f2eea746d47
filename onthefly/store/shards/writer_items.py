"""What the shard writer's queue carries from the caller's thread to its collector.

One small class per kind of item; the collector dispatches on the class. Rows
(:class:`SampleRows`, :class:`StepRows`) wait for the collector's next drain;
the others wake it, because their caller waits on their future.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any

from onthefly.store.records import PassKey

__all__ = ["Close", "EndPass", "Flush", "SampleRows", "StepRows", "is_urgent"]


@dataclass(slots=True)
class SampleRows:
    """Per-sample columns of one pass: ``step`` is one int or one per row."""

    key: PassKey
    step: Any
    columns: dict[str, Any]
    rows: int


@dataclass(slots=True)
class StepRows:
    """Step-metric columns of one run."""

    run_id: str
    columns: dict[str, Any]
    rows: int


@dataclass(slots=True)
class EndPass:
    """Seal a pass; ``future`` gets its summary."""

    key: PassKey
    step: int
    metrics: dict[str, Any]
    future: concurrent.futures.Future


@dataclass(slots=True)
class Flush:
    """Resolve ``future`` once everything queued before is in listed shards."""

    future: concurrent.futures.Future


@dataclass(slots=True)
class Close:
    """Write what is left, seal the step shards and stop; ``future`` says when done."""

    future: concurrent.futures.Future


def is_urgent(item: Any) -> bool:
    """Whether a caller waits for ``item`` (it wakes the collector): all but rows."""
    return not isinstance(item, (SampleRows, StepRows))
