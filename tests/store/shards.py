"""Samples shards written by hand with pyarrow and listed in a session's catalog, for tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onthefly.store.records import ShardInfo
from onthefly.store.shards.schema import SAMPLES_SCHEMA


def write_samples(
    session,
    run_id,
    *,
    epoch,
    sample_ids,
    losses,
    split="train",
    step=0,
    label=None,
    pred=None,
    margin=None,
    name=None,
) -> ShardInfo:
    """Write one sealed samples shard and list it in the session's catalog.

    Args:
        session: an open ``SessionFiles`` (its ``dir`` and ``catalog`` are used).
        run_id, epoch, split: where the rows belong.
        sample_ids, losses: one entry per row.
        step: one step for every row, or one per row.
        label, pred, margin: per-row values, null when not given; ``correct``
            is ``label == pred`` when both are given, null otherwise.
        name: the file name without ``.parquet``; ``e<epoch>-s<first step>`` by default.

    Returns:
        The catalog's record of the shard.
    """
    n = len(sample_ids)
    steps = np.asarray(step, dtype=np.int64)
    if steps.ndim == 0:
        steps = np.full(n, steps, dtype=np.int64)
    known = label is not None and pred is not None
    table = pa.table(
        {
            "run_id": [run_id] * n,
            "split": [split] * n,
            "epoch": np.full(n, epoch, dtype=np.int32),
            "step": steps,
            "sample_id": np.asarray(sample_ids, dtype=np.int64),
            "loss": np.asarray(losses, dtype=np.float32),
            "label": pa.nulls(n, pa.int64()) if label is None else np.asarray(label, dtype=np.int64),
            "pred": pa.nulls(n, pa.int64()) if pred is None else np.asarray(pred, dtype=np.int64),
            "correct": np.asarray(label) == np.asarray(pred) if known else pa.nulls(n, pa.bool_()),
            "margin": pa.nulls(n, pa.float32()) if margin is None else np.asarray(margin, dtype=np.float32),
            "grad_norm": pa.nulls(n, pa.float32()),
        },
        schema=SAMPLES_SCHEMA,
    )
    first, last = int(steps.min()), int(steps.max())
    rel = f"samples/{run_id}/{split}/{name or f'e{epoch:06d}-s{first:06d}'}.parquet"
    path = session.dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return session.catalog.add_shard(
        kind="samples",
        run_id=run_id,
        split=split,
        epoch=epoch,
        path=rel,
        rows=n,
        bytes=path.stat().st_size,
        min_step=first,
        max_step=last,
        level=1,
        sealed=True,
    )
