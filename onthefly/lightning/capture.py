"""Where a LightningModule's loss is taken from, and the recorder put there for a fit.

A LightningModule computes its loss in one of a few ways; :func:`plan_capture`
(a pure decision, no Trainer needed) tells which from the module and the
``loss_fn`` given to ``attach_lightning``:

``"attribute"``
    The module holds the loss (``self.loss = nn.CrossEntropyLoss()``): a
    :class:`~onthefly.lightning.loss.RecordingLoss` takes the attribute's place.
``"method"``
    A method of the class (``def loss(self, preds, labels=None)``, as in
    Lightning's ``BoringModel``): the recorder is set as an instance attribute
    of the same name (the class' method is left alone) and calls the method.
``"functional"``
    A function called inline in ``training_step`` (``F.cross_entropy(logits, y)``,
    ``torch.nn.functional.nll_loss(...)``, ``from torch.nn.functional import
    nll_loss``, or a function of the user's own module): the names it is looked
    up by at call time (in ``torch.nn.functional`` and in the globals of the
    modules defining the LightningModule's classes) are bound to an
    interceptor from the start to the end of each batch (train, validation,
    test) and put back after it; the end of ``fit`` puts them back too, so a
    step that raises leaves nothing behind.
    ``nn.CrossEntropyLoss`` and the other torch loss modules call
    ``torch.nn.functional`` too, so ``loss_fn=F.cross_entropy`` also sees them.
``"none"``
    Nothing OnTheFly could record from: the fit runs, with one warning line
    saying why and how to get per-sample rows.

The interceptor records only on the thread that installed it and only while a
batch of a tracked loader is being processed (between Lightning's batch start
and end hooks), and only the first call of the step whose values split into
the batch's samples; every other call goes straight to the original function.
Several fits in one process (threads) share one interceptor per function,
removed when the last of them ends; processes (DDP, ``ddp_spawn``) each patch
their own.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

from ..errors import ConfigError
from ..session.batches import batch_size_of
from ..session.losses import PerSampleLoss, class_index_kept, per_sample_values
from .loss import LOSS_NAMES, RecordingLoss, sample_layout
from .metrics import step_loss

__all__ = ["FunctionalCapture", "LossCapture", "LossPlan", "functional_sites", "plan_capture"]

_HOW = (
    "pass loss_fn= the loss training_step calls: an attribute (loss_fn=model.loss), a method of the module, "
    "or a function such as F.cross_entropy (docs/lightning.md)"
)
_FRAMEWORK_MODULES = (
    "torch",
    "lightning.pytorch.core",
    "lightning.pytorch.utilities",
    "lightning.fabric",
    "pytorch_lightning.core",
    "pytorch_lightning.utilities",
    "lightning_utilities",
    "builtins",
)
_CLASS_INDEX_LOSSES = ("cross_entropy", "nll_loss")


@dataclass(frozen=True)
class LossPlan:
    """How the per-sample losses of one module are captured (see the module docstring).

    Attributes:
        strategy: ``"attribute"``, ``"method"``, ``"functional"`` or ``"none"``.
        loss: the user's loss (module, bound method or function); None for "none".
        owner: the module holding the attribute or method ("attribute", "method").
        name: the attribute or method name ("attribute", "method").
        reason: for "none", the warning line: why, and how to get per-sample rows.
    """

    strategy: str
    loss: Any = None
    owner: Any = None
    name: str | None = None
    reason: str | None = None


def plan_capture(model: nn.Module, loss_fn: Any = None) -> LossPlan:
    """Which capture strategy applies to ``model`` and ``loss_fn`` (never raises).

    Example:
        >>> plan_capture(lit_model, F.nll_loss).strategy      # doctest: +SKIP
        'functional'
        >>> plan_capture(BoringModel(), None).strategy       # doctest: +SKIP
        'method'
    """
    kind = type(model).__name__
    if loss_fn is None:
        for name in LOSS_NAMES:
            value = getattr(model, name, None)
            if not callable(value):
                continue
            if isinstance(value, types.MethodType) and value.__self__ is model:
                if _user_method(model, name):
                    return LossPlan("method", value, owner=model, name=name)
                continue
            return LossPlan("attribute", value, owner=model, name=name)
        return LossPlan(
            "none",
            reason=(f"no per-sample loss rows: found no loss on {kind} (looked for {', '.join(LOSS_NAMES)}); {_HOW}"),
        )
    loss_fn = getattr(loss_fn, "__onthefly_original__", loss_fn)
    for module in model.modules():
        for name, value in list(module._modules.items()) + list(vars(module).items()):
            if value is loss_fn:
                return LossPlan("attribute", value, owner=module, name=name)
    if isinstance(loss_fn, types.MethodType) and isinstance(loss_fn.__self__, nn.Module):
        owner, name = loss_fn.__self__, loss_fn.__func__.__name__
        if any(m is owner for m in model.modules()) and getattr(type(owner), name, None) is loss_fn.__func__:
            return LossPlan("method", loss_fn, owner=owner, name=name)
    label = _describe(loss_fn)
    if isinstance(loss_fn, nn.Module) or not callable(loss_fn) or isinstance(loss_fn, types.MethodType):
        return LossPlan(
            "none",
            reason=(
                f"no per-sample loss rows: loss_fn ({label}) is not an attribute, method or function {kind} "
                f"calls, so OnTheFly cannot see the losses of the training forward pass; set it in __init__ "
                f"(self.loss = loss_fn), call self.loss(...) in training_step and pass loss_fn=model.loss, "
                f"or {_HOW}"
            ),
        )
    if not functional_sites(model, loss_fn):
        return LossPlan(
            "none",
            reason=(
                f"no per-sample loss rows: loss_fn {label} is neither in torch.nn.functional nor a global of the "
                f"module defining {kind}, so its calls in training_step cannot be seen; {_HOW}"
            ),
        )
    return LossPlan("functional", loss_fn)


def functional_sites(model: nn.Module, fn: Any) -> list[tuple[dict, str]]:
    """The namespaces (and names) a call of ``fn`` in the module's code looks it up in.

    ``torch.nn.functional`` (``F.nll_loss``, ``torch.nn.functional.nll_loss``,
    and torch's loss modules), then the globals of every module that defines a
    class of ``model`` or of its submodules (``from torch.nn.functional import
    nll_loss``, a loss function of the user's own), framework modules excepted.
    """
    fn = getattr(fn, "__onthefly_original__", fn)
    spaces: list[dict] = [vars(F)]
    seen = {id(vars(F))}
    for module in model.modules():
        for cls in type(module).__mro__:
            name = cls.__module__ or ""
            if name == "torch" or name.startswith(tuple(f"{m}." for m in _FRAMEWORK_MODULES)) or name == "builtins":
                continue
            where = sys.modules.get(name)
            if where is not None and id(vars(where)) not in seen:
                seen.add(id(vars(where)))
                spaces.append(vars(where))
    sites = []
    for space in spaces:
        for name, value in list(space.items()):
            if value is fn and not name.startswith("__"):
                sites.append((space, name))
    return sites


def _user_method(model: nn.Module, name: str) -> bool:
    """Whether the class defining ``name`` is the user's (or a demo's), not Lightning's or torch's base."""
    for cls in type(model).__mro__:
        if name in vars(cls):
            module = cls.__module__ or ""
            return not (module == "torch" or module.startswith(tuple(f"{m}." for m in _FRAMEWORK_MODULES)))
    return False


def _describe(fn: Any) -> str:
    if isinstance(fn, nn.Module):
        return type(fn).__name__
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}.{name}" if module else name


class LossCapture:
    """The recorder of one module's loss, following its :class:`LossPlan`; held by the callback.

    Args:
        plan: from :func:`plan_capture`.
        model: the LightningModule.
        claim: the callback's ``claim(fits)``: the current batch's sample ids when
            ``fits(len(ids))`` holds and the batch is not claimed yet, else None.
        record: the callback's ``record(ids, per_sample, output, target)``.
        warn: logs one warning line.

    Example:
        >>> capture = LossCapture(plan_capture(model, F.nll_loss), model, claim=cb.claim, record=cb.record,
        ...                       warn=print)                                                  # doctest: +SKIP
        >>> with capture.in_place():                                                            # doctest: +SKIP
        ...     trainer_fit()
    """

    def __init__(
        self,
        plan: LossPlan,
        model: nn.Module,
        *,
        claim: Callable[..., np.ndarray | None],
        record: Callable[..., None],
        warn: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self._model = model
        self._warn = warn
        self._warned = False
        self._seen = False  # a batch was recorded since the last epoch end
        self._installed = False
        self._bound = False  # functional: the names are the interceptor's now (within a batch)
        self._sites: list[tuple[dict, str]] = []
        self.recorder: RecordingLoss | None = None
        self.functional: FunctionalCapture | None = None
        if plan.strategy in ("attribute", "method"):
            self.recorder = RecordingLoss(plan.loss, claim=claim, record=self._record(record), warn=self.warn_once)
        elif plan.strategy == "functional":
            self.functional = FunctionalCapture(
                plan.loss, claim=claim, record=self._record(record), warn=self.warn_once
            )

    def _record(self, record: Callable[..., None]) -> Callable[..., None]:
        def recorded(*args: Any) -> None:
            self._seen = True
            record(*args)

        return recorded

    def warn_once(self, message: str) -> None:
        """Log ``message`` unless a per-sample warning was given already."""
        if not self._warned:
            self._warned = True
            self._warn(message)

    def announce(self) -> None:
        """Say, once, that no per-sample rows will come (strategy "none")."""
        if self.plan.reason:
            self.warn_once(self.plan.reason + ". Step metrics, pause/resume, test and checkpoints still work")

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        """Put the recorder in place (nothing to do when it is)."""
        if self._installed:
            return
        plan = self.plan
        if plan.strategy == "attribute":
            table = plan.owner._modules if plan.name in plan.owner._modules else vars(plan.owner)
            table[plan.name] = self.recorder
        elif plan.strategy == "method":
            vars(plan.owner)[plan.name] = self.recorder  # the instance attribute shadows the class' method
        elif plan.strategy == "functional":  # bound at each batch start (step_start)
            self._sites = functional_sites(self._model, plan.loss)
        self._installed = True

    def remove(self) -> None:
        """Put the user's loss back (nothing to do when it is)."""
        if not self._installed:
            return
        plan = self.plan
        if plan.strategy == "attribute":
            table = plan.owner._modules if plan.name in plan.owner._modules else vars(plan.owner)
            if table.get(plan.name) is self.recorder:
                table[plan.name] = plan.loss
        elif plan.strategy == "method":
            if vars(plan.owner).get(plan.name) is self.recorder:
                del vars(plan.owner)[plan.name]
        elif plan.strategy == "functional":
            self.step_end()
            self._sites = []
        self._installed = False

    def step_start(self) -> None:
        """A batch starts: an intercepted function's names go to the interceptor, for this thread."""
        if self._installed and self.functional is not None and not self._bound:
            _intercept(self.functional, self._sites)
            self._bound = True

    def step_end(self) -> None:
        """The batch ended: the function's names are the original's again."""
        if self._bound:
            _release(self.functional)
            self._bound = False

    @contextmanager
    def in_place(self) -> Iterator[None]:
        """The recorder in place for the block, then the user's loss back, even on exceptions."""
        if self._installed:  # already in place (a test inside fit)
            yield
            return
        self.install()
        try:
            yield
        finally:
            self.remove()

    def batch_end(self, *, claimed: bool, returned: Any) -> None:
        """After a train batch: a step that returned a loss without the loss being seen gets one warning."""
        if not claimed and step_loss(returned) is not None and self.plan.strategy != "none":
            self.warn_once(self._missed())

    def epoch_end(self) -> None:
        """After a train epoch: nothing recorded in it (a step returning None each time) gets one warning."""
        if not self._seen and self.plan.strategy != "none":
            self.warn_once(self._missed())
        self._seen = False

    def _missed(self) -> str:
        plan = self.plan
        what = f"self.{plan.name}(...)" if plan.name else f"{_describe(plan.loss)}(...)"
        if self.functional is not None and self.functional.failed or self.recorder is not None and self.recorder.failed:
            return "no per-sample loss rows (see the warning above)"
        return (
            f"no per-sample loss rows: training_step did not call {what} on an output with one value (or "
            f"a whole number of class-index tokens) per sample of the batch; {_HOW}. Step metrics, "
            "pause/resume, test and checkpoints still work"
        )


# ---------------------------------------------------------------------- the functional interceptor
_LOCK = threading.Lock()
_ACTIVE: dict[int, _Intercept] = {}  # id(original function) -> its interceptor


class _Intercept:
    """One function's interceptor: the wrapper bound in its names, and the captures by thread."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.by_thread: dict[int, FunctionalCapture] = {}
        self.sites: list[tuple[dict, str]] = []
        self.wrapper = _wrapper(original, self.by_thread)


def _wrapper(original: Callable[..., Any], by_thread: dict[int, FunctionalCapture]) -> Callable[..., Any]:
    get, ident = by_thread.get, threading.get_ident

    def intercepted(*args: Any, **kwargs: Any) -> Any:
        capture = get(ident())
        if capture is None:
            return original(*args, **kwargs)
        return capture(args, kwargs)

    functools.update_wrapper(intercepted, original)
    intercepted.__onthefly_original__ = original  # type: ignore[attr-defined]
    return intercepted


def _intercept(capture: FunctionalCapture, sites: list[tuple[dict, str]]) -> None:
    """Bind ``capture``'s function's names to the interceptor, recording for this thread."""
    original = capture.fn
    with _LOCK:
        intercept = _ACTIVE.get(id(original))
        if intercept is None:
            intercept = _ACTIVE[id(original)] = _Intercept(original)
        intercept.by_thread[threading.get_ident()] = capture
        capture.thread = threading.get_ident()
        for space, name in sites:
            if space.get(name) is original:
                space[name] = intercept.wrapper
                intercept.sites.append((space, name))


def _release(capture: FunctionalCapture) -> None:
    """Stop recording for ``capture``; the last capture of a function puts its names back."""
    original = capture.fn
    with _LOCK:
        intercept = _ACTIVE.get(id(original))
        if intercept is None:
            return
        if intercept.by_thread.get(capture.thread) is capture:
            del intercept.by_thread[capture.thread]
        if intercept.by_thread:
            return
        for space, name in intercept.sites:
            if space.get(name) is intercept.wrapper:
                space[name] = original
        del _ACTIVE[id(original)]


class FunctionalCapture:
    """Records the per-sample values of calls of one loss function made inside a step.

    The user's call runs unchanged and its value is what ``training_step``
    gets (the same tensor, the same graph). The per-sample values come from
    the same output and target: for a function with a ``reduction`` argument
    (every torch.nn.functional loss) one more call with ``reduction="none"``
    and the call's other arguments (``weight``, ``ignore_index``,
    ``label_smoothing``...), on the detached output under ``no_grad``; for
    another function, :class:`~onthefly.session.losses.PerSampleLoss` (its
    own per-sample values, else ``vmap``). The model never runs again.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        claim: Callable[..., Any],
        record: Callable[..., None],
        warn: Callable[[str], None],
    ) -> None:
        self.fn = getattr(fn, "__onthefly_original__", fn)
        self._claim, self._record, self._warn = claim, record, warn
        self.thread: int | None = None
        self.failed = False
        try:
            self._signature: inspect.Signature | None = inspect.signature(self.fn)
        except (TypeError, ValueError):
            self._signature = None
        params = list(self._signature.parameters.values()) if self._signature is not None else []
        self._names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
        self._reduction = self._signature is not None and "reduction" in self._signature.parameters
        self._class_index = getattr(self.fn, "__name__", "") in _CLASS_INDEX_LOSSES
        self._generic: PerSampleLoss | None = None

    def __call__(self, args: tuple, kwargs: dict) -> Any:
        fn = self.fn
        if self.failed or self._signature is None or not self._names:
            return fn(*args, **kwargs)
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)  # the call fails as the user wrote it
        output = bound.arguments.get(self._names[0])
        target = bound.arguments.get(self._names[1]) if len(self._names) > 1 else None
        try:
            values = batch_size_of(output)
        except ConfigError:
            return fn(*args, **kwargs)
        ids = self._claim(lambda n: sample_layout(values, n, target) is not None)
        value = fn(*args, **kwargs)
        if ids is None:
            return value
        try:
            per_sample = self._per_sample(bound, output, target, values, len(ids))
        except Exception as exc:
            self.failed = True
            self._warn(
                f"no per-sample loss rows: {_describe(fn)} gave no per-sample values for a batch of "
                f"{len(ids)} ({type(exc).__name__}: {exc}); the fit goes on. To get them, pass a loss "
                "returning one value per sample (docs/lightning.md)"
            )
            return value
        whole = values == len(ids)
        self._record(ids, per_sample, output if whole else None, target if whole else None)
        return value

    def _per_sample(
        self, bound: inspect.BoundArguments, output: Any, target: Any, values: int, samples: int
    ) -> torch.Tensor:
        arguments = bound.arguments
        if self._reduction and arguments.get("size_average") is None and arguments.get("reduce") is None:
            params = self._signature.parameters
            reduction = arguments.get("reduction", params["reduction"].default)
            call = inspect.BoundArguments(self._signature, dict(arguments))
            call.arguments[self._names[0]] = tree_map(_detach, output)
            call.arguments["reduction"] = "none"
            with torch.no_grad():
                unreduced = self.fn(*call.args, **call.kwargs)
            kept = None
            if self._class_index:
                ignore = arguments.get(
                    "ignore_index", params["ignore_index"].default if "ignore_index" in params else -100
                )
                kept = class_index_kept(target, ignore, unreduced.shape)
            return per_sample_values(unreduced, samples, kept=kept, total=reduction == "batchmean")
        rest = {k: v for k, v in arguments.items() if k not in self._names}
        if self._generic is None:
            self._generic = PerSampleLoss(_Call(self.fn, rest, takes_target=len(self._names) > 1))
        else:
            self._generic.loss_fn.rest = rest
        result = self._generic(tree_map(_detach, output), tree_map(_detach, target), batch_size=values)
        return per_sample_values(result.per_sample, samples)


class _Call:
    """A function with the call's other arguments, as ``PerSampleLoss`` calls it: ``(output, target)``."""

    def __init__(self, fn: Callable[..., Any], rest: dict, *, takes_target: bool) -> None:
        self.fn, self.rest, self.takes_target = fn, rest, takes_target
        self.__name__ = getattr(fn, "__name__", "loss_fn")

    def __call__(self, output: Any, target: Any) -> Any:
        if self.takes_target:
            return self.fn(output, target, **self.rest)
        return self.fn(output, **self.rest)


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value
