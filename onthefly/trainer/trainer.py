"""The native ``Trainer``: your model, optimizer, loss and loaders, trained with
live per-sample loss, pause/resume/test at batch boundaries, and checkpoints
that resume bitwise.

The loop reads top to bottom in ``_fit``: set up, then epochs of steps, then
the end-of-run test. Per-sample loss comes from the training forward pass
itself; sample ids come from the loader's batch sampler.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from .._version import __version__
from ..errors import ConfigError, TrainingError
from ..store.lifecycle import SessionStore
from .backend import Position, TrainingSession
from .batches import call_model, move_to_device, split_batch
from .checks import amp_mode, check_inputs, first_forward, hparams_of, resolve_device
from .classify import classification_fields, classification_kind, scores_deferred
from .held import HeldBatch
from .config import TrainerConfig
from .console import Console
from .control import nonfinite_action, scheduler_metric, stop_reason, validation_due
from .evaluate import evaluate
from .factory import resolve_model_factory
from .losses import PerSampleLoss, per_sample_grad_norm
from .metrics import StepMeter, total_grad_norm
from .resume import ResumePoint, apply_checkpoint, locate_checkpoint
from .rng import capture_rng, restore_rng, seed_everything
from .sampling import TrackedLoader

__all__ = ["Trainer"]


@dataclass
class _Fit:
    """Everything one ``fit`` call works with."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: PerSampleLoss
    train: TrackedLoader
    val: TrackedLoader | None
    test: TrackedLoader | None
    scheduler: Any
    scaler: Any
    device: torch.device
    autocast: Any
    run_id: str
    max_epochs: int | None
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches consumed in the current epoch
    skip_batches: int = 0  # on resume: batches of the current epoch already trained
    nonfinite_streak: int = 0
    checked: bool = False  # the first batch went through the model and loss
    kind: str | None = None  # classification kind, decided on the first batch
    last_loss: float = math.nan
    last_val_loss: float | None = None
    recorded: int | None = None  # multi-process: this rank's real (unpadded) samples per epoch
    seen: int = 0  # samples this rank took in the current epoch
    wrapped: bool = False  # multi-process: the DistributedDataParallel around the model is ours
    boundary: bool | None = None  # multi-process: rank 0 wants the next batch boundary (None: not agreed yet)

    @property
    def module(self) -> nn.Module:
        """The user's model (inside DistributedDataParallel on several processes)."""
        inner = getattr(self.model, "module", None)
        return inner if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model


