"""transformers-style models: dict batches spread into ``model(**batch)``,
outputs with ``.logits`` / ``.loss``, and per-sample loss from those logits.

Nothing here imports ``transformers``: a ``ModelOutput`` is recognised by
what it has (a mapping, or an object, with ``logits`` and maybe ``loss``).

**Calling the model** (:func:`spread_plan`). A dict batch is spread into
keyword arguments, ``model(input_ids=..., attention_mask=..., labels=...)``,
when the model's ``forward`` takes those names and the batch is not already
an ``(inputs, target)`` dict (an ``input``/``x``/``image``... key with a
``target``/``y``/``label``... key, which goes the usual way). The keys
``forward`` names are passed; others are left out (a forward taking only
``**kwargs`` gets them all); the sample-id keys (``sample_id``, ``id``,
``idx``, ``index``) are passed only when ``forward`` names them; every
parameter without a default must be in the batch. The label key is
``labels``, else ``label``; the labels are passed to ``forward`` when it names
``labels`` (a ``label`` key is passed as ``labels=``, as transformers' data
collators rename it) or ``label``, so the model computes its own loss. The
signature is read once per model class.

**Reading the output** (:func:`output_parts`): the logits and the model's own
loss from a ``ModelOutput``, a dict (``"logits"``, ``"loss"``), an object with
those attributes, or a tuple: ``(loss, logits, ...)`` when its first item is a
scalar tensor (transformers with ``return_dict=False`` and labels), else
``(logits, ...)``; a plain tensor is the logits.

**Per-sample loss** (:class:`ModelOutputLoss`), from the logits of the same
forward pass (no second forward) and the batch's labels, as transformers
computes the loss:

``causal_lm``
    (``*ForCausalLM``, ``*LMHeadModel``) logits ``[B, T, V]``, labels
    ``[B, T]``: the labels are shifted by one (token ``t`` predicts label
    ``t + 1``), and a sequence's value is the mean cross-entropy over its
    tokens whose label is not ``-100``; a sequence with every token ignored
    gets NaN. transformers' loss is the mean over all kept tokens of the batch,
    so it equals the mean of the per-sequence values weighted by their kept
    token counts (:func:`token_weighted_mean`).
``token``
    (``*ForMaskedLM``, ``*ForTokenClassification``) the same without the shift.
``sequence``
    (``*ForSequenceClassification``) logits ``[B, C]``: per row, by the
    problem type transformers picks (``config.problem_type``, else
    :func:`problem_type_of`): cross-entropy (``single_label_classification``),
    squared error (``regression``, when ``num_labels == 1``; the mean of the
    squared errors of each row's outputs otherwise) or binary cross-entropy
    with logits averaged over the labels (``multi_label_classification``).
    The mean of the rows is the model's loss.

The scalar to backpropagate is the model's own ``.loss`` when it returned one
(so extra terms a model adds are kept), else the same reduction computed here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onthefly.errors import ConfigError
from onthefly.session.batches import INPUT_KEYS, TARGET_KEYS, call_model, describe_structure, split_batch
from onthefly.session.losses import LossResult
from onthefly.session.streams import ID_KEYS

__all__ = [
    "IGNORE_INDEX",
    "LABEL_KEYS",
    "TASKS",
    "BatchForward",
    "Forward",
    "ForwardParams",
    "ModelOutputLoss",
    "SpreadPlan",
    "call_spread",
    "forward_batch",
    "forward_params",
    "has_logits",
    "output_parts",
    "problem_type_of",
    "sequence_per_sample",
    "spread_kwargs",
    "spread_plan",
    "task_of",
    "token_per_sample",
    "token_weighted_mean",
]

LABEL_KEYS = ("labels", "label")
"""Keys of a dict batch that hold the labels, in the order they are looked for."""

IGNORE_INDEX = -100
"""The label transformers' losses leave out (padding, prompt tokens)."""

TASKS = ("causal_lm", "token", "sequence")

_TASK_BY_NAME = (
    (re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration)$"), "causal_lm"),
    (re.compile(r"(ForMaskedLM|ForTokenClassification)$"), "token"),
    (re.compile(r"ForSequenceClassification$"), "sequence"),
)


