"""``attach_lightning``: OnTheFly on a Lightning trainer you keep using as before.

It adds one callback to ``trainer.callbacks`` and wraps ``trainer.fit`` on that
trainer instance only. The wrapped ``fit``:

1. hands Lightning tracked versions of the loaders (the same batches, sample
   ids on the side), from ``fit``'s arguments, else from ``attach_lightning``'s,
   else from the datamodule's or the module's ``*_dataloader`` hooks;
2. puts the recording loss where the module holds its loss;
3. places OnTheFly's checkpoint I/O before the strategy's (checkpoints go to
   the session store as safetensors; ``resume_from`` is read from there);
4. runs Lightning's ``fit`` (on several processes the session opens in the
   callback's ``setup`` on every rank; see :mod:`onthefly.lightning.callback`), then, with ``do_test_after``,
   Lightning's
   ``trainer.test`` over the test loader, and stays open while a dashboard
   wants more epochs;
5. puts everything back as it was.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

from torch import nn

from .._version import __version__
from ..errors import ConfigError
from ..session.factory import clone_model, resolve_model_factory
from ..session.interrupts import Interrupts, interrupt_signal
from ..session.resume import locate_checkpoint
from .callback import LightningSession
from .checkpoint import RESUME_PATH, StoreCheckpointIO, from_store
from .loaders import LightningBatches, track

__all__ = ["attach_lightning"]

_HOOKS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}
_BASE_HOOK_OWNERS = ("DataHooks.", "LightningDataModule.", "LightningModule.")


def attach_lightning(
    trainer: Any,
    model: Any,
    project: str,
    *,
    run_name: str | None = None,
    train_loader: Any = None,
    val_loader: Any = None,
    test_loader: Any = None,
    datamodule: Any = None,
    loss_fn: Any = None,
    do_test_after: bool = False,
    model_factory: Any = None,
    resume_from: str | os.PathLike[str] | None = None,
    seed: int = 0,
    checkpoint_every_n_epochs: int = 1,
    home: str | os.PathLike[str] | None = None,
    dashboard_port: int | None = None,
    connect_dashboard: bool = True,
    progress: bool | None = False,
) -> Any:
    """Record per-sample losses of a Lightning run and make it steerable; keep calling ``trainer.fit``.

    Args:
        trainer: a ``lightning.pytorch.Trainer`` (or ``pytorch_lightning.Trainer``).
        model: the ``LightningModule`` you will pass to ``trainer.fit``.
        project / run_name: names shown in the dashboard and ``onthefly ls``.
        train_loader / val_loader / test_loader: the loaders (used when ``fit``
            gets none; the test loader serves ``do_test_after`` and "test now").
        datamodule: a ``LightningDataModule`` whose loaders are tracked instead.
        loss_fn: the loss the module's ``training_step`` calls: an attribute
            (``model.loss``), a method (``model.loss`` of ``def loss(self, ...)``)
            or a function called inline (``F.cross_entropy``, intercepted within
            each batch); per-sample values are taken where the module calls it
            (docs/lightning.md). Default: the module's ``loss``, ``loss_fn``,
            ``criterion`` or ``loss_func`` attribute or method. Without one, the
            fit runs with one warning and no per-sample rows.
        do_test_after: run ``trainer.test`` when training ends; while a dashboard
            is connected the process then stays open for more work.
        model_factory: builds a fresh model for reports and forks: a callable, a
            ``(callable, args, kwargs)`` tuple or a ``{"factory", "args", "kwargs"}`` dict.
        resume_from: a checkpoint id, ``"<session>/<run>"`` or a ``.safetensors``
            path written by a Lightning run; ``fit`` continues from there.
        seed: with the epoch number, sets the train data order (the loader's
            shuffling draws from a generator seeded from (seed, epoch)).
        checkpoint_every_n_epochs: a checkpoint in the store every n epochs (0: only the final one).
        home: the store root (default ./.onthefly or $ONTHEFLY_HOME).
        dashboard_port / connect_dashboard: where to look for the dashboard, and whether to.
        progress: OnTheFly's own progress bar (off: Lightning shows one).

    Every option after ``project`` is keyword-only.

    Returns:
        The callback; ``callback.session`` pauses, resumes, tests, checkpoints and queries.

    Raises:
        ConfigError: for a trainer that is not a Lightning trainer or a trainer
            already attached (a loss the module does not call only warns); at ``fit``,
            for a multi-process strategy other than DDP.

    On several processes (``strategy="ddp"`` or ``"ddp_spawn"``) each rank
    records its own part of the data and rank 0 owns the session, the link and
    the checkpoints (docs/distributed.md).

    Example:
        >>> trainer = L.Trainer(max_epochs=3)
        >>> otf = attach_lightning(trainer=trainer, model=model, project="demo", loss_fn=model.loss)  # doctest: +SKIP
        >>> trainer.fit(model, train_loader, val_loader)                                            # doctest: +SKIP
        >>> otf.session.report()["hardest"][:3]                                                     # doctest: +SKIP
    """
    callback_base, datamodule_base = _lightning_classes(trainer)
    if any(isinstance(cb, LightningSession) for cb in trainer.callbacks):
        raise ConfigError("attach_lightning was already called on this trainer: call it once per trainer")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be the LightningModule you pass to trainer.fit, got {type(model).__name__}")
    if datamodule is not None and not isinstance(datamodule, datamodule_base):
        raise ConfigError(f"datamodule must be a LightningDataModule, got {type(datamodule).__name__}")
    if (
        isinstance(checkpoint_every_n_epochs, bool)
        or not isinstance(checkpoint_every_n_epochs, int)
        or checkpoint_every_n_epochs < 0
    ):
        raise ConfigError(f"checkpoint_every_n_epochs must be an integer >= 0, got {checkpoint_every_n_epochs!r}")
    callback = _callback_class(callback_base)(
        trainer=trainer,
        model=model,
        loss_fn=loss_fn,
        project=project,
        run_name=run_name,
        seed=seed,
        checkpoint_every_n_epochs=checkpoint_every_n_epochs,
        home=None if home is None else os.fspath(home),
        dashboard_port=dashboard_port,
        connect_dashboard=connect_dashboard,
        progress=progress,
    )
    callback._configure(
        loaders={"train": train_loader, "val": val_loader, "test": test_loader},
        datamodule=datamodule,
        datamodule_base=datamodule_base,
        do_test_after=do_test_after,
        model_factory=model_factory,
        resume_from=resume_from,
    )
    trainer.callbacks.append(callback)
    return callback


def _lightning_classes(trainer: Any) -> tuple[type, type]:
    """``(Callback, LightningDataModule)`` of the Lightning flavour ``trainer`` comes from."""
    modules = [cls.__module__ for cls in type(trainer).__mro__]
    if any(m.startswith("lightning.pytorch") for m in modules):
        from lightning.pytorch import Callback, LightningDataModule
    elif any(m.startswith("pytorch_lightning") for m in modules):
        from pytorch_lightning import Callback, LightningDataModule
    else:
        raise ConfigError(
            f"trainer must be a Lightning Trainer (lightning.pytorch or pytorch_lightning), got "
            f"{type(trainer).__module__}.{type(trainer).__name__}; for plain PyTorch use onthefly.Trainer"
        )
    return Callback, LightningDataModule


@functools.cache
def _callback_class(base: type) -> type:
    """The callback class for one Lightning flavour (its hooks come from LightningRun)."""
    return type(
        "OnTheFlyCallback",
        (LightningRun, base),
        {"__module__": __name__, "__doc__": LightningRun.__doc__, "_lightning_base": base},
    )


def _new_callback(base: type) -> Any:
    """An empty callback of the class made for ``base`` (pickle fills in its state)."""
    cls = _callback_class(base)
    return cls.__new__(cls)


class LightningRun(LightningSession):
    """The callback ``attach_lightning`` adds: hooks, session, and the wrapped ``fit``."""

    def _configure(
        self,
        *,
        loaders: dict[str, Any],
        datamodule: Any,
        datamodule_base: type,
        do_test_after: bool,
        model_factory: Any,
        resume_from: Any,
    ) -> None:
        self.model_factory = resolve_model_factory(model_factory)
        self._given = loaders
        self._tracked_given: dict[str, Any] = {}
        self._datamodule = datamodule
        self._datamodule_base = datamodule_base
        self._do_test_after = bool(do_test_after)
        self._resume_from = resume_from
        self._wrapped_hooks: list[tuple[Any, str]] = []
        self._lightning_fit = self._trainer.fit
        self._trainer.fit = self._fit

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # The class is made at attach time, so a pickle (ddp_spawn) names the Lightning base it was made from.
        return (_new_callback, (self._lightning_base,), self.__getstate__())

    def clone_model(self) -> nn.Module:
        """A new module with the current weights; the training module is left as it was.

        Built by ``model_factory`` when given, else a copy without the trainer,
        loggers, callbacks and locks.

        Raises:
            ConfigError: naming the attribute that blocked the copy.
        """
        return clone_model(self._module, self.model_factory)

    # ------------------------------------------------------------------ fit
    def _fit(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: Any = None,
        ckpt_path: Any = None,
        **kwargs: Any,
    ) -> None:
        """``trainer.fit`` with the loaders tracked, the loss recorded and the session open."""
        if model is not self._module:
            raise ConfigError(
                f"trainer.fit got a {type(model).__name__} that is not the model given to attach_lightning: "
                "pass the same LightningModule (attach_lightning(model=m); trainer.fit(m, ...))"
            )
        trainer = self._trainer
        self._multi = _multi_process(trainer)
        self._launcher_pid = os.getpid()
        if isinstance(train_dataloaders, self._datamodule_base):
            datamodule, train_dataloaders = train_dataloaders, None
        train, val, datamodule = self._hand_loaders(model, train_dataloaders, val_dataloaders, datamodule)
        resume = None
        if ckpt_path is None and self._resume_from is not None:
            resume = locate_checkpoint(self._resume_from, store=self.recorder.store)
            ckpt_path = RESUME_PATH
        strategy = trainer.strategy
        previous_io = strategy.checkpoint_io
        strategy.checkpoint_io = StoreCheckpointIO(
            previous_io,
            on_capture=self._capture,
            preloaded={RESUME_PATH: from_store(resume.data)} if resume is not None else None,
        )
        if self._multi:  # every rank opens its part of the session in setup(), once the process group exists
            self._resume = resume
            try:
                self._lightning_fit(model, train, val, datamodule, ckpt_path, **kwargs)
            finally:
                strategy.checkpoint_io = previous_io
                self._unwrap_hooks()
                self._handed.clear()
                self._resume = None
            return
        recorder = self.recorder
        self._open_run(resume)
        interrupts = Interrupts(defer=False)  # Lightning's loop is its own: an interrupt lands where it arrives
        try:
            with interrupts:
                try:
                    with recorder.training():
                        recorder.connect()
                        recorder.set_state("running")
                        with self._loss_in_place():
                            self._fit_once(interrupts, model, train, val, datamodule, ckpt_path, **kwargs)
                            reached_end = not recorder.stop_requested and not trainer.interrupted
                            if reached_end:
                                for more in recorder.more_epochs(
                                    do_test_after=self._do_test_after, has_test=self._has_test
                                ):
                                    trainer.fit_loop.max_epochs = int(trainer.current_epoch) + more
                                    self._fit_once(interrupts, model, train, val, datamodule, None, **kwargs)
                            self._save_checkpoint("final")
                        recorder.finish("finished" if reached_end else "stopped")
                except BaseException as exc:
                    signum = interrupt_signal(exc)
                    if signum is not None:  # Ctrl+C or SIGTERM: rows durable, run marked, one line
                        recorder.interrupted(signum)
                        interrupts.propagate(exc, before_exit=recorder.close)
                    raise
        finally:
            strategy.checkpoint_io = previous_io
            self._unwrap_hooks()
            self._handed.clear()
            self._in_loop = False

    def _fit_once(
        self, interrupts: Interrupts, model: Any, train: Any, val: Any, datamodule: Any, ckpt_path: Any, **kwargs: Any
    ) -> None:
        """Lightning's own ``fit``; the Ctrl+C it turns into ``sys.exit(1)`` goes on as the ``KeyboardInterrupt``."""
        try:
            if ckpt_path is None:
                self._lightning_fit(model, train, val, datamodule, **kwargs)
            else:
                self._lightning_fit(model, train, val, datamodule, ckpt_path, **kwargs)
        except SystemExit:
            if interrupts.raised_signal == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise

    def _open_run(self, resume: Any) -> None:
        trainer = self._trainer
        self._config = {
            "framework": type(trainer).__module__.split(".")[0],
            "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps,
            "seed": self._seed,
            "do_test_after": self._do_test_after,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "precision": str(trainer.precision),
            "strategy": type(trainer.strategy).__name__,
            "world_size": int(trainer.world_size),
            "checkpoint_every_n_epochs": self._every,
            "version": __version__,
        }
        self.recorder.open_run(kind="base", config=self._config, hparams=_plain_hparams(self._module), resume=resume)
        self._logged_step, self._step_losses = -1, []
        self._pending_rng = resume.data.rng if resume is not None else None

    # ------------------------------------------------------------------ loaders
    def _hand(self, loader: Any, split: str) -> Any:
        tracked = track(loader, seed=self._seed, split=split)
        if isinstance(tracked, LightningBatches):
            if split == "train":  # a hook called once the ranks are joined: this rank's part
                self.recorder.ranks.split_batches(tracked, seed=self._seed)
            self._handed[split] = tracked
        return tracked

    def _hand_loaders(self, model: Any, train: Any, val: Any, datamodule: Any) -> tuple[Any, Any, Any]:
        if datamodule is None and train is None:
            datamodule = self._datamodule
        if datamodule is None:
            train = train if train is not None else self._given["train"]
            val = val if val is not None else self._given["val"]
        train = self._hand(train, "train") if train is not None else None
        val = self._hand(val, "val") if val is not None else None
        for owner in (datamodule, model):
            if owner is not None:
                self._wrap_hooks(
                    owner, skip={s for s, loader in (("train", train), ("val", val)) if loader is not None}
                )
        return train, val, datamodule

    def _wrap_hooks(self, owner: Any, *, skip: set[str]) -> None:
        """Track the loaders ``owner``'s own ``*_dataloader`` hooks return (instance attributes, undone after fit)."""
        for split, name in _HOOKS.items():
            if split in skip or name in vars(owner) or not _overridden(owner, name):
                continue
            vars(owner)[name] = _TrackedHook(self, getattr(owner, name), split)
            self._wrapped_hooks.append((owner, name))

    def _unwrap_hooks(self) -> None:
        for owner, name in self._wrapped_hooks:
            vars(owner).pop(name, None)
        self._wrapped_hooks.clear()

    def _test_source(self, split: str) -> dict[str, Any]:
        if split == "val" and self._handed.get("val") is not None:
            return {"dataloaders": self._handed["val"]}
        given = self._given.get(split)
        if given is not None:
            if split not in self._tracked_given:
                self._tracked_given[split] = track(given, seed=self._seed, split=split)
            self._handed[split] = self._tracked_given[split]
            return {"dataloaders": self._handed[split]}
        dm = self._datamodule if self._datamodule is not None else self._trainer.datamodule
        if dm is not None and _overridden(dm, _HOOKS[split]):
            self._wrap_hooks(dm, skip=set(_HOOKS) - {split})
            return {"datamodule": dm}
        raise ConfigError(
            f"no {split}_loader was given to attach_lightning(...): pass {split}_loader=... to run {split}"
        )


