"""The native ``Trainer``: your model, optimizer, loss and loaders, trained with
live per-sample loss, pause/resume/test at batch boundaries, and checkpoints
that resume bitwise.

The loop reads top to bottom from ``fit``: set up (``_prepare``), then epochs
of steps (``_run``, ``_train_epoch``, ``_train_step``), then the end-of-run
test. Per-sample loss comes from the training forward pass itself (a dict
batch is spread into ``model(**batch)`` when its forward takes those names;
``loss_fn=None`` uses the model's own loss); sample ids come from the loader's
batch sampler, or for a stream from an id key, ``sample_ids=`` or positions.
Ctrl+C and SIGTERM end a fit cleanly (:mod:`~onthefly.session.interrupts`).
Everything recorded goes through the trainer's :class:`~onthefly.session.recorder.Recorder`; what each process of a
multi-process run does differently is its ``Ranks``' business.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, TrainingError
from ..session.batches import move_to_device
from ..session.control import (
    nonfinite_action,
    scheduler_metric,
    stop_reason,
    validation_due,
)
from ..session.factory import resolve_model_factory
from ..session.interrupts import Interrupts, interrupt_signal
from ..session.losses import PerSampleLoss, per_sample_grad_norm
from ..session.metrics import StepMeter, total_grad_norm
from ..session.model_io import BatchForward, ModelOutputLoss
from ..session.ranks import join_ranks
from ..session.recorder import Recorder
from ..session.resume import ResumePoint, apply_checkpoint, locate_checkpoint
from ..session.rng import restore_rng, seed_everything
from ..session.sampling import TrackedLoader, unpadded
from ..session.state import Position, TrainingState
from .checks import amp_mode, check_inputs, first_forward, hparams_of, resolve_device
from .config import TrainerConfig
from .evaluate import evaluate

__all__ = ["Trainer"]


@dataclass
class _Fit:
    """Everything one ``fit`` call works with."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: PerSampleLoss | ModelOutputLoss
    forward: BatchForward  # the model's forward on one batch, its decisions made once
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
    stream_saved: Any = None  # on resume: the checkpoint's stream position (streams only)
    nonfinite_streak: int = 0
    checked: bool = False  # the first batch went through the model and loss
    last_loss: float = math.nan
    last_val_loss: float | None = None
    recorded: int | None = None  # several processes: this rank's real (unpadded) samples per epoch
    seen: int = 0  # samples this rank took in the current epoch
    wrapped: bool = False  # several processes: the DistributedDataParallel around the model is ours
    interrupts: Interrupts | None = None  # Ctrl+C / SIGTERM: the loop says where it is (steps, boundaries)

    @property
    def module(self) -> nn.Module:
        """The user's model (inside DistributedDataParallel on several processes)."""
        inner = getattr(self.model, "module", None)
        return inner if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model


