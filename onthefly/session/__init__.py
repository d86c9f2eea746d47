"""What every kind of run shares: the :class:`~onthefly.session.recorder.Recorder` a loop holds.

The native ``Trainer`` (:mod:`onthefly.trainer`), the Lightning callback
(:mod:`onthefly.lightning`) and any hand-written loop record through one.
A per-sample loss goes from the training step to the dashboard like this:

- ``losses``: the per-sample loss out of the user's loss function;
- ``sampling``: the sample ids of each batch, from the loader's sampler;
- ``rows`` and ``held``: a batch's rows (classification columns, padding left
  out), held on the training thread and handed to the writer a few batches at a time;
- ``recorder``: the run, its rows, steps, passes, checkpoints and events, to the
  session's files (:mod:`onthefly.store`) and the dashboard link (:mod:`onthefly.link`);
- ``handle``: ``trainer.session``, the steering API the link calls;
- ``ranks``: what each process of a multi-process run records;
- ``control``: pause/stop/queued operations and the pure decisions at a batch boundary;
- ``state``, ``rng``, ``resume``: what a checkpoint holds and how a run resumes from one;
- ``batches``, ``classify``, ``metrics``, ``console``, ``factory``: the small helpers of those.
"""