@dataclass(frozen=True)
class ForwardParams:
    """What a model's ``forward`` takes by name.

    Attributes:
        names: parameters that can be passed by keyword.
        required: those of ``names`` without a default.
        var_keyword: ``forward`` has ``**kwargs``.
    """

    names: frozenset[str]
    required: frozenset[str]
    var_keyword: bool


@dataclass(frozen=True)
class SpreadPlan:
    """How a dict batch goes into the model (see :func:`spread_plan`).

    Attributes:
        inputs: the batch keys passed as keyword arguments of the same name.
        label_key: the batch key holding the labels (``None``: no labels).
        label_arg: the keyword the labels are passed as (``None``: not passed).
    """

    inputs: tuple[str, ...]
    label_key: str | None
    label_arg: str | None


def forward_params(model: Any) -> ForwardParams:
    """Read what ``model.forward`` takes by keyword; cached per model class.

    ``DistributedDataParallel`` / ``DataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers are looked through.

    Example:
        >>> forward_params(nn.Linear(2, 2)).names
        frozenset({'input'})
    """
    return _params_of_class(type(_unwrapped(model)))


@lru_cache(maxsize=256)
def _params_of_class(cls: type) -> ForwardParams:
    forward = getattr(cls, "forward", None)
    if forward is None:  # a plain callable: its __call__ says what it takes
        forward = cls.__call__
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):  # a builtin or C forward: nothing known by name
        return ForwardParams(frozenset(), frozenset(), False)
    names, required, var_keyword = set(), set(), False
    for index, param in enumerate(signature.parameters.values()):
        if index == 0 and param.name == "self":
            continue
        if param.kind is param.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            names.add(param.name)
            if param.default is param.empty:
                required.add(param.name)
    return ForwardParams(frozenset(names), frozenset(required), var_keyword)


def spread_plan(model: Any, batch: Any) -> SpreadPlan | None:
    """Decide whether a batch is spread into ``model(**batch)``, and how.

    A batch the usual way already fits (one of ``batches.INPUT_KEYS`` and one
    of ``batches.TARGET_KEYS``, such as ``{"image": x, "label": y}``) is left to
    it: ``model(inputs)`` with that target, as without this module. Otherwise
    the keys named by ``forward`` are passed by name; keys it does not name are
    left out, except for a forward taking only ``**kwargs``, which gets every
    key but the ids and the labels.

    Args:
        model: the model (or a DDP / compiled wrapper around it).
        batch: what the loader yielded.

    Returns:
        A :class:`SpreadPlan`, or ``None`` when the batch is not a mapping with
        string keys, fits ``(inputs, target)``, or the forward names none of its
        keys or needs a parameter the batch lacks.

    Example:
        >>> class Net(nn.Module):
        ...     def forward(self, input_ids, attention_mask=None, labels=None):
        ...         return input_ids
        >>> spread_plan(Net(), {"input_ids": 1, "attention_mask": 1, "label": 1, "idx": 1})
        SpreadPlan(inputs=('input_ids', 'attention_mask'), label_key='label', label_arg='labels')
    """
    if not isinstance(batch, Mapping) or not all(isinstance(k, str) for k in batch):
        return None
    if any(k in batch for k in INPUT_KEYS) and any(k in batch for k in TARGET_KEYS):
        return None  # split_batch's (inputs, target) fits: the usual path
    params = forward_params(model)
    label_key = next((key for key in LABEL_KEYS if key in batch), None)
    keys = [key for key in batch if key != label_key and (key not in ID_KEYS or key in params.names)]
    if params.names:
        inputs = [key for key in keys if key in params.names]
    elif params.var_keyword:
        inputs = [key for key in keys if key not in ID_KEYS]
    else:
        return None
    if not inputs:
        return None
    label_arg = None
    if label_key is not None:
        if "labels" in params.names:
            label_arg = "labels"
        elif label_key in params.names:
            label_arg = label_key
    given = set(inputs) | ({label_arg} if label_arg else set())
    if not params.required <= given:
        return None  # the batch lacks a parameter the forward needs
    return SpreadPlan(inputs=tuple(inputs), label_key=label_key, label_arg=label_arg)


def call_spread(model: Any, batch: Mapping[str, Any], plan: SpreadPlan) -> Any:
    """Run ``model(**inputs)`` for a batch as :func:`spread_plan` planned it (labels too when planned).

    Example:
        >>> plan = SpreadPlan(inputs=("input",), label_key=None, label_arg=None)
        >>> call_spread(nn.Identity(), {"input": torch.ones(1)}, plan).tolist()
        [1.0]
    """
    return model(**spread_kwargs(batch, plan))