class _TrackedHook:
    """A ``*_dataloader`` hook that hands Lightning the tracked loader (a class, so ddp_spawn can pickle it)."""

    def __init__(self, run: LightningRun, original: Any, split: str) -> None:
        self.run, self.original, self.split = run, original, split
        self.__wrapped__ = original  # Lightning's is_overridden() looks through it to the module's own hook

    def __call__(self) -> Any:
        return self.run._hand(self.original(), self.split)


def _multi_process(trainer: Any) -> bool:
    """Whether ``trainer`` runs on several processes; only DDP (``"ddp"``, ``"ddp_spawn"``...) is supported.

    Raises:
        ConfigError: for another multi-process strategy (FSDP, DeepSpeed...).
    """
    if int(trainer.world_size) < 2:
        return False
    names = {cls.__name__ for cls in type(trainer.strategy).__mro__}
    if "DDPStrategy" not in names or "DeepSpeedStrategy" in names:
        raise ConfigError(
            f"attach_lightning records multi-process runs with DDP strategies; this trainer has "
            f"world_size={trainer.world_size} with {type(trainer.strategy).__name__}: use strategy='ddp' or "
            "'ddp_spawn', or one device (docs/distributed.md)"
        )
    return True


def _overridden(owner: Any, name: str) -> bool:
    """Whether ``owner``'s class defines hook ``name`` itself (not Lightning's base placeholder)."""
    attribute = getattr(type(owner), name, None)
    qualname = getattr(attribute, "__qualname__", "")
    return attribute is not None and not qualname.startswith(_BASE_HOOK_OWNERS)


def _plain_hparams(model: Any) -> dict[str, Any]:
    hparams = getattr(model, "hparams", None) or {}
    return {str(k): v for k, v in dict(hparams).items() if isinstance(v, (int, float, str, bool, type(None)))}
