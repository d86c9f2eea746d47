"""The Lightning callback: the session side of a Lightning ``trainer.fit``.

``LightningSession`` extends the same :class:`~onthefly.trainer.backend.TrainingSession`
as the native ``Trainer`` (store, dashboard link, pause/resume/stop, events), so
``callback.session`` and the dashboard drive a Lightning run with the same
code. Its Lightning hooks, in the order a fit calls them:

- ``on_train_epoch_start``: the epoch's data order (a function of (seed, epoch));
- ``on_train_batch_start``: the batch boundary: queued operations run, a pause
  holds here, a stop sets ``trainer.should_stop``; then the batch's sample ids
  are announced to the recording loss;
- ``on_before_optimizer_step``: the gradient norm (before clipping);
- ``on_train_batch_end``: the step's metrics row (ours plus what the module logged);
- validation and test batch hooks: the same announcement for their loaders;
- ``on_train_epoch_end``: the pass summary and the epoch checkpoint.

On several processes (``strategy="ddp"`` or ``"ddp_spawn"``) the rules of
:mod:`onthefly.distributed` apply: ``setup`` (on every rank, once Lightning's
process group exists) opens the session on rank 0 and ``ranks/<r>/`` on the
others and splits the train loader; at every ``on_train_batch_start`` rank 0
sends every rank one command, so pause, resume, test, checkpoint and stop
happen on all ranks at the same batch; ``on_fit_end`` runs the end-of-run test
and the final checkpoint while the ranks are still together.

What wraps ``trainer.fit`` (the loaders handed to Lightning, the checkpoint
I/O, resume, the end-of-run test) is in :mod:`onthefly.lightning.attach`.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from .._version import __version__
from ..errors import ConfigError
from ..trainer.backend import Position, TrainingSession
from ..trainer.console import Console
from ..trainer.control import Controller
from ..trainer.session import SessionHandle
from ..trainer.classify import classification_fields, classification_kind, scores_deferred
from ..trainer.held import HeldBatch, Holding
from ..trainer.metrics import StepMeter, total_grad_norm
from ..trainer.rng import capture_rng, preserved_rng, restore_rng
from .capture import LossCapture, plan_capture
from .checkpoint import CAPTURE_PATH, to_store
from .loaders import LightningBatches
from .metrics import logged_values, step_loss, step_rows

__all__ = ["LightningSession"]


@dataclass
class _Batch:
    """The batch being processed: where its rows go."""

    split: str
    ids: np.ndarray | None
    epoch: int
    step: int
    claimed: bool = False
    keep: int | None = None  # several processes: how many of the ids are real (the rest is sampler padding)


class LightningSession(TrainingSession):
    """The per-sample recorder and session of one Lightning trainer (made by ``attach_lightning``).

    Mixed with the trainer's own ``Callback`` class at attach time, so Lightning
    calls its hooks like any callback's.
    """

    def __init__(self, *, trainer: Any, model: Any, loss_fn: Any, project: str, run_name: str | None, seed: int,
                 checkpoint_every_n_epochs: int, home: str | None, dashboard_port: int | None,
                 connect_dashboard: bool, progress: bool | None) -> None:
        super().__init__(project=project, run_name=run_name, home=home, dashboard_port=dashboard_port,
                         connect_dashboard=connect_dashboard, progress=progress)
        self._trainer = trainer
        self._module = model
        self._seed = seed
        self._every = checkpoint_every_n_epochs
        self._run_id: str | None = None
        self._handed: dict[str, LightningBatches] = {}  # loaders Lightning iterates now, by split
        self._current: _Batch | None = None
        self._kind: str | None = None
        self._kind_known = False
        self._meter: StepMeter | None = None
        self._grad_norm: torch.Tensor | None = None
        self._step_losses: list = []  # this step's batch losses, tensors read later (step_rows)
        self._last_loss = math.nan
        self._logged_step = -1
        self._eval_sum, self._eval_count = 0.0, 0
        self._eval_metrics: dict[str, float] = {}
        self._in_loop = False
        self._pending_rng: dict | None = None
        self._captured: dict | None = None
        self._warned_dropped = False
        self._config: dict[str, Any] = {}
        self._progress = progress
        self._multi = False  # fit runs on several processes (set by the wrapped fit)
        self._dist: dist.DistInfo | None = None  # this rank, once Lightning's process group exists
        self._coll: dist.Collective | None = None
        self._leading = False  # rank 0 serving operations the other ranks must join
        self._leader_stop = False  # another rank: rank 0 said stop
        self._resume: Any = None  # the checkpoint a multi-process fit resumes from
        self._launcher_pid = os.getpid()
        self._loss_plan = plan_capture(model, loss_fn)
        self._loss_capture = LossCapture(self._loss_plan, model, claim=self.claim, record=self.record, warn=self._warn)
        self._steps = Holding(self._log_steps)
        self._loss_capture.announce()

    # ------------------------------------------------------------------ position
    def _position(self) -> Position:
        t = self._trainer
        return Position(self._run_id, int(t.global_step), int(t.current_epoch), t.max_epochs)

    def _rank_zero(self) -> bool:
        return int(getattr(self._trainer, "global_rank", 0)) == 0

    def _leader(self) -> bool:
        """True on one process, and on rank 0 of several."""
        return self._dist is None or self._dist.leader

    # ------------------------------------------------------------------ pickling (ddp_spawn)
    _PROCESS_LOCAL = ("_session_store", "_link", "_control", "_model_lock", "_console", "session", "_meter",
                      "_loss_capture", "_dist", "_coll", "_captured", "_grad_norm", "_current", "_rows", "_steps")

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn sends the trainer, and so this callback, to each new process: what belongs to this
        # process (store, link, threads, locks) stays here and is made anew there.
        state = dict(vars(self))
        for name in self._PROCESS_LOCAL:
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._control = Controller()
        self._control.on_state(self._on_state)
        self._model_lock = threading.RLock()
        self._console = Console(enabled=self._progress)
        self.session = SessionHandle(self)
        self._loss_capture = LossCapture(self._loss_plan, self._module, claim=self.claim, record=self.record,
                                         warn=self._warn)
        self._rows = Holding(self._log_rows)
        self._steps = Holding(self._log_steps)

    # ------------------------------------------------------------------ the recording loss
    def claim(self, fits: Any = None) -> np.ndarray | None:
        """Sample ids of the current batch, the first time a loss call that ``fits(len(ids))`` asks (then None)."""
        batch = self._current
        if batch is None or batch.claimed or batch.ids is None or self._run_id is None:
            return None
        if fits is not None and not fits(len(batch.ids)):
            return None
        batch.claimed = True
        return batch.ids

    def record(self, ids: np.ndarray, per_sample: torch.Tensor, output: Any, target: Any) -> None:
        """Hold one batch's per-sample rows for the writer (called by the recording loss)."""
        batch = self._current
        if not self._kind_known:
            self._kind = classification_kind(output, target)
            self._kind_known = True
        scores = label = fields = None
        if self._kind is not None:
            if scores_deferred(output, target, kind=self._kind):
                scores, label = output.detach(), target
            else:
                try:
                    fields = classification_fields(output, target, kind=self._kind)
                except ConfigError:  # this batch's shapes do not fit the kind (e.g. another head)
                    fields = None
        keep = len(ids) if batch.keep is None else batch.keep
        if keep != len(ids):  # several processes: the sampler's padding is not recorded
            ids, per_sample = ids[:keep], per_sample[:keep]
            scores, label = (None, None) if scores is None else (scores[:keep], label[:keep])
            fields = None if fields is None else {k: v[:keep] for k, v in fields.items()}
        if keep:
            self._rows.add(HeldBatch(self._run_id, batch.split, batch.epoch, batch.step, ids, per_sample,
                                     scores=scores, label=label, fields=fields))

    def _rows_logged(self, split: str, loss: np.ndarray) -> None:
        if split != "train":  # validation and test rows are held too: their loss is summed as they go
            finite = loss[np.isfinite(loss)]
            self._eval_sum += float(finite.sum())
            self._eval_count += int(finite.size)

    def _release_rows(self) -> None:
        self._rows.release()
        self._steps.release()

    # ------------------------------------------------------------------ training hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._run_id is None:
            return
        self._in_loop = True
        self._meter = StepMeter(pl_module.device)  # a resume in the middle of an epoch skips on_train_epoch_start
        if self._pending_rng is not None:  # resuming: the generators as they were at the checkpoint
            restore_rng(_own_rng(self._pending_rng, self._dist))
            self._pending_rng = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._in_loop = False
        self._release_rows()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        loader = self._handed.get("train")
        if loader is not None:
            loader.set_epoch(trainer.current_epoch)
        self._meter = StepMeter(pl_module.device)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._run_id is None:
            return
        meter = self._meter
        meter.data_end()
        if self._boundary() if self._dist is None else self._ranked_boundary():
            trainer.should_stop = True
        meter.data_start()  # a pause is neither data nor compute time
        loader = self._handed.get("train")
        ids = loader.claim() if loader is not None else None
        keep = loader.unpadded if ids is not None and loader.recorded is not None else None
        self._current = _Batch("train", ids, int(trainer.current_epoch), int(trainer.global_step) + 1, keep=keep)
        self._loss_capture.step_start()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._run_id is not None:
            self._grad_norm = total_grad_norm(p for g in optimizer.param_groups for p in g["params"])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._run_id is None:
            return
        current, self._current = self._current, None
        self._loss_capture.step_end()
        if current is not None and current.ids is not None:
            self._loss_capture.batch_end(claimed=current.claimed, returned=outputs)
        meter = self._meter
        meter.compute_end(len(current.ids) if current is not None and current.ids is not None else 0)
        loss = step_loss(outputs)
        if loss is not None:
            self._step_losses.append(loss)
        step = int(trainer.global_step)
        if step > self._logged_step and self._leader():  # an optimizer step happened in this batch
            self._hold_step(trainer, step)
        meter.data_start()

    def _hold_step(self, trainer: Any, step: int) -> None:
        """The step's row, with its loss and gradient norm still tensors, held for :meth:`_log_steps`."""
        losses, self._step_losses = self._step_losses, []
        norm, self._grad_norm = self._grad_norm, None
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0].get("lr") if optimizers else None
        row = self._meter.row(step=step, epoch=int(trainer.current_epoch), loss=math.nan, lr=lr, grad_norm=None)
        row.update(logged_values(trainer.callback_metrics, stage="train"))
        self._logged_step = step
        self._steps.add((row, losses, norm))

    def _log_steps(self, held: list[tuple[dict, list, Any]]) -> None:
        """Fill in the held rows' loss and gradient norm (one host copy for all of them) and log them."""
        rows = step_rows(held)
        self._session_store.writer.log_steps(self._run_id, rows)
        for row in rows:
            if self._link is not None:
                self._link.push_step(row)
            self._console.step(row["step"], row["loss"])
        self._last_loss = rows[-1]["loss"]

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._run_id is None:
            return
        stopped = self._control.stop_requested or self._leader_stop or trainer.should_stop and not self._epoch_complete()
        if self._coll is not None:  # the ranks agree, so all of them take the epoch checkpoint or none does
            stopped = not self._coll.all_true(not stopped)
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        self._loss_capture.epoch_end()
        self._release_rows()
        writer = self._session_store.writer
        metrics = {"partial": True} if stopped else None
        future = writer.end_pass(self._run_id, "train", epoch, step, metrics=metrics)
        if self._coll is None:
            future.add_done_callback(self._summary_done)
        else:
            self._union_summary(future, epoch, step, metrics)
        self._console.epoch_end(epoch + 1, step, float(self._last_loss), None)
        if not stopped and self._every and (epoch + 1) % self._every == 0:
            self._save_checkpoint("epoch")

    def _union_summary(self, future: Any, epoch: int, step: int, metrics: dict | None) -> None:
        """Several processes: once every rank sealed the pass, rank 0 summarises the rows of all of them."""
        future.result()  # this rank's pass is sealed and listed
        self._coll.barrier()
        if self._dist.leader:
            store = self._session_store
            summary = dist.union_pass_summary(store.dir, store.catalog, (self._run_id, "train", epoch), step, metrics)
            done = concurrent.futures.Future()
            done.set_result(summary)
            self._summary_done(done)

    def _epoch_complete(self) -> bool:
        loader = self._handed.get("train")
        return loader is not None and loader.consumed >= len(loader)

    # ------------------------------------------------------------------ validation and test hooks
    def _eval_batch_start(self, split: str, trainer: Any, dataloader_idx: int) -> None:
        loader = self._handed.get(split)
        if self._run_id is None or loader is None or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if not self._leader():  # every rank runs the whole loader (it is not split); rank 0 records it
            return
        self._current = _Batch(split, loader.claim(), self._epochs_finished(), int(self._trainer.global_step))
        self._loss_capture.step_start()

    def _epochs_finished(self) -> int:
        # Like the native Trainer: once the last train batch of an epoch ran, that epoch counts as finished
        # (Lightning's current_epoch moves on only after on_train_epoch_end).
        epoch = int(self._trainer.current_epoch)
        return epoch + 1 if self._in_loop and self._epoch_complete() else epoch

    def _eval_start(self, trainer: Any) -> None:
        self._eval_sum, self._eval_count = 0.0, 0

    def _eval_end(self, split: str, trainer: Any) -> None:
        self._current = None
        self._release_rows()
        if self._run_id is None or split not in self._handed or trainer.sanity_checking or not self._eval_count \
                or not self._leader():
            return
        self._eval_metrics = logged_values(trainer.callback_metrics, stage=split)
        self._session_store.writer.end_pass(
            self._run_id, split, self._epochs_finished(), int(self._trainer.global_step), metrics=self._eval_metrics,
        ).add_done_callback(self._summary_done)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._eval_batch_start("val", trainer, dataloader_idx)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._current = None
        self._loss_capture.step_end()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end("val", trainer)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer)

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._eval_batch_start("test", trainer, dataloader_idx)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._current = None
        self._loss_capture.step_end()

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end("test", trainer)

    # ------------------------------------------------------------------ operations
    def _run_test(self, split: str) -> dict[str, Any]:
        """Run Lightning's own test (or validation) loop over the tracked loader and record it.

        During ``fit`` the loop runs on a second Lightning trainer over the same
        module (one trainer cannot test inside its own fit); afterwards, on the
        user's trainer. Either way the module's train mode, device, trainer and
        every random generator are put back, so training goes on unchanged.
        """
        if self._run_id is None:
            raise ConfigError("test() needs a run: call trainer.fit(...) first")
        if self._dist is not None:
            if self._leading:  # the other ranks wait at this boundary while rank 0 tests
                self._coll.command(dist.TEST, 0 if split == "test" else 1)
            if not self._dist.leader:
                return {}
        source = self._test_source(split)
        previous = self._control.state
        self._control.set_state("testing")
        module = self._module
        was_training, owner = module.training, module._trainer
        device = next(module.parameters()).device if any(True for _ in module.parameters()) else None
        datamodule = source.get("datamodule")
        try:
            with preserved_rng(), self._loss_in_place():
                tester = self._tester() if self._in_loop or self._dist is not None else self._trainer
                run = tester.test if split == "test" else tester.validate
                run(module, verbose=False, **source)
        finally:
            if split == "test":
                self._handed.pop(split, None)
            if datamodule is not None:
                datamodule.trainer = owner
            module.trainer = owner
            if device is not None:
                module.to(device)
            module.train(was_training)
            self._control.set_state(previous if previous != "testing" else "running")
        result = {"loss": self._eval_sum / self._eval_count if self._eval_count else math.nan,
                  "count": self._eval_count, "metrics": dict(self._eval_metrics)}
        return self._record_test(split, result)

    def _test_source(self, split: str) -> dict[str, Any]:
        """What the test loop runs over: ``{"dataloaders": ...}`` or ``{"datamodule": ...}``."""
        raise ConfigError(f"no {split}_loader was given to attach_lightning(...): pass one to run {split}")

    def _tester(self) -> Any:
        """A quiet single-device trainer of the same Lightning flavour, for a test in the middle of fit."""
        device = self._trainer.strategy.root_device
        accelerator = "gpu" if device.type == "cuda" else device.type
        return type(self._trainer)(
            accelerator=accelerator, devices=[device.index or 0] if device.type == "cuda" else 1,
            precision=self._trainer.precision, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[self],
        )

    def _save_checkpoint(self, reason: str) -> dict[str, Any]:
        trainer = self._trainer
        if self._run_id is None or trainer.model is None:
            raise ConfigError("checkpoint() needs a model: call trainer.fit(...) first")
        rng = capture_rng()
        if self._dist is not None:
            if self._leading:  # the other ranks join from this boundary
                self._coll.command(dist.CHECKPOINT)
            states = self._coll.gather_json(dist.pack_rng(rng))
            if self._dist.leader:  # written once, with every rank's generators
                rng = {**rng, "ranks": [dist.unpack_rng(state) for state in states]}
        self._captured = None
        trainer.save_checkpoint(CAPTURE_PATH, weights_only=False)  # our checkpoint I/O receives the dict (rank 0)
        if self._captured is None:  # another rank: rank 0 wrote it
            return {}
        parts, dropped = to_store(self._captured)
        self._captured = None
        if dropped and not self._warned_dropped:
            self._warned_dropped = True
            self._log("warning", f"checkpoints leave out values that cannot be stored without pickling: "
                                 f"{', '.join(dropped[:8])}", kind="checkpoint")
        loader = self._handed.get("train")
        step, epoch = int(trainer.global_step), self._epochs_finished()
        store = self._session_store
        return self._store_checkpoint(
            reason, run_id=self._run_id, step=step, epoch=epoch,
            model=parts["model"], optimizer=parts["optimizer"], scheduler=parts["scheduler"], rng=rng,
            sampler={"epoch": epoch, "batch": loader.consumed if loader is not None else 0, "step": step,
                     "seed": self._seed},
            extra={"lightning": parts["lightning"], "session_id": store.id, "step": step, "epoch": epoch,
                   "run": {"id": self._run_id, "name": self._run_name, "kind": "base", "status": "running"},
                   "config": self._config, "version": __version__},
        )

    def _capture(self, checkpoint: dict) -> None:
        self._captured = checkpoint

    @contextmanager
    def _loss_in_place(self) -> Iterator[None]:
        """The recording loss stands where the module holds its loss, for the duration of the block."""
        with self._loss_capture.in_place():  # onthefly.lightning.capture
            yield

    def _install_loss(self) -> None:
        """Put the recording loss in place for the rest of this process' fit (several processes)."""
        self._loss_capture.install()

    def _remove_loss(self) -> None:
        self._loss_capture.remove()

    def _warn(self, message: str) -> None:
        self._log("warning", message, kind="loss")

    # ------------------------------------------------------------------ several processes
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Several processes: join the ranks, split the train data, open the session (rank 0) or ``ranks/<r>/``."""
        if stage != "fit" or trainer is not self._trainer or not self._multi:
            return
        info = dist.detect(init=False)
        if info is None:
            raise ConfigError(
                f"the trainer has world_size={trainer.world_size} but no torch.distributed process group is "
                "initialised in setup(): use strategy='ddp' or 'ddp_spawn'"
            )
        self._dist, self._coll = info, dist.Collective(info)
        self._leader_stop = False
        if not info.leader:
            self._connect_dashboard = False
            self._console = Console(enabled=False, stream=io.StringIO())
        self._control.reset()
        self._control.begin()
        self._fitting = True
        self._install_loss()
        loader = self._handed.get("train")
        if loader is not None:
            loader.distribute(rank=info.rank, world_size=info.world_size, seed=self._seed)
        self._open_ranked_run()
        if info.leader:
            self._start_link()
        self._control.set_state("running")

    def _open_ranked_run(self) -> None:
        """Rank 0 opens the session and the run; the others open ``ranks/<r>/`` and record the same run."""
        where = None
        if self._dist.leader:
            self._open_run(self._resume)
            store = self._session_store
            where = {"dir": str(store.dir), "id": store.id, "run": self._run_id}
        where = self._coll.broadcast_json(where)
        if self._dist.leader:
            return
        if self._session_store is None:
            self._session_store = dist.RankStore(Path(where["dir"]), session_id=where["id"], project=self._project,
                                                 rank=self._dist.rank)
        self._session_store.add_run(where["run"], self._run_name)
        self._run_id = where["run"]
        self._logged_step, self._kind_known, self._step_losses = -1, False, []
        self._pending_rng = self._resume.data.rng if self._resume is not None else None

    def _require_store(self) -> Any:
        if self._dist is not None and not self._dist.leader:
            if self._session_store is None:
                raise ConfigError("only rank 0 opens the session store; this rank writes under the session's ranks/")
            return self._session_store
        return super()._require_store()

    def _ranked_boundary(self) -> bool:
        stop = super()._ranked_boundary()
        if not self._dist.leader:
            self._leader_stop = self._leader_stop or stop
        return stop

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Several processes: the end-of-run test and the final checkpoint, while the ranks are together."""
        if trainer is not self._trainer or self._dist is None or self._run_id is None:
            return
        stopped = self._control.stop_requested or self._leader_stop or bool(trainer.interrupted)
        reached_end = self._coll.all_true(not stopped)
        if reached_end and self._do_test_after:
            self._test_after()
        self._save_checkpoint("final")
        if self._dist.leader:
            self._finish_run("finished" if reached_end else "stopped")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Several processes: put the user's loss back; a process Lightning started closes its store."""
        if stage != "fit" or trainer is not self._trainer or self._dist is None:
            return
        self._remove_loss()
        self._fitting = False
        self._in_loop = False
        self._control.end()
        if self._session_store is not None:
            self._release_rows()
            self._session_store.settle()
        if os.getpid() != self._launcher_pid:  # a ddp_spawn process: it ends without running atexit handlers
            self.close()




def _own_rng(rng: dict, info: dist.DistInfo | None) -> dict:
    """This rank's generators from a checkpoint's RNG state (every rank's are kept under "ranks")."""
    ranks = rng.get("ranks") if isinstance(rng, dict) else None
    if info is not None and ranks and len(ranks) == info.world_size:
        return ranks[info.rank]
    return rng