def spread_kwargs(batch: Mapping[str, Any], plan: SpreadPlan) -> dict[str, Any]:
    """The keyword arguments :func:`call_spread` passes (labels under their argument name when planned)."""
    kwargs = {key: batch[key] for key in plan.inputs}
    if plan.label_arg is not None:
        kwargs[plan.label_arg] = batch[plan.label_key]
    return kwargs


@dataclass(frozen=True)
class Forward:
    """One batch through the model (see :func:`forward_batch`).

    Attributes:
        output: what the model returned.
        inputs: what the model was given: the inputs part of ``(inputs, target)``
            on the usual path, the keyword arguments (labels included when
            passed) when spread.
        scores: what a user loss and the classification fields take: the
            output's ``logits`` when it has them, else the output itself.
        target: the batch's labels or target (``None`` when it has none).
        plan: the :class:`SpreadPlan` used, ``None`` on the usual path.
    """

    output: Any
    inputs: Any
    scores: Any
    target: Any
    plan: SpreadPlan | None

    def loss_input(self, loss: Any) -> Any:
        """What ``loss(..., target)`` takes: the whole output for :class:`ModelOutputLoss`, else :attr:`scores`."""
        return self.output if isinstance(loss, ModelOutputLoss) else self.scores


def forward_batch(model: Any, batch: Any) -> Forward:
    """Run the model's forward on one batch, spread into keywords when :func:`spread_plan` says so.

    On the usual path the batch is split into ``(inputs, target)``
    (:func:`~onthefly.session.batches.split_batch`) and the model called with
    :func:`~onthefly.session.batches.call_model`, exactly as without this module.

    Raises:
        ConfigError: from ``split_batch`` when the batch is neither spreadable nor ``(inputs, target)``.

    Example:
        >>> step = forward_batch(nn.Identity(), (torch.ones(2), torch.zeros(2)))
        >>> step.scores.tolist(), step.target.tolist(), step.plan
        ([1.0, 1.0], [0.0, 0.0], None)
    """
    plan = spread_plan(model, batch)
    if plan is None:
        inputs, target = split_batch(batch)
        output = call_model(model, inputs)
    else:
        inputs = spread_kwargs(batch, plan)
        output = model(**inputs)
        target = batch[plan.label_key] if plan.label_key is not None else None
    scores = _logits_field(output) if has_logits(output) else output
    return Forward(output=output, inputs=inputs, scores=scores, target=target, plan=plan)


class BatchForward:
    """:func:`forward_batch` for every batch of a training loop, its decisions made once.

    Whether a batch is spread into ``model(**batch)`` (and how) is decided on
    the first batch of each structure (its type, and a mapping's keys) and
    reused; so is whether the output carries logits (per output type). On the
    usual path, a tuple or list batch, one call costs a type comparison more
    than ``split_batch`` + ``call_model``.

    Args:
        model: the model (or a DDP / compiled wrapper around it).
        loss: the loop's loss adapter; a :class:`ModelOutputLoss` takes the whole output.

    Calling it with a batch returns ``(inputs, scores, target, loss_input)``:
    as :class:`Forward`'s fields, and what the loss takes (:meth:`Forward.loss_input`).

    Example:
        >>> forward = BatchForward(nn.Identity(), None)
        >>> inputs, scores, target, loss_input = forward((torch.ones(2), torch.zeros(2)))
        >>> scores.tolist(), target.tolist()
        ([1.0, 1.0], [0.0, 0.0])
    """

    __slots__ = ("_out_logits", "_out_type", "_plans", "model", "whole_output")

    def __init__(self, model: Any, loss: Any) -> None:
        self.model = model
        self.whole_output = isinstance(loss, ModelOutputLoss)
        self._plans: dict[Any, SpreadPlan | None] = {}  # per mapping structure: its spread plan (None: usual path)
        self._out_type: type | None = None  # the output type last seen, and whether it carries logits
        self._out_logits = False

    def __call__(self, batch: Any) -> tuple[Any, Any, Any, Any]:
        if isinstance(batch, (tuple, list)):  # the usual (x, y) batch: as split_batch + call_model
            inputs, target = split_batch(batch)
            output = call_model(self.model, inputs)
        else:
            plan = self._plan_for(batch)
            if plan is None:
                inputs, target = split_batch(batch)
                output = call_model(self.model, inputs)
            else:
                inputs = spread_kwargs(batch, plan)
                output = self.model(**inputs)
                target = batch[plan.label_key] if plan.label_key is not None else None
        if type(output) is not self._out_type:
            self._out_type, self._out_logits = type(output), has_logits(output)
        scores = _logits_field(output) if self._out_logits else output
        return inputs, scores, target, output if self.whole_output else scores

    def _plan_for(self, batch: Any) -> SpreadPlan | None:
        if not isinstance(batch, Mapping):
            return None
        key = (type(batch), tuple(batch))
        try:
            return self._plans[key]
        except KeyError:
            plan = self._plans[key] = spread_plan(self.model, batch)
            return plan
        except TypeError:  # unhashable keys
            return spread_plan(self.model, batch)


