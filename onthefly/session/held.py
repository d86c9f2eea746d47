"""Per-sample rows held on the training thread and handed to the writer a few steps at a time.

Once a step, after the model's kernels, every small piece of work on the
training thread starts cold and costs several times what it costs in a loop
(docs/benchmarks.md). So instead of converting and queueing each batch's rows
at once, the loop keeps references to the batch's tensors (:class:`HeldBatch`)
and every :data:`HOLD_STEPS` steps, or :data:`HOLD_SECONDS` after the first
held batch, they are handed over together (:class:`Holding`): :func:`merged`
concatenates them into one ``log_samples`` call per pass, one device-to-host
copy and one queue entry for many steps. Step rows are held the same way.

The loop's own tensors (per-sample losses, detached outputs) are held by
reference until then, and the concatenation copies them. The labels are
copied when a batch is held: they come from the loader's target, and loaders
that reuse their batch buffers (FFCV, DALI, a collate writing into one
tensor) would otherwise overwrite them before they are handed over.

:func:`merged` decides what is logged (a pure function); :class:`Holding`
holds, times and hands over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["HOLD_SECONDS", "HOLD_STEPS", "HeldBatch", "Holding", "PassColumns", "merged"]

HOLD_STEPS = 16
"""Batches held before they are handed to the writer together."""

HOLD_SECONDS = 0.25
"""The longest a held batch waits (slow steps are handed over every step)."""


@dataclass(frozen=True)
class HeldBatch:
    """One batch's per-sample rows, as the loop produced them.

    Attributes:
        run_id, split, epoch, step: where the rows go.
        ids: the sample ids (numpy, one per row).
        loss: the per-sample losses, ``[n]`` float32 on any device.
        scores: ``[n, C]`` CPU class scores, with ``label``, for the writer to
            derive pred, correct and margin from; or None.
        label: ``[n]`` integer labels going with ``scores``; or None.
        fields: classification fields already computed (numpy, one per row),
            when ``scores`` is None.
    """

    run_id: str
    split: str
    epoch: int
    step: int
    ids: np.ndarray
    loss: torch.Tensor
    scores: torch.Tensor | None = None
    label: torch.Tensor | None = None
    fields: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        # The target may be the loader's buffer: hold a copy of the labels (a few µs), not a view.
        if self.label is not None:
            object.__setattr__(self, "label", _own(self.label))
        if self.fields is not None and "label" in self.fields:
            object.__setattr__(self, "fields", {**self.fields, "label": _own(self.fields["label"])})

    def layout(self) -> tuple:
        """What must be equal for batches to be logged in one call."""
        extra = "scores" if self.scores is not None else tuple(sorted(self.fields or ()))
        return self.run_id, self.split, self.epoch, extra


def _own(values: Any) -> Any:
    """A copy of ``values`` that nothing else writes into."""
    if isinstance(values, torch.Tensor):
        return values.detach().clone()
    return np.array(values, copy=True)


class PassColumns(NamedTuple):
    """The rows of consecutive held batches of one pass, as one ``log_samples`` call takes them."""

    run_id: str
    split: str
    epoch: int
    columns: dict[str, Any]


def merged(batches: Sequence[HeldBatch]) -> list[PassColumns]:
    """Runs of consecutive batches with the same layout, each as one :class:`PassColumns`.

    The kwargs hold numpy arrays copied out of the tensors (``sample_id``,
    ``loss``, one ``step`` per row, and ``label``/``scores`` or the fields),
    in the order the batches were held.

    Example:
        >>> b = HeldBatch("r", "train", 0, 5, np.arange(2), torch.ones(2))
        >>> [(split, kw["step"].tolist()) for _, split, _, kw in merged([b, b])]
        [('train', [5, 5, 5, 5])]
    """
    out = []
    start = 0
    while start < len(batches):
        layout = batches[start].layout()
        end = start + 1
        while end < len(batches) and batches[end].layout() == layout:
            end += 1
        out.append(PassColumns(*layout[:3], _columns(batches[start:end])))
        start = end
    return out


def _columns(run: Sequence[HeldBatch]) -> dict[str, Any]:
    counts = [len(b.ids) for b in run]
    with torch.no_grad():
        columns: dict[str, Any] = {
            "step": np.repeat(np.array([b.step for b in run], dtype=np.int64), counts),
            "sample_id": np.concatenate([b.ids for b in run]),
            "loss": _host(torch.cat([b.loss for b in run])),
        }
        first = run[0]
        if first.scores is not None:
            columns["scores"] = _host(torch.cat([b.scores for b in run]).float())
            columns["label"] = _host(torch.cat([b.label for b in run])).astype(np.int64, copy=False)
        elif first.fields:
            for name in first.fields:
                columns[name] = np.concatenate([b.fields[name] for b in run])
    return columns


def _host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


class Holding:
    """Holds what the loop produces and hands it over a few steps at a time.

    Args:
        hand_over: called with the list of held items, in the order they
            were added, on the thread that hands them over.
        steps / seconds: when a hand-over is due (see the module docstring).

    :meth:`add` runs on the training thread; :meth:`hand_over` on any thread
    (a query hands over what is held so that it sees every row logged so far):
    hand-overs are serialised, so items are handed over in the order they were
    held.

    Example:
        >>> rows = Holding(lambda held: [writer_log(*call) for call in merged(held)])  # doctest: +SKIP
    """

    def __init__(
        self, hand_over: Callable[[list], None], *, steps: int = HOLD_STEPS, seconds: float = HOLD_SECONDS
    ) -> None:
        self._receive = hand_over
        self._steps = steps
        self._seconds = seconds
        self._held: list = []
        self._since = 0.0
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        """Hold one item; hand everything held over once a hand-over is due."""
        now = time.monotonic()
        with self._lock:
            if not self._held:
                self._since = now
            self._held.append(item)
            due = len(self._held) >= self._steps or now - self._since >= self._seconds
        if due:
            self.hand_over()

    def hand_over(self) -> None:
        """Hand everything held over now."""
        with self._lock:
            held, self._held = self._held, []
            if held:
                self._receive(held)

    def __len__(self) -> int:
        return len(self._held)