class Trainer(TrainingSession):
    """Train a PyTorch model with live per-sample loss and a session you can steer.

    Args:
        project: the project name shown in the dashboard and ``onthefly ls``.
        run_name: the run's name (default: ``"run"``).
        max_epochs / max_steps: stop conditions; at least one is required.
        do_test_after: run the test loader when training stops; while a dashboard
            is connected the process then stays open (paused) for more work.
        val_every_n_epochs: validate every n epochs; 0 (default) turns validation off.
        seed: seeds Python, NumPy and torch; the data order is a function of (seed, epoch).
        amp: "auto" (on for CUDA, off for CPU), True/"fp16", "bf16" or False.
        grad_clip_norm: clip the gradient norm to this value; off by default.
        accumulate_grad_batches: batches per optimizer step.
        dashboard_port: the dashboard's port (default 47621 or $ONTHEFLY_DASHBOARD_PORT).
        home: the store root (default ./.onthefly or $ONTHEFLY_HOME).
        scheduler_interval: step the scheduler per "epoch" (default) or per "step".
        checkpoint_every_n_epochs: a checkpoint at every n-th epoch end (0: only the final one).
        connect_dashboard: look for a dashboard at all (default True).
        progress: a progress bar (default: when stdout is a terminal).
        per_sample_grad_norm: also record each sample's gradient norm (costs an extra
            vectorised backward per batch; see docs/benchmarks.md). Off by default.

    Example:
        >>> trainer = Trainer(project="demo", max_epochs=3, val_every_n_epochs=1)
        >>> trainer.fit(model=model, optimizer=opt, loss_fn=nn.CrossEntropyLoss(),
        ...             train_loader=train, val_loader=val)                 # doctest: +SKIP
        >>> trainer.session.report()["hardest"][:3]                          # doctest: +SKIP
    """

    def __init__(
        self,
        project: str,
        run_name: str | None = None,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        do_test_after: bool = False,
        val_every_n_epochs: int = 0,
        seed: int = 0,
        amp: Any = "auto",
        grad_clip_norm: float | None = None,
        accumulate_grad_batches: int = 1,
        dashboard_port: int | None = None,
        home: str | os.PathLike[str] | None = None,
        *,
        scheduler_interval: str = "epoch",
        checkpoint_every_n_epochs: int = 1,
        per_sample_grad_norm: bool = False,
        connect_dashboard: bool = True,
        progress: bool | None = None,
        nonfinite_patience: int = 5,
    ) -> None:
        self.config = TrainerConfig(
            project=project, run_name=run_name, max_epochs=max_epochs, max_steps=max_steps,
            do_test_after=do_test_after, val_every_n_epochs=val_every_n_epochs, seed=seed, amp=amp,
            grad_clip_norm=grad_clip_norm, accumulate_grad_batches=accumulate_grad_batches,
            dashboard_port=dashboard_port, home=None if home is None else os.fspath(home),
            scheduler_interval=scheduler_interval, checkpoint_every_n_epochs=checkpoint_every_n_epochs,
            per_sample_grad_norm=per_sample_grad_norm, connect_dashboard=connect_dashboard,
            progress=progress, nonfinite_patience=nonfinite_patience,
        )
        super().__init__(project=project, run_name=run_name, home=self.config.home, dashboard_port=dashboard_port,
                         connect_dashboard=connect_dashboard, progress=progress)
        self._fit: _Fit | None = None
        self.model_factory = None
        self._dist: dist.DistInfo | None = None  # set by fit under torchrun
        self._coll: dist.Collective | None = None
        self._leading = False  # rank 0 serving operations other ranks must join

    # ------------------------------------------------------------------ public
    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        train_loader: torch.utils.data.DataLoader,
        val_loader: torch.utils.data.DataLoader | None = None,
        test_loader: torch.utils.data.DataLoader | None = None,
        scheduler: Any = None,
        device: str | torch.device | None = None,
        model_factory: Any = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> nn.Module:
        """Train ``model`` until ``max_epochs``/``max_steps`` (or a stop from the dashboard).

        Returns:
            The trained model (the same object).

        Raises:
            ConfigError: before training starts, for inputs that cannot work.
            TrainingError: after repeated non-finite losses with no dashboard connected.
        """
        self.model_factory = resolve_model_factory(model_factory)
        check_inputs(model, optimizer, loss_fn, train_loader)
        self._join_ranks()
        resume = locate_checkpoint(resume_from, store=self._store) if resume_from is not None else None
        if self._coll is not None:
            self._coll.barrier()  # every rank has read the checkpoint before rank 0 opens a session
        with self._model_lock:
            self._fit = self._prepare(model, optimizer, loss_fn, train_loader, val_loader, test_loader,
                                      scheduler, device, resume)
            self._control.reset()
            self._control.begin()
            self._fitting = True
            try:
                self._start_link()
                self._run(self._fit)
            except BaseException as exc:
                self._fail(exc)
                raise
            finally:
                self._fitting = False
                self._control.end()
                self._release_rows()
                self._session_store.settle()
                self._unwrap(self._fit)
        return model

    @staticmethod
    def _unwrap(fit: _Fit) -> None:
        """Drop the DistributedDataParallel we put around the model, now, while its process group lives.

        Kept until the trainer is collected, the wrapper's reducer would often be the
        last holder of a process group the script has destroyed; freeing it then
        (at exit, holding the GIL) makes gloo join a worker thread that waits for
        the GIL: torch hangs. Tests and checkpoints after fit use the model itself.
        """
        if fit.wrapped:
            fit.model, fit.wrapped = fit.module, False

    # ------------------------------------------------------------------ set-up
    def _join_ranks(self) -> None:
        """Under torchrun: find this process' rank; only rank 0 talks to the dashboard and prints."""
        self._dist = dist.detect()
        if self._dist is None:
            return
        self._coll = dist.Collective(self._dist)
        if not self._dist.leader:
            self._connect_dashboard = False
            self._console = Console(enabled=False, stream=io.StringIO())

    def _require_store(self):
        if self._dist is not None and not self._dist.leader:
            if self._session_store is None:
                raise ConfigError("only rank 0 opens the session store; this rank writes under the session's ranks/")
            return self._session_store
        return super()._require_store()

    def _open_store(self):
        """The session (rank 0) or this rank's folder in it (other ranks)."""
        if self._dist is None:
            return self._require_store()
        where = None
        if self._dist.leader:
            store = self._require_store()
            where = {"dir": str(store.dir), "id": store.id}
        where = self._coll.broadcast_json(where)
        if not self._dist.leader and self._session_store is None:
            import atexit
            from pathlib import Path

            self._session_store = dist.RankStore(Path(where["dir"]), session_id=where["id"], project=self._project,
                                                 rank=self._dist.rank)
            atexit.register(self.close)
        return self._session_store

    def _prepare(self, model, optimizer, loss_fn, train_loader, val_loader, test_loader, scheduler, device, resume):
        cfg = self.config
        device = resolve_device(model, device)
        model.to(device)
        use_amp, amp_dtype = amp_mode(cfg.amp, device)
        scaler = torch.amp.GradScaler(device.type) if use_amp and amp_dtype == torch.float16 else None
        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if use_amp else nullcontext

        store = self._open_store()
        run_id = None
        if self._dist is None or self._dist.leader:
            parents = ()
            if resume is not None and resume.run is not None:
                _ensure_run(store, resume)
                parents = ((resume.run["id"], "resumed_from"),)
            run_id = store.catalog.add_run(
                name=cfg.run_name or "run", kind="base", parents=parents,
                config=cfg.as_dict(), hparams=hparams_of(optimizer, train_loader),
            ).id
        if self._dist is not None:
            run_id = self._coll.broadcast_json(run_id)
            if not self._dist.leader:
                store.add_run(run_id, cfg.run_name or "run")
            train_loader = dist.distributed_loader(train_loader, rank=self._dist.rank,
                                                   world_size=self._dist.world_size, seed=cfg.seed)
        fit = _Fit(
            model=model, optimizer=optimizer, loss=PerSampleLoss(loss_fn),
            train=TrackedLoader(train_loader, seed=cfg.seed),
            val=TrackedLoader(val_loader, seed=cfg.seed) if val_loader is not None else None,
            test=TrackedLoader(test_loader, seed=cfg.seed) if test_loader is not None else None,
            scheduler=scheduler, scaler=scaler, device=device, autocast=autocast,
            run_id=run_id, max_epochs=cfg.max_epochs,
        )
        seed_everything(cfg.seed)
        if resume is not None:
            self._restore(fit, resume)
        if self._dist is not None:
            fit.recorded = dist.recorded_count(train_loader.sampler, rank=self._dist.rank)
            if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
                fit.model = torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None)
                fit.wrapped = True
        self._notify("run", self._run_payload(run_id))
        return fit

    def _restore(self, fit: _Fit, resume: ResumePoint) -> None:
        data = resume.data
        apply_checkpoint(data, model=fit.model, optimizer=fit.optimizer, scheduler=fit.scheduler, scaler=fit.scaler)
        if data.rng is not None:
            ranks = data.rng.get("ranks") if isinstance(data.rng, dict) else None
            if self._dist is not None and ranks and len(ranks) == self._dist.world_size:
                restore_rng(ranks[self._dist.rank])  # each rank's own generators
            else:
                restore_rng(data.rng)
        position = data.sampler or {}
        fit.step = int(position.get("step", 0))
        fit.epoch = int(position.get("epoch", 0))
        fit.skip_batches = int(position.get("batch", 0))
        fit.nonfinite_streak = int(position.get("nonfinite_streak", 0))

    # ------------------------------------------------------------------ the loop
    def _run(self, fit: _Fit) -> None:
        cfg = self.config
        self._control.set_state("running")
        self._console.start(fit.max_epochs, len(fit.train), fit.epoch)
        reached_end = False
        while True:
            if self._train_until_stop(fit) is None:  # stopped from outside
                break
            reached_end = True
            if not cfg.do_test_after:
                break
            if fit.test is not None:
                self._run_test("test")
            else:
                self._log("warning", "do_test_after=True but no test_loader was given: no test ran")
            more = self._wait_for_more_work()
            if not more:
                break
            fit.max_epochs = max(fit.max_epochs or 0, fit.epoch) + more
        self._save_checkpoint("final")
        self._finish_run("finished" if reached_end else "stopped")
        self._console.close()

    def _train_until_stop(self, fit: _Fit) -> str | None:
        """Epochs of steps until a stop condition; None when stopped from outside."""
        cfg = self.config
        while True:
            if self._boundary():
                return None
            reason = stop_reason(step=fit.step, epoch=fit.epoch, max_steps=cfg.max_steps, max_epochs=fit.max_epochs)
            if reason is not None:
                self._log("info", f"training stopped: {reason}")
                return reason
            if not self._train_epoch(fit):
                return None

    def _train_epoch(self, fit: _Fit) -> bool:
        """One epoch of optimizer steps. Returns False when stopped from outside."""
        cfg = self.config
        fit.train.set_epoch(fit.epoch)
        fit.batch_in_epoch = fit.skip_batches
        fit.seen = fit.skip_batches * (fit.train.batch_size or 0)
        if fit.skip_batches:
            fit.train.skip_batches(fit.skip_batches)
            fit.skip_batches = 0
        batches = iter(fit.train)
        meter = StepMeter(fit.device)
        fit.model.train()
        exhausted = False
        while not exhausted:
            if self._boundary():
                return False
            if cfg.max_steps is not None and fit.step >= cfg.max_steps:
                self._end_train_pass(fit, metrics={"partial": True})
                return True
            exhausted = not self._train_step(fit, batches, meter)
        self._end_train_pass(fit, metrics=None)
        fit.epoch += 1
        fit.batch_in_epoch = 0
        val_loss = None
        if validation_due(finished_epochs=fit.epoch, every=cfg.val_every_n_epochs, has_loader=fit.val is not None):
            if self._dist is None or self._dist.leader:  # rank 0 validates on the whole loader
                val_loss = self._evaluate_split(fit, "val")["loss"]
            if self._coll is not None:
                val_loss = self._coll.broadcast_float(val_loss)
            fit.last_val_loss = val_loss
        self._step_scheduler(fit, interval="epoch", val_loss=val_loss)
        self._console.epoch_end(fit.epoch, fit.step, fit.last_loss, val_loss)
        if cfg.checkpoint_every_n_epochs and fit.epoch % cfg.checkpoint_every_n_epochs == 0:
            self._save_checkpoint("epoch")
        return True

    def _end_train_pass(self, fit: _Fit, *, metrics: dict | None) -> None:
        """Seal the epoch's train rows; on several processes, summarise the rows of every rank."""
        self._release_rows()
        future = self._session_store.writer.end_pass(fit.run_id, "train", fit.epoch, fit.step, metrics=metrics)
        if self._dist is None:
            future.add_done_callback(self._summary_done)
            return
        future.result()  # this rank's pass is sealed and listed
        self._coll.barrier()
        if self._dist.leader:
            store = self._session_store
            summary = concurrent.futures.Future()
            summary.set_result(dist.union_pass_summary(store.dir, store.catalog, (fit.run_id, "train", fit.epoch),
                                                       fit.step, metrics))
            self._summary_done(summary)

    def _train_step(self, fit: _Fit, batches, meter: StepMeter) -> bool:
        """One optimizer step over up to ``accumulate_grad_batches`` batches.

        Returns False when the epoch had no batch left.
        """
        cfg = self.config
        writer = self._session_store.writer
        accumulate = cfg.accumulate_grad_batches
        step_number = fit.step + 1
        losses: list[float] = []
        bad_ids: list[int] = []
        skipped_elsewhere = False
        took = 0
        while took < accumulate:
            meter.data_start()
            try:
                sample_ids, batch = next(batches)
            except StopIteration:
                break
            meter.data_end()
            took += 1
            fit.batch_in_epoch += 1
            inputs, target = split_batch(move_to_device(batch, fit.device))
            with fit.autocast():
                if not fit.checked:
                    output, result = first_forward(fit.model, fit.loss, inputs, target)
                    fit.kind, fit.checked = classification_kind(output, target), True
                else:
                    output = call_model(fit.model, inputs)
                    result = fit.loss(output, target, batch_size=len(sample_ids))
            loss = result.loss
            value = float(loss.detach())  # CPU-GPU sync here, once a batch
            local_finite = finite = math.isfinite(value)
            if self._coll is not None:  # every rank skips the backward together, or none does
                finite, wanted = self._coll.step_agreement(local_finite, self._control.boundary_wanted)
                fit.boundary = wanted or bool(fit.boundary)
                skipped_elsewhere = skipped_elsewhere or (local_finite and not finite)
            if finite:
                scaled = loss / accumulate if accumulate > 1 else loss
                (fit.scaler.scale(scaled) if fit.scaler is not None else scaled).backward()
                losses.append(value)
            elif not local_finite:
                bad_ids.extend(int(i) for i in sample_ids)
            scores = label = fields = None
            if fit.kind and scores_deferred(output, target, kind=fit.kind) and not cfg.per_sample_grad_norm:
                scores, label = output.detach(), target  # the writer's thread derives the fields
            elif fit.kind:
                fields = classification_fields(output, target, kind=fit.kind)
            if cfg.per_sample_grad_norm:  # costly: one extra vmap'd backward per batch (docs/benchmarks.md)
                norms = per_sample_grad_norm(fit.module, fit.loss.loss_fn, inputs, target).cpu().numpy()
                fields = {**(fields or {}), "grad_norm": norms}
            keep = _unpadded(len(sample_ids), seen=fit.seen, recorded=fit.recorded)
            fit.seen += len(sample_ids)
            if keep:
                per_sample = result.per_sample
                if keep != len(sample_ids):  # several processes: the sampler's padding is not recorded
                    per_sample = per_sample[:keep]
                    scores, label = (None, None) if scores is None else (scores[:keep], label[:keep])
                    fields = None if fields is None else {k: v[:keep] for k, v in fields.items()}
                self._rows.add(HeldBatch(fit.run_id, "train", fit.epoch, step_number, sample_ids[:keep], per_sample,
                                         scores=scores, label=label, fields=fields))
            meter.compute_end(len(sample_ids))
        if took == 0:
            return False
        grad_norm = self._optimizer_step(fit, skip=bool(bad_ids) or skipped_elsewhere)
        if bad_ids or skipped_elsewhere or (grad_norm is not None and not math.isfinite(grad_norm)):
            self._on_nonfinite(fit, step_number, bad_ids, grad_norm)
            return True
        fit.nonfinite_streak = 0
        fit.step = step_number
        fit.last_loss = sum(losses) / len(losses)
        self._step_scheduler(fit, interval="step", val_loss=None)
        row = meter.row(step=fit.step, epoch=fit.epoch, loss=fit.last_loss,
                        lr=fit.optimizer.param_groups[0].get("lr"), grad_norm=grad_norm)
        if self._dist is not None and not self._dist.leader:
            return True  # step metrics are rank 0's
        writer.log_step(fit.run_id, row)
        if self._link is not None:
            self._link.push_step(row)
        self._console.step(fit.step, fit.last_loss)
        return True

    def _optimizer_step(self, fit: _Fit, *, skip: bool) -> float | None:
        """Clip, step and zero the gradients; never steps on non-finite values."""
        if skip:
            fit.optimizer.zero_grad(set_to_none=True)
            return None
        params = [p for group in fit.optimizer.param_groups for p in group["params"]]
        if fit.scaler is not None:
            fit.scaler.unscale_(fit.optimizer)
        if self.config.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
        else:
            norm = total_grad_norm(params)
        grad_norm = None if norm is None else float(norm)
        if grad_norm is not None and not math.isfinite(grad_norm) and fit.scaler is None:
            fit.optimizer.zero_grad(set_to_none=True)
            return grad_norm
        if fit.scaler is not None:
            fit.scaler.step(fit.optimizer)
            fit.scaler.update()
        else:
            fit.optimizer.step()
        fit.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _on_nonfinite(self, fit: _Fit, step: int, sample_ids: list[int], grad_norm: float | None) -> None:
        fit.nonfinite_streak += 1
        what = "loss" if sample_ids else f"gradient norm ({grad_norm})"
        self._log("warning", f"non-finite {what} at step {step}: step skipped, model unchanged",
                  kind="nonfinite", step=step, data={"sample_ids": sample_ids[:1000]})
        connected = self._link is not None and self._link.connected
        if self._coll is not None:  # rank 0's link decides for every rank
            connected = bool(self._coll.broadcast_float(1.0 if connected else 0.0))
        action = nonfinite_action(consecutive=fit.nonfinite_streak, patience=self.config.nonfinite_patience,
                                  dashboard_connected=connected)
        if action == "raise":
            raise TrainingError(
                f"{fit.nonfinite_streak} steps in a row had a non-finite {what} (last at step {step}, epoch {fit.epoch}, "
                f"samples {sample_ids[:20]}{' …' if len(sample_ids) > 20 else ''}): check those samples and the "
                "learning rate, or lower it / set grad_clip_norm"
            )
        if action == "pause":
            self._log("error", f"{fit.nonfinite_streak} non-finite steps in a row: training paused", kind="nonfinite")
            fit.nonfinite_streak = 0
            self._control.request_pause()

    def _step_scheduler(self, fit: _Fit, *, interval: str, val_loss: float | None) -> None:
        if fit.scheduler is None or self.config.scheduler_interval != interval:
            return
        if isinstance(fit.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            metric = scheduler_metric(val_loss=val_loss, train_loss=fit.last_loss)
            if metric is not None and math.isfinite(metric):
                fit.scheduler.step(metric)
        else:
            fit.scheduler.step()

    # ------------------------------------------------------------------ operations
    def _evaluate_split(self, fit: _Fit, split: str) -> dict[str, Any]:
        loader = fit.val if split == "val" else fit.test
        if loader is None:
            raise ConfigError(f"no {split}_loader was passed to fit(...): pass one to run {split}")
        writer = self._session_store.writer

        def log_rows(sample_ids, loss, **fields):
            writer.log_samples(fit.run_id, split, fit.epoch, fit.step, sample_ids, loss, **fields)

        result = evaluate(fit.module, loader, fit.loss, device=fit.device, log_rows=log_rows, autocast=fit.autocast,
                          should_abort=lambda: self._control.stop_requested)
        summary = writer.end_pass(fit.run_id, split, fit.epoch, fit.step, metrics=result["metrics"])
        summary.add_done_callback(self._summary_done)
        return result

    def _run_test(self, split: str) -> dict[str, Any]:
        fit = self._fit
        if fit is None:
            raise ConfigError("test() needs a model: call trainer.fit(...) first")
        if self._dist is not None:
            if self._leading:  # the other ranks wait at this boundary while rank 0 tests
                self._coll.command(dist.TEST, 0 if split == "test" else 1)
            if not self._dist.leader:
                return {}
        previous = self._control.state
        self._control.set_state("testing")
        try:
            result = self._evaluate_split(fit, split)
        finally:
            self._control.set_state(previous if previous != "testing" else "running")
        return self._record_test(split, result)

    def _save_checkpoint(self, reason: str) -> dict[str, Any]:
        fit = self._fit
        if fit is None:
            raise ConfigError("checkpoint() needs a model: call trainer.fit(...) first")
        rng = capture_rng()
        if self._dist is not None:
            if self._leading:  # the other ranks join from this boundary
                self._coll.command(dist.CHECKPOINT)
            states = self._coll.gather_json(dist.pack_rng(rng))
            if not self._dist.leader:
                return {}  # written once, by rank 0, with every rank's generators
            rng = {**rng, "ranks": [dist.unpack_rng(state) for state in states]}
        store = self._session_store
        return self._store_checkpoint(
            reason, run_id=fit.run_id, step=fit.step, epoch=fit.epoch,
            model=fit.module.state_dict(), optimizer=fit.optimizer.state_dict(),
            scheduler=fit.scheduler.state_dict() if fit.scheduler is not None else None,
            scaler=fit.scaler.state_dict() if fit.scaler is not None else None,
            rng=rng,
            sampler={"epoch": fit.epoch, "batch": fit.batch_in_epoch, "step": fit.step,
                     "seed": self.config.seed, "nonfinite_streak": fit.nonfinite_streak},
            extra={"session_id": store.id, "step": fit.step, "epoch": fit.epoch,
                   "run": {"id": fit.run_id, "name": self.config.run_name or "run", "kind": "base", "status": "running"},
                   "config": self.config.as_dict(), "version": __version__},
        )

    # ------------------------------------------------------------------ several processes
    def _boundary(self) -> bool:
        """The batch boundary; on several processes rank 0 decides and every rank follows.

        When the batch's all-reduce (``step_agreement``) said rank 0 wants nothing
        here, every rank goes on without the step command; a request that came
        after it waits for the next batch.
        """
        if self._dist is None:
            return super()._boundary()
        fit = self._fit
        agreed, fit.boundary = fit.boundary, None
        if agreed is False:
            return False
        return self._ranked_boundary()

    def _wait_for_more_work(self) -> int:
        if self._dist is None:
            return super()._wait_for_more_work()
        if not self._dist.leader:
            code, more = self._follow()
            return more if code == dist.GO else 0
        self._leading = True
        try:
            more = super()._wait_for_more_work()
        finally:
            self._leading = False
        self._coll.command(dist.GO, more)
        return more

    def _position(self) -> Position:
        fit = self._fit
        if fit is None:
            return Position(max_epochs=self.config.max_epochs)
        return Position(fit.run_id, fit.step, fit.epoch, fit.max_epochs)




def _unpadded(batch: int, *, seen: int, recorded: int | None) -> int:
    """How many samples of a batch to record: all, except the sampler's padding past ``recorded``."""
    if recorded is None:
        return batch
    return max(0, min(batch, recorded - seen))


def _ensure_run(store: SessionStore, resume: ResumePoint) -> None:
    """Copy the resumed-from run's record into this session so lineage resolves here."""
    run = resume.run
    known = {r.id for r in store.catalog.runs()}
    if run["id"] not in known:
        store.catalog.add_run(run_id=run["id"], name=run.get("name") or "run", kind="imported",
                              status=run.get("status") or "finished", config=run.get("config"))
