"""A batch's per-sample rows as a loop hands them over: the classification
columns chosen once per run, the sampler's padding left out.

Both integrations (and any loop holding a :class:`~onthefly.session.recorder.Recorder`)
make their rows here, so what a row holds does not depend on who trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .classify import classification_fields, classification_kind, scores_deferred
from .held import HeldBatch

__all__ = ["BatchRows"]


class BatchRows:
    """Makes the :class:`HeldBatch` of each batch of one run.

    The classification kind (multiclass, binary or none) is decided on the
    first batch with an output and a target; :meth:`reset` forgets it (a new run).
    """

    def __init__(self) -> None:
        self.kind: str | None = None
        self._known = False

    def reset(self) -> None:
        self.kind, self._known = None, False

    def held(
        self,
        run_id: str,
        split: str,
        epoch: int,
        step: int,
        ids: np.ndarray,
        loss: torch.Tensor,
        output: Any = None,
        target: Any = None,
        *,
        keep: int | None = None,
        defer: bool = True,
        fields: dict[str, np.ndarray] | None = None,
    ) -> HeldBatch | None:
        """The batch's rows, or None when none of its samples is recorded.

        Args:
            ids / loss: the sample ids and per-sample losses (``[n]``, any device).
            output / target: the model's output and the target, for the
                classification columns (label, pred, correct, margin); optional.
            keep: how many of the ids are real (the rest is a sampler's padding); default all.
            defer: let the writer's thread derive the classification columns from the scores when it can.
            fields: more per-sample columns (numpy, one value per id), e.g. ``grad_norm``.
        """
        n = len(ids)
        keep = n if keep is None else keep
        if not keep:
            return None
        scores = label = None
        if output is not None and target is not None:
            if not self._known:
                self.kind, self._known = classification_kind(output, target), True
            if self.kind is not None:
                if defer and scores_deferred(output, target, kind=self.kind):
                    scores, label = output.detach(), target  # the writer's thread derives the fields
                else:
                    try:
                        derived = classification_fields(output, target, kind=self.kind)
                    except ConfigError:  # this batch's shapes do not fit the kind (e.g. another head)
                        derived = None
                    if derived is not None:
                        fields = {**derived, **fields} if fields else derived
        if keep != n:  # several processes: the sampler's padding is not recorded
            ids, loss = ids[:keep], loss[:keep]
            scores, label = (None, None) if scores is None else (scores[:keep], label[:keep])
            fields = None if fields is None else {k: v[:keep] for k, v in fields.items()}
        return HeldBatch(run_id, split, epoch, step, ids, loss, scores=scores, label=label, fields=fields)
