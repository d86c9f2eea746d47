"""Where attach_lightning's time goes inside a real Lightning ``trainer.fit``.

Wraps each hook of the callback (and the recording loss, the classification
fields, the writer calls) with a timer, runs the same model and data as
``lightning_overhead.py`` attached, and prints calls, median and total per
piece. Timers around small calls add a few microseconds each; compare pieces
with each other, not with a run without timers.

With ``--again``, the classification fields are computed twice more in each
step's ``record``, right after each other, and each call is timed on its own:
the difference is what a cold start (caches and branch predictors filled by
the model's own kernels in between) costs a small piece of work done once a
step.

    .venv/bin/python benchmarks/lightning_hooks.py --epochs 3
    .venv/bin/python benchmarks/lightning_hooks.py --epochs 3 --again
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--again",
        action="store_true",
        help="compute the classification fields twice more a step and time the cold and warm call",
    )
    args = parser.parse_args()
    os.environ.setdefault("ONTHEFLY_HOME", tempfile.mkdtemp(prefix="otf-hooks-"))

    from onthefly.lightning import callback, loss
    from onthefly.session import losses
    from onthefly.store.shards import writer

    durations: dict[str, list[float]] = collections.defaultdict(list)

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                durations[name].append(time.perf_counter() - start)

        return wrapper

    session = callback.LightningSession
    for name in [n for n in vars(session) if n.startswith("on_") or n in ("record", "_hold_step", "_log_steps")]:
        setattr(session, name, timed(f"callback.{name}", getattr(session, name)))
    loss.RecordingLoss.forward = timed("RecordingLoss.forward", loss.RecordingLoss.forward)
    losses.PerSampleLoss.__call__ = timed("PerSampleLoss.__call__", losses.PerSampleLoss.__call__)
    writer.ShardWriter.log_samples = timed("ShardWriter.log_samples", writer.ShardWriter.log_samples)
    writer.ShardWriter.log_steps = timed("ShardWriter.log_steps", writer.ShardWriter.log_steps)
    from onthefly.session import classify, held

    held.Holding.add = timed("Holding.add (rows, steps)", held.Holding.add)
    held.Holding.release = timed("Holding.release (rows, steps)", held.Holding.release)
    if args.again:  # the same small work twice in a row, inside the step: a cold first call, a warm second
        first = timed("classification_fields (extra, cold)", classify.classification_fields)
        warm = timed("classification_fields, again at once", classify.classification_fields)
        record = session.record

        def record_and_compute_twice(self, ids, per_sample, output, target):
            first(output, target, kind="multiclass")
            warm(output, target, kind="multiclass")
            return record(self, ids, per_sample, output, target)

        session.record = record_and_compute_twice
    callback.logged_values = timed("logged_values", callback.logged_values)
    callback.total_grad_norm = timed("total_grad_norm", callback.total_grad_norm)

    import lightning_overhead

    start = time.perf_counter()
    lightning_overhead.child("attached", args.epochs)
    print(f"lightning_hooks epochs={args.epochs}: fit process part {time.perf_counter() - start:.2f} s")
    for name, values in sorted(durations.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"{name:36s} calls {len(values):5d}  median {1e6 * statistics.median(values):8.1f} us  "
            f"total {1e3 * sum(values):8.1f} ms"
        )


if __name__ == "__main__":
    main()