class Trainer:
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
        nonfinite_patience: non-finite steps in a row before training pauses (dashboard
            connected) or raises.

    Every option after ``project`` is keyword-only.

    Example:
        >>> trainer = Trainer("demo", max_epochs=3, val_every_n_epochs=1)
        >>> trainer.fit(model, opt, nn.CrossEntropyLoss(), train, val_loader=val)  # doctest: +SKIP
        >>> trainer.session.report()["hardest"][:3]                                  # doctest: +SKIP
    """

    def __init__(
        self,
        project: str,
        *,
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
        scheduler_interval: str = "epoch",
        checkpoint_every_n_epochs: int = 1,
        per_sample_grad_norm: bool = False,
        connect_dashboard: bool = True,
        progress: bool | None = None,
        nonfinite_patience: int = 5,
    ) -> None:
        self.config = TrainerConfig(
            project=project,
            run_name=run_name,
            max_epochs=max_epochs,
            max_steps=max_steps,
            do_test_after=do_test_after,
            val_every_n_epochs=val_every_n_epochs,
            seed=seed,
            amp=amp,
            grad_clip_norm=grad_clip_norm,
            accumulate_grad_batches=accumulate_grad_batches,
            dashboard_port=dashboard_port,
            home=None if home is None else os.fspath(home),
            scheduler_interval=scheduler_interval,
            checkpoint_every_n_epochs=checkpoint_every_n_epochs,
            per_sample_grad_norm=per_sample_grad_norm,
            connect_dashboard=connect_dashboard,
            progress=progress,
            nonfinite_patience=nonfinite_patience,
        )
        self.recorder = Recorder(
            project,
            run_name=run_name,
            home=self.config.home,
            dashboard_port=dashboard_port,
            connect_dashboard=connect_dashboard,
            progress=progress,
            position=self._position,
            test=self._run_test,
            checkpoint=self._save_checkpoint,
        )
        self.session = self.recorder.session
        self._fit: _Fit | None = None
        self.model_factory = None

    # ------------------------------------------------------------------ public
    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        train_loader: torch.utils.data.DataLoader,
        *,
        val_loader: torch.utils.data.DataLoader | None = None,
        test_loader: torch.utils.data.DataLoader | None = None,
        scheduler: Any = None,
        device: str | torch.device | None = None,
        model_factory: Any = None,
        resume_from: str | os.PathLike[str] | None = None,
        sample_ids: Any = None,
    ) -> nn.Module:
        """Train ``model`` until ``max_epochs``/``max_steps`` (or a stop from the dashboard).

        Every argument after ``train_loader`` is keyword-only.

        ``loss_fn=None``: the model computes its own loss (a transformers-style
        model given its labels); the per-sample values come from its logits
        (docs/data.md). ``sample_ids``: a function ``batch -> ids`` (one integer
        per sample) naming the samples of every train batch, for streams whose
        batches hold no id key.

        Returns:
            The trained model (the same object).

        Raises:
            ConfigError: before training starts, for inputs that cannot work.
            TrainingError: after repeated non-finite losses with no dashboard connected.
        """
        recorder = self.recorder
        self.model_factory = resolve_model_factory(model_factory)
        check_inputs(model, optimizer, loss_fn, train_loader)
        if loss_fn is None and self.config.per_sample_grad_norm:
            raise ConfigError(
                "per_sample_grad_norm=True needs a loss_fn: with loss_fn=None the model computes its "
                "own loss; pass loss_fn= (computed from the logits) or turn per_sample_grad_norm off"
            )
        recorder.join(join_ranks())  # under torchrun: this process' rank
        resume = locate_checkpoint(resume_from, store=recorder.store) if resume_from is not None else None
        recorder.ranks.barrier()  # every rank has read the checkpoint before rank 0 opens a session
        with recorder.model_held():
            fit = self._fit = self._prepare(
                model, optimizer, loss_fn, train_loader, val_loader, test_loader, scheduler, device, resume, sample_ids
            )
            fit.interrupts = Interrupts(defer=recorder.ranks.interrupts_wait_for_the_step)
            try:
                with fit.interrupts:
                    try:
                        with recorder.training():
                            recorder.connect()
                            self._run(fit)
                    except BaseException as exc:
                        signum = interrupt_signal(exc)
                        if signum is not None:  # Ctrl+C or SIGTERM: rows durable, run marked, one line
                            self._interrupted(fit, exc, signum)
                            fit.interrupts.propagate(exc, before_exit=recorder.close)
                        raise
            finally:
                self._unwrap(fit)
        return model

    def close(self) -> None:
        """Disconnect from the dashboard and close the session's files (they stay on disk)."""
        self.recorder.close()

    def _interrupted(self, fit: _Fit, exc: BaseException, signum: int) -> None:
        """After Ctrl+C / SIGTERM (the rows are flushed and the run marked by then): a checkpoint when the
        loop stopped at a batch boundary, and the one line saying where the session is and how to continue."""
        at_boundary = fit.interrupts.at_boundary(exc)
        self.recorder.interrupted(
            signum, checkpoint=(lambda: self._save_checkpoint("interrupt")) if at_boundary else None
        )

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
            fit.forward.model = fit.model  # nothing keeps the wrapper

    # ------------------------------------------------------------------ set-up
    def _prepare(
        self,
        model,
        optimizer,
        loss_fn,
        train_loader,
        val_loader,
        test_loader,
        scheduler,
        device,
        resume,
        sample_ids=None,
    ):
        cfg, recorder = self.config, self.recorder
        ranks = recorder.ranks
        device = resolve_device(model, device)
        model.to(device)
        use_amp, amp_dtype = amp_mode(cfg.amp, device)
        scaler = torch.amp.GradScaler(device.type) if use_amp and amp_dtype == torch.float16 else None
        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if use_amp else nullcontext

        run_id = recorder.open_run(
            name=cfg.run_name or "run",
            kind="base",
            config=cfg.as_dict(),
            hparams=hparams_of(optimizer, train_loader),
            resume=resume,
        )
        train_loader = ranks.split_loader(train_loader, seed=cfg.seed)
        loss = PerSampleLoss(loss_fn) if loss_fn is not None else ModelOutputLoss(model)
        fit = _Fit(
            model=model,
            optimizer=optimizer,
            loss=loss,
            forward=BatchForward(model, loss),
            train=TrackedLoader(train_loader, seed=cfg.seed, sample_ids=sample_ids),
            val=TrackedLoader(val_loader, seed=cfg.seed) if val_loader is not None else None,
            test=TrackedLoader(test_loader, seed=cfg.seed) if test_loader is not None else None,
            scheduler=scheduler,
            scaler=scaler,
            device=device,
            autocast=autocast,
            run_id=run_id,
            max_epochs=cfg.max_epochs,
        )
        seed_everything(cfg.seed)
        if resume is not None:
            self._restore(fit, resume)
        fit.recorded = ranks.recorded(train_loader.sampler)
        fit.model, fit.wrapped = ranks.wrap_model(model, device)
        fit.forward.model = fit.model
        return fit

    def _restore(self, fit: _Fit, resume: ResumePoint) -> None:
        data = resume.data
        apply_checkpoint(data, model=fit.model, optimizer=fit.optimizer, scheduler=fit.scheduler, scaler=fit.scaler)
        if data.rng is not None:
            restore_rng(self.recorder.ranks.own_rng(data.rng))  # each rank's own generators
        position = data.sampler or {}
        fit.step = int(position.get("step", 0))
        fit.epoch = int(position.get("epoch", 0))
        fit.skip_batches = int(position.get("batch", 0))
        fit.stream_saved = position.get("stream")
        fit.nonfinite_streak = int(position.get("nonfinite_streak", 0))

    # ------------------------------------------------------------------ the loop
    def _run(self, fit: _Fit) -> None:
        """Epochs until a stop condition, the end-of-run test and what a dashboard asks for after it."""
        cfg, recorder = self.config, self.recorder
        recorder.set_state("running")
        recorder.console.start(fit.max_epochs, fit.train.length, fit.epoch)
        reached_end = self._train_until_done(fit)
        fit.interrupts.consistent = False
        if reached_end:
            for more in recorder.more_epochs(do_test_after=cfg.do_test_after, has_test=lambda: fit.test is not None):
                fit.max_epochs = max(fit.max_epochs or 0, fit.epoch) + more
                if not self._train_until_done(fit):
                    break
                fit.interrupts.consistent = False
        self._save_checkpoint("final")
        recorder.finish("finished" if reached_end else "stopped")
        recorder.console.close()

    def _train_until_done(self, fit: _Fit) -> bool:
        """Epochs of steps until a stop condition (True) or a stop from outside (False)."""
        cfg, recorder = self.config, self.recorder
        while True:
            fit.interrupts.consistent = True
            if not recorder.boundary():
                return False
            reason = stop_reason(step=fit.step, epoch=fit.epoch, max_steps=cfg.max_steps, max_epochs=fit.max_epochs)
            if reason is not None:
                recorder.log("info", f"training stopped: {reason}")
                return True
            if not self._train_epoch(fit):
                return False

    def _train_epoch(self, fit: _Fit) -> bool:
        """One epoch of optimizer steps. True: the loop goes on; False: stopped from outside."""
        cfg, recorder = self.config, self.recorder
        fit.train.set_epoch(fit.epoch)
        fit.batch_in_epoch = fit.skip_batches
        fit.seen = fit.skip_batches * (fit.train.batch_size or 0)
        if fit.skip_batches or fit.stream_saved is not None:
            message = fit.train.resume(fit.skip_batches, saved=fit.stream_saved)
            if message:  # a stream: the one line saying how it resumes
                recorder.log("info", message, kind="stream")
            fit.skip_batches, fit.stream_saved = 0, None
        batches = iter(fit.train)
        meter = StepMeter(fit.device)
        fit.model.train()
        interrupts = fit.interrupts
        exhausted = False
        while not exhausted:
            interrupts.in_step, interrupts.consistent = False, True  # a batch boundary
            if interrupts.pending is not None:
                interrupts.check()  # a signal that waited for the step's end
            if not recorder.boundary():
                return False
            if cfg.max_steps is not None and fit.step >= cfg.max_steps:
                recorder.end_pass("train", fit.epoch, fit.step, metrics={"partial": True})
                return True
            interrupts.in_step = True
            exhausted = not self._train_step(fit, batches, meter)
        interrupts.in_step = False
        if interrupts.pending is not None:
            interrupts.check()
        interrupts.consistent = False  # the epoch's end: passes, validation, the scheduler, a checkpoint
        recorder.end_pass("train", fit.epoch, fit.step)
        fit.epoch += 1
        fit.batch_in_epoch = 0
        val_loss = None
        if validation_due(finished_epochs=fit.epoch, every=cfg.val_every_n_epochs, has_loader=fit.val is not None):
            # rank 0 validates on the whole loader
            val_loss = recorder.ranks.float_from_leader(lambda: self._evaluate_split(fit, "val")["loss"])
            fit.last_val_loss = val_loss
        self._step_scheduler(fit, interval="epoch", val_loss=val_loss)
        recorder.console.epoch_end(fit.epoch, fit.step, fit.last_loss, val_loss)
        if cfg.checkpoint_every_n_epochs and fit.epoch % cfg.checkpoint_every_n_epochs == 0:
            self._save_checkpoint("epoch")
        return True

    def _train_step(self, fit: _Fit, batches, meter: StepMeter) -> bool:
        """One optimizer step over up to ``accumulate_grad_batches`` batches.

        Returns False when the epoch had no batch left.
        """
        cfg, recorder = self.config, self.recorder
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
            batch = move_to_device(batch, fit.device)
            with fit.autocast():
                if not fit.checked:
                    inputs, output, target, result = first_forward(fit.forward, fit.loss, batch)
                    fit.checked = True
                else:
                    inputs, output, target, loss_input = fit.forward(batch)
                    result = fit.loss(loss_input, target, batch_size=len(sample_ids))
            loss = result.loss
            value = float(loss.detach())  # CPU-GPU sync here, once a batch
            local_finite = math.isfinite(value)
            finite = recorder.agree_on_step(local_finite)  # every rank skips the backward together, or none does
            skipped_elsewhere = skipped_elsewhere or (local_finite and not finite)
            if finite:
                scaled = loss / accumulate if accumulate > 1 else loss
                (fit.scaler.scale(scaled) if fit.scaler is not None else scaled).backward()
                losses.append(value)
            elif not local_finite:
                bad_ids.extend(int(i) for i in sample_ids)
            fields = None
            if cfg.per_sample_grad_norm:  # costly: one extra vmap'd backward per batch (docs/benchmarks.md)
                fields = {"grad_norm": per_sample_grad_norm(fit.module, fit.loss.loss_fn, inputs, target).cpu().numpy()}
            keep = unpadded(len(sample_ids), seen=fit.seen, recorded=fit.recorded)
            fit.seen += len(sample_ids)
            recorder.record_batch(
                "train",
                fit.epoch,
                step_number,
                sample_ids,
                result.per_sample,
                output,
                target,
                keep=keep,
                defer=not cfg.per_sample_grad_norm,
                fields=fields,
            )
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
        recorder.record_step(
            meter.row(
                step=fit.step,
                epoch=fit.epoch,
                loss=fit.last_loss,
                lr=fit.optimizer.param_groups[0].get("lr"),
                grad_norm=grad_norm,
            )
        )
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
        recorder = self.recorder
        fit.nonfinite_streak += 1
        what = "loss" if sample_ids else f"gradient norm ({grad_norm})"
        recorder.log(
            "warning",
            f"non-finite {what} at step {step}: step skipped, model unchanged",
            kind="nonfinite",
            step=step,
            data={"sample_ids": sample_ids[:1000]},
        )
        action = nonfinite_action(
            consecutive=fit.nonfinite_streak,
            patience=self.config.nonfinite_patience,
            dashboard_connected=recorder.connected,
        )  # rank 0's link decides for every rank
        if action == "raise":
            raise TrainingError(
                f"{fit.nonfinite_streak} steps in a row had a non-finite {what} "
                f"(last at step {step}, epoch {fit.epoch}, "
                f"samples {sample_ids[:20]}{' …' if len(sample_ids) > 20 else ''}): check those samples and the "
                "learning rate, or lower it / set grad_clip_norm"
            )
        if action == "pause":
            recorder.log(
                "error", f"{fit.nonfinite_streak} non-finite steps in a row: training paused", kind="nonfinite"
            )
            fit.nonfinite_streak = 0
            recorder.control.request_pause()

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
        recorder = self.recorder

        def log_rows(sample_ids, loss, **fields):
            recorder.write_rows(split, fit.epoch, fit.step, sample_ids, loss, **fields)

        result = evaluate(
            fit.module,
            loader,
            fit.loss,
            device=fit.device,
            log_rows=log_rows,
            autocast=fit.autocast,
            should_abort=lambda: recorder.control.stop_requested,
        )
        recorder.end_pass(split, fit.epoch, fit.step, metrics=result["metrics"])
        return result

    def _run_test(self, split: str) -> dict[str, Any]:
        fit = self._fit
        if fit is None:
            raise ConfigError("test() needs a model: call trainer.fit(...) first")
        return self.recorder.evaluate(split, lambda: self._evaluate_split(fit, split))

    def _save_checkpoint(self, reason: str) -> dict[str, Any]:
        fit = self._fit
        if fit is None:
            raise ConfigError("checkpoint() needs a model: call trainer.fit(...) first")
        return self.recorder.checkpoint(
            reason,
            lambda: TrainingState(
                step=fit.step,
                epoch=fit.epoch,
                model=fit.module.state_dict(),
                optimizer=fit.optimizer.state_dict(),
                scheduler=fit.scheduler.state_dict() if fit.scheduler is not None else None,
                scaler=fit.scaler.state_dict() if fit.scaler is not None else None,
                sampler={
                    "epoch": fit.epoch,
                    "batch": fit.batch_in_epoch,
                    "step": fit.step,
                    "seed": self.config.seed,
                    "nonfinite_streak": fit.nonfinite_streak,
                    "stream": fit.train.stream_position(),
                },
            ),
        )

    def _position(self) -> Position:
        fit = self._fit
        if fit is None:
            return Position(max_epochs=self.config.max_epochs)
        return Position(fit.step, fit.epoch, fit.max_epochs)