def _logits_field(output: Any) -> torch.Tensor:
    return output["logits"] if isinstance(output, Mapping) else output.logits


def has_logits(output: Any) -> bool:
    """Whether the output carries ``logits`` (a ``ModelOutput``, a dict or an object with the attribute)."""
    if isinstance(output, Mapping):
        return isinstance(output.get("logits"), torch.Tensor)
    return isinstance(getattr(output, "logits", None), torch.Tensor)


def output_parts(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(logits, loss)`` from a model's output; ``loss`` is ``None`` when the model gave none.

    Raises:
        ConfigError: when no logits tensor can be found; the message describes the output.

    Example:
        >>> logits, loss = output_parts({"logits": torch.zeros(2, 3), "loss": torch.tensor(1.0)})
        >>> tuple(logits.shape), float(loss)
        ((2, 3), 1.0)
    """
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, Mapping) and "logits" in output:  # a ModelOutput is an OrderedDict
        logits, loss = output["logits"], output.get("loss")
    elif not isinstance(output, (tuple, list)) and hasattr(output, "logits"):
        logits, loss = output.logits, getattr(output, "loss", None)
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        if output[0].ndim == 0 and len(output) > 1:
            loss, logits = output[0], output[1]
        else:
            logits, loss = output[0], None
    else:
        logits, loss = None, None
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(
            f"cannot find the logits in the model's output {describe_structure(output)}: expected a tensor, "
            "an output with .logits (a transformers ModelOutput or a dict) or a tuple (logits, ...)"
        )
    return logits, loss if isinstance(loss, torch.Tensor) else None


def task_of(model: Any, logits: torch.Tensor, labels: torch.Tensor) -> str | None:
    """Decide how the model's loss is computed: ``"causal_lm"``, ``"token"``, ``"sequence"`` or ``None``.

    transformers' ``loss_type`` (``ForCausalLM``, ``ForMaskedLM``...) decides
    when set, else the class name (``GPT2LMHeadModel`` is a causal LM), else
    the shapes: ``[B, C]`` logits are a sequence task, ``[B, T, V]`` logits
    with ``[B, T]`` labels a token task of a decoder (``config.is_decoder``)
    or not. ``None`` when the shapes fit none of them.
    """
    inner = _unwrapped(model)
    for name in (getattr(inner, "loss_type", None), type(inner).__name__):
        for pattern, task in _TASK_BY_NAME:
            if isinstance(name, str) and pattern.search(name):
                return task if _fits(task, logits, labels) else None
    if logits.ndim == 2 and labels.shape[0] == logits.shape[0]:
        return "sequence"
    if logits.ndim == 3 and tuple(labels.shape) == tuple(logits.shape[:2]):
        config = getattr(inner, "config", None)
        return "causal_lm" if getattr(config, "is_decoder", False) else "token"
    return None


def token_per_sample(
    logits: torch.Tensor, labels: torch.Tensor, *, shift: bool = True, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean cross-entropy over the tokens whose label is not ``ignore_index``.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` class indices.
        shift: a causal LM's shift: logits at ``t`` predict the label at ``t + 1``.
        ignore_index: the label left out.

    Returns:
        ``(per_sample, tokens)``: float32 ``[B]`` (NaN for a sequence with no
        token kept), and the kept token count of each sequence, int64 ``[B]``.
        Both detached.

    Example:
        >>> values, tokens = token_per_sample(torch.zeros(2, 3, 4), torch.tensor([[1, 2, 3], [0, -100, -100]]))
        >>> tokens.tolist(), round(float(values[0]), 4), bool(values[1].isnan())
        ([2, 0], 1.3863, True)
    """
    with torch.no_grad():
        values, kept = _token_losses(logits.detach(), labels, shift=shift, ignore_index=ignore_index)
        tokens = kept.sum(dim=1)
        per_sample = values.sum(dim=1) / tokens  # 0 / 0 is NaN: a sequence with every token ignored
    return per_sample.float(), tokens.long()


def token_weighted_mean(per_sample: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The mean over all kept tokens of a batch from per-sequence means and token counts.

    This is transformers' causal-LM and masked-LM loss (``reduction="mean"``
    over the flattened tokens). Sequences with no kept token (NaN) count for
    nothing; a batch with no kept token gives NaN, as transformers does.
    """
    weights = tokens.to(per_sample.dtype)
    safe = torch.where(tokens > 0, per_sample, torch.zeros_like(per_sample))
    return (safe * weights).sum() / weights.sum()


def problem_type_of(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """The problem type transformers picks for sequence classification when the config sets none.

    ``num_labels == 1`` (one logit per row) is ``"regression"``; integer labels
    are ``"single_label_classification"``; anything else
    ``"multi_label_classification"``.
    """
    if logits.shape[-1] == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def sequence_per_sample(logits: torch.Tensor, labels: torch.Tensor, *, problem_type: str | None = None) -> torch.Tensor:
    """One loss per row for sequence classification or regression, as transformers defines it.

    Args:
        logits: ``[B, C]`` (``[B, 1]`` or ``[B]`` for regression).
        labels: ``[B]`` class indices, ``[B]``/``[B, 1]`` targets (regression) or ``[B, C]`` (multi-label).
        problem_type: ``"regression"``, ``"single_label_classification"``,
            ``"multi_label_classification"``; ``None`` decides as transformers does.

    Returns:
        float32 ``[B]``, detached; their mean is transformers' loss.

    Raises:
        ConfigError: for an unknown problem type.
    """
    problem_type = problem_type or problem_type_of(logits, labels)
    batch = logits.shape[0]
    with torch.no_grad():
        logits = logits.detach().float()
        if problem_type == "regression":
            values = (logits.reshape(batch, -1) - labels.float().reshape(batch, -1)) ** 2
            return values.mean(dim=1)
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits.reshape(batch, -1), labels.reshape(-1).long(), reduction="none")
        if problem_type == "multi_label_classification":
            values = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
            return values.reshape(batch, -1).mean(dim=1)
    raise ConfigError(
        f"problem_type={problem_type!r} is not one transformers knows: use 'regression', "
        "'single_label_classification' or 'multi_label_classification'"
    )


class ModelOutputLoss:
    """The backward scalar and per-sample losses of a model that computes its own loss.

    Called like :class:`~onthefly.session.losses.PerSampleLoss`,
    ``loss(output, labels, batch_size=None) -> LossResult``, with the model's
    output (a ``ModelOutput``, dict, tuple or logits) and the batch's labels.
    The task is decided on the first call (:func:`task_of`).

    Args:
        model: the model (its class name, ``loss_type`` and ``config`` decide the task).
        ignore_index: the label left out of token losses.

    Example:
        >>> loss = ModelOutputLoss(model)                       # doctest: +SKIP
        >>> result = loss(model(**batch), batch["labels"])      # doctest: +SKIP
    """

    loss_fn = None  # no user loss function (per-sample gradient norms need one)

    def __init__(self, model: Any, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.model = model
        self.ignore_index = ignore_index
        self.task: str | None = None
        self.tokens: torch.Tensor | None = None  # the last batch's kept tokens per sequence (token tasks)

    @property
    def method(self) -> str | None:
        """``"model_output"`` once a batch went through (None before), like ``PerSampleLoss.method``."""
        return None if self.task is None else "model_output"

    def __call__(self, output: Any, target: Any, *, batch_size: int | None = None) -> LossResult:
        """Return the backward scalar (the model's ``.loss`` when given) and one loss per sample.

        Raises:
            ConfigError: no labels in the batch and no loss from the model, or
                logits and labels that fit no known task.
        """
        logits, model_loss = output_parts(output)
        if not isinstance(target, torch.Tensor):
            raise ConfigError(
                f"per-sample loss needs the batch's labels ('labels' or 'label'), got {describe_structure(target)}; "
                "add the labels to the batch"
            )
        labels = target.to(logits.device)
        if self.task is None:
            self.task = task_of(self.model, logits, labels)
            if self.task is None:
                raise ConfigError(
                    f"cannot tell how {type(_unwrapped(self.model)).__name__}'s loss relates logits "
                    f"{describe_structure(logits)} to labels {describe_structure(labels)}: expected a sequence "
                    "classifier ([B, C] logits) or a language model ([B, T, V] logits, [B, T] labels); "
                    "pass loss_fn= with a loss of your own"
                )
        if self.task == "sequence":
            config = getattr(_unwrapped(self.model), "config", None)
            per_sample = sequence_per_sample(logits, labels, problem_type=getattr(config, "problem_type", None))
            tokens = None
        else:
            per_sample, tokens = token_per_sample(
                logits, labels, shift=self.task == "causal_lm", ignore_index=self.ignore_index
            )
        self.tokens = tokens
        if model_loss is None:
            model_loss = self._reduced(logits, labels)
        if batch_size is not None and per_sample.shape[0] != batch_size:
            raise ConfigError(
                f"the logits hold {per_sample.shape[0]} samples for a batch of {batch_size}; "
                "the model's output must keep the batch dimension first"
            )
        return LossResult(loss=model_loss, per_sample=per_sample)

    def check(self, output: Any, target: Any, *, batch_size: int | None = None) -> None:
        """First-batch check: the per-sample values reduce to the model's own loss (when it gave one).

        Raises:
            ConfigError: they do not (a model whose loss adds terms or smooths
                labels); the message gives both values and how to proceed.
        """
        result = self(output, target, batch_size=batch_size)
        _, model_loss = output_parts(output)
        if model_loss is None:
            return
        if self.tokens is not None:
            mine = token_weighted_mean(result.per_sample, self.tokens)
        else:
            mine = result.per_sample.mean()
        theirs = float(model_loss.detach().float())
        if not torch.isclose(
            mine, torch.tensor(theirs, dtype=mine.dtype, device=mine.device), rtol=1e-4, atol=1e-6, equal_nan=True
        ):
            raise ConfigError(
                f"the per-sample losses computed from {type(_unwrapped(self.model)).__name__}'s logits "
                f"({self.task}) average to {float(mine):.6g}, but the model's own loss is {theirs:.6g}: its loss "
                "is not the plain one for its task (label smoothing, extra terms); pass loss_fn= computing it "
                "from the logits"
            )

    def _reduced(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's loss as transformers reduces it, with gradients (when the model gave none)."""
        if self.task == "sequence":
            config = getattr(_unwrapped(self.model), "config", None)
            problem_type = getattr(config, "problem_type", None) or problem_type_of(logits, labels)
            batch = logits.shape[0]
            if problem_type == "regression":
                return F.mse_loss(logits.float().reshape(batch, -1), labels.float().reshape(batch, -1))
            if problem_type == "multi_label_classification":
                return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            return F.cross_entropy(logits.float().reshape(batch, -1), labels.reshape(-1).long())
        values, kept = _token_losses(logits, labels, shift=self.task == "causal_lm", ignore_index=self.ignore_index)
        return values.sum() / kept.sum()


def _token_losses(
    logits: torch.Tensor, labels: torch.Tensor, *, shift: bool, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token cross-entropies ``[B, T]`` (0 where ignored) and the kept mask, as transformers lays them out."""
    labels = labels.to(logits.device).long()
    if shift:  # as ForCausalLMLoss: pad the labels by one ignored token, then drop the first
        labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    batch, length = labels.shape
    values = F.cross_entropy(
        logits.float().reshape(batch * length, -1), labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).reshape(batch, length)
    return values, labels != ignore_index


def _fits(task: str, logits: torch.Tensor, labels: torch.Tensor) -> bool:
    if task == "sequence":
        return logits.ndim in (1, 2) and labels.shape[:1] == logits.shape[:1]
    return logits.ndim == 3 and tuple(labels.shape) == tuple(logits.shape[:2])


def _unwrapped(model: Any) -> Any:
    """The model inside DDP / DataParallel (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    for _ in range(4):
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model, nn.Module):
            model = model._orig_mod
        else:
            break
    return model
