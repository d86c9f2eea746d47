"""The Lightning callback: the session side of a Lightning ``trainer.fit``.

``LightningSession`` holds a :class:`~onthefly.session.recorder.Recorder`, as
the native ``Trainer`` does (store, dashboard link, pause/resume/stop, events),
so ``callback.session`` and the dashboard drive a Lightning run with the same
code. Its Lightning hooks, in the order a fit calls them:

- ``on_train_epoch_start``: the epoch's data order (a function of (seed, epoch));
- ``on_train_batch_start``: the batch boundary: queued operations run, a pause
  holds here, a stop sets ``trainer.should_stop``; then the batch's sample ids
  are announced to the recording loss;
- ``on_before_optimizer_step``: the gradient norm (before clipping);
- ``on_train_batch_end``: the step's metrics row (ours plus what the module logged);
- validation and test batch hooks: the same announcement for their loaders;
- ``on_train_epoch_end``: the pass summary and the epoch checkpoint.

On several processes (``strategy="ddp"`` or ``"ddp_spawn"``) the recorder's
:class:`~onthefly.session.ranks.Ranks` apply the rules of
:mod:`onthefly.distributed`: ``setup`` (on every rank, once Lightning's
process group exists) joins the ranks, opens the run and splits the train
loader; at every ``on_train_batch_start`` rank 0 sends every rank one command,
so pause, resume, test, checkpoint and stop happen on all ranks at the same
batch; ``on_fit_end`` runs the end-of-run test and the final checkpoint while
the ranks are still together.

What wraps ``trainer.fit`` (the loaders handed to Lightning, the checkpoint
I/O, resume, the end-of-run test) is in :mod:`onthefly.lightning.attach`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..session.held import Holding
from ..session.metrics import StepMeter, total_grad_norm
from ..session.ranks import join_ranks
from ..session.recorder import Recorder
from ..session.rng import preserved_rng, restore_rng
from ..session.state import Position, TrainingState
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


class LightningSession:
    """The per-sample recorder and session of one Lightning trainer (made by ``attach_lightning``).

    Mixed with the trainer's own ``Callback`` class at attach time, so Lightning
    calls its hooks like any callback's.
    """

    def __init__(
        self,
        *,
        trainer: Any,
        model: Any,
        loss_fn: Any,
        project: str,
        run_name: str | None,
        seed: int,
        checkpoint_every_n_epochs: int,
        home: str | None,
        dashboard_port: int | None,
        connect_dashboard: bool,
        progress: bool | None,
    ) -> None:
        self.recorder = Recorder(
            project,
            run_name=run_name,
            home=home,
            dashboard_port=dashboard_port,
            connect_dashboard=connect_dashboard,
            progress=progress,
            position=self._position,
            test=self._run_test,
            checkpoint=self._save_checkpoint,
            on_rows=self._rows_logged,
        )
        self._trainer = trainer
        self._module = model
        self._seed = seed
        self._every = checkpoint_every_n_epochs
        self._handed: dict[str, LightningBatches] = {}  # loaders Lightning iterates now, by split
        self._current: _Batch | None = None
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
        self._multi = False  # fit runs on several processes (set by the wrapped fit)
        self._resume: Any = None  # the checkpoint a multi-process fit resumes from
        self._launcher_pid = os.getpid()
        self._loss_plan = plan_capture(model, loss_fn)
        self._make_process_local()
        self._loss_capture.announce()

    def _make_process_local(self) -> None:
        self.session = self.recorder.session
        self._loss_capture = LossCapture(
            self._loss_plan, self._module, claim=self.claim, record=self.record, warn=self._warn
        )
        self._steps = Holding(self._log_steps)  # step rows, their loss and gradient norm still tensors
        self.recorder.flushes(self._steps)

    # ------------------------------------------------------------------ position
    def _position(self) -> Position:
        t = self._trainer
        return Position(int(t.global_step), int(t.current_epoch), t.max_epochs)

    @property
    def _run_id(self) -> str | None:
        return self.recorder.run_id

    # ------------------------------------------------------------------ pickling (ddp_spawn)
    _PROCESS_LOCAL = ("session", "_meter", "_loss_capture", "_captured", "_grad_norm", "_current", "_steps")

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn sends the trainer, and so this callback, to each new process: what belongs to this
        # process (store, link, threads, locks) stays here and is made anew there.
        state = dict(vars(self))
        for name in self._PROCESS_LOCAL:
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._make_process_local()

    def close(self) -> None:
        """Disconnect from the dashboard and close the session's files (they stay on disk)."""
        self.recorder.close()

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
        self.recorder.record_batch(
            batch.split, batch.epoch, batch.step, ids, per_sample, output, target, keep=batch.keep
        )

    def _rows_logged(self, split: str, loss: np.ndarray) -> None:
        if split != "train":  # validation and test rows are held too: their loss is summed as they go
            finite = loss[np.isfinite(loss)]
            self._eval_sum += float(finite.sum())
            self._eval_count += int(finite.size)

    # ------------------------------------------------------------------ training hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._run_id is None:
            return
        self._in_loop = True
        self._meter = StepMeter(pl_module.device)  # a resume in the middle of an epoch skips on_train_epoch_start
        if self._pending_rng is not None:  # resuming: the generators as they were at the checkpoint
            restore_rng(self.recorder.ranks.own_rng(self._pending_rng))
            self._pending_rng = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._in_loop = False
        self.recorder.hand_over()

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
        if not self.recorder.boundary():
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
        if step > self._logged_step:  # an optimizer step happened in this batch
            self._hold_step(trainer, step)
        meter.data_start()

    def _hold_step(self, trainer: Any, step: int) -> None:
        """The step's row, with its loss and gradient norm still tensors, held for :meth:`_log_steps`."""
        losses, self._step_losses = self._step_losses, []
        norm, self._grad_norm = self._grad_norm, None
        self._logged_step = step
        if not self.recorder.records("steps"):
            return
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0].get("lr") if optimizers else None
        row = self._meter.row(step=step, epoch=int(trainer.current_epoch), loss=math.nan, lr=lr, grad_norm=None)
        row.update(logged_values(trainer.callback_metrics, stage="train"))
        self._steps.add((row, losses, norm))

    def _log_steps(self, held: list[tuple[dict, list, Any]]) -> None:
        """Fill in the held rows' loss and gradient norm (one host copy for all of them) and log them."""
        rows = step_rows(held)
        self.recorder.record_steps(rows)
        self._last_loss = rows[-1]["loss"]

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._run_id is None:
            return
        recorder = self.recorder
        stopped = recorder.stop_requested or trainer.should_stop and not self._epoch_complete()
        stopped = not recorder.ranks.all_agree(not stopped)  # all ranks take the epoch checkpoint or none does
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        self._loss_capture.epoch_end()
        recorder.end_pass("train", epoch, step, metrics={"partial": True} if stopped else None)
        recorder.console.epoch_end(epoch + 1, step, float(self._last_loss), None)
        if not stopped and self._every and (epoch + 1) % self._every == 0:
            self._save_checkpoint("epoch")

    def _epoch_complete(self) -> bool:
        loader = self._handed.get("train")
        return loader is not None and loader.consumed >= len(loader)

    # ------------------------------------------------------------------ validation and test hooks
    def _eval_batch_start(self, split: str, trainer: Any, dataloader_idx: int) -> None:
        loader = self._handed.get(split)
        if self._run_id is None or loader is None or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if not self.recorder.records(split):  # every rank runs the whole loader (it is not split); one records it
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
        recorder = self.recorder
        recorder.hand_over()
        if (
            self._run_id is None
            or split not in self._handed
            or trainer.sanity_checking
            or not self._eval_count
            or not recorder.records(split)
        ):
            return
        self._eval_metrics = logged_values(trainer.callback_metrics, stage=split)
        recorder.end_pass(split, self._epochs_finished(), int(self._trainer.global_step), metrics=self._eval_metrics)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start("val", trainer, dataloader_idx)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._current = None
        self._loss_capture.step_end()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._eval_end("val", trainer)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start(trainer)

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start("test", trainer, dataloader_idx)

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
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
        return self.recorder.evaluate(split, lambda: self._lightning_test(split))

    def _lightning_test(self, split: str) -> dict[str, Any]:
        source = self._test_source(split)
        module = self._module
        was_training, owner = module.training, module._trainer
        device = next(module.parameters()).device if any(True for _ in module.parameters()) else None
        datamodule = source.get("datamodule")
        try:
            with preserved_rng(), self._loss_in_place():
                tester = self._tester() if self._in_loop or self._multi else self._trainer
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
        return {
            "loss": self._eval_sum / self._eval_count if self._eval_count else math.nan,
            "count": self._eval_count,
            "metrics": dict(self._eval_metrics),
        }

    def _test_source(self, split: str) -> dict[str, Any]:
        """What the test loop runs over: ``{"dataloaders": ...}`` or ``{"datamodule": ...}``."""
        raise ConfigError(f"no {split}_loader was given to attach_lightning(...): pass one to run {split}")

    def _tester(self) -> Any:
        """A quiet single-device trainer of the same Lightning flavour, for a test in the middle of fit."""
        device = self._trainer.strategy.root_device
        accelerator = "gpu" if device.type == "cuda" else device.type
        return type(self._trainer)(
            accelerator=accelerator,
            devices=[device.index or 0] if device.type == "cuda" else 1,
            precision=self._trainer.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[self],
        )

    def _save_checkpoint(self, reason: str) -> dict[str, Any]:
        trainer = self._trainer
        if self._run_id is None or trainer.model is None:
            raise ConfigError("checkpoint() needs a model: call trainer.fit(...) first")
        return self.recorder.checkpoint(reason, self._training_state)

    def _training_state(self) -> TrainingState | None:
        """What Lightning's own checkpoint holds, as the store keeps it (None on the ranks that do not write it)."""
        trainer = self._trainer
        self._captured = None
        trainer.save_checkpoint(CAPTURE_PATH, weights_only=False)  # our checkpoint I/O receives the dict (rank 0)
        if self._captured is None:  # another rank: rank 0 wrote it
            return None
        parts, dropped = to_store(self._captured)
        self._captured = None
        if dropped and not self._warned_dropped:
            self._warned_dropped = True
            self.recorder.log(
                "warning",
                f"checkpoints leave out values that cannot be stored without pickling: {', '.join(dropped[:8])}",
                kind="checkpoint",
            )
        loader = self._handed.get("train")
        step, epoch = int(trainer.global_step), self._epochs_finished()
        return TrainingState(
            step=step,
            epoch=epoch,
            model=parts["model"],
            optimizer=parts["optimizer"],
            scheduler=parts["scheduler"],
            sampler={
                "epoch": epoch,
                "batch": loader.consumed if loader is not None else 0,
                "step": step,
                "seed": self._seed,
            },
            extra={"lightning": parts["lightning"]},
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
        self.recorder.log("warning", message, kind="loss")

    # ------------------------------------------------------------------ several processes
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Several processes: join the ranks, split the train data, open the run on every rank."""
        if stage != "fit" or trainer is not self._trainer or not self._multi:
            return
        recorder = self.recorder
        recorder.join(
            join_ranks(
                init=False,
                required=(
                    f"the trainer has world_size={trainer.world_size} but no torch.distributed process group is "
                    "initialised in setup(): use strategy='ddp' or 'ddp_spawn'"
                ),
            )
        )
        recorder.begin()
        self._install_loss()
        loader = self._handed.get("train")
        if loader is not None:
            recorder.ranks.split_batches(loader, seed=self._seed)
        self._open_run(self._resume)
        recorder.connect()
        recorder.set_state("running")

    def _open_run(self, resume: Any) -> None:
        """Open the run (on every rank) with what the trainer was configured with (``LightningRun``)."""
        raise NotImplementedError

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Several processes: the end-of-run test and the final checkpoint, while the ranks are together."""
        if trainer is not self._trainer or not self._multi or self._run_id is None:
            return
        recorder = self.recorder
        stopped = recorder.stop_requested or bool(trainer.interrupted)
        reached_end = recorder.ranks.all_agree(not stopped)
        if reached_end and self._do_test_after:
            recorder.final_test(self._has_test())
        self._save_checkpoint("final")
        recorder.finish("finished" if reached_end else "stopped")

    def _has_test(self) -> bool:
        try:
            self._test_source("test")
        except ConfigError:
            return False
        return True

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Several processes: put the user's loss back; a process Lightning started closes its store."""
        if stage != "fit" or trainer is not self._trainer or not self._multi:
            return
        self._remove_loss()
        self._in_loop = False
        self.recorder.end()
        if os.getpid() != self._launcher_pid:  # a ddp_spawn process: it ends without running atexit handlers
            self.close()
