"""What a batch holds and how it reaches the model.

A loader may yield ``(x, y)``, ``(x, y, *rest)``, ``[x, y]`` or a dict with
common key names. :func:`split_batch` finds the inputs and the target,
:func:`move_to_device` moves every tensor of a nested structure, and
:func:`call_model` calls the model the conservative way:

* a tensor, a dict or any other single object is passed as one argument,
  ``model(x)``; a dict is *not* spread into keyword arguments;
* a tuple or list of inputs, as when the loader yields ``((x1, x2), y)`` or a
  dataset item's inputs are a list, is unpacked: ``model(x1, x2)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from onthefly.errors import ConfigError

__all__ = [
    "INPUT_KEYS",
    "TARGET_KEYS",
    "split_batch",
    "move_to_device",
    "batch_size_of",
    "call_model",
    "describe_structure",
]

INPUT_KEYS = ("input", "inputs", "x", "image", "images", "features")
TARGET_KEYS = ("target", "targets", "y", "label", "labels")

_DESCRIBE_MAX_ITEMS = 6
_DESCRIBE_MAX_DEPTH = 3


def split_batch(batch: Any) -> tuple[Any, Any]:
    """Return ``(inputs, target)`` from one batch a loader yielded.

    Accepted shapes: a tuple or list ``(x, y)`` or ``(x, y, *rest)`` (the rest
    is ignored), and a mapping with one input key (``input``, ``inputs``,
    ``x``, ``image``, ``images``, ``features``) and one target key
    (``target``, ``targets``, ``y``, ``label``, ``labels``).

    Args:
        batch: what the loader yielded.

    Returns:
        ``(inputs, target)``, the objects themselves (not copied).

    Raises:
        ConfigError: when neither form matches; the message describes the batch.

    Example:
        >>> x, y = split_batch({"image": torch.zeros(4, 3), "label": torch.zeros(4)})
        >>> tuple(x.shape), tuple(y.shape)
        ((4, 3), (4,))
    """
    if isinstance(batch, (tuple, list)):
        if len(batch) >= 2:
            return batch[0], batch[1]
        raise ConfigError(
            f"a batch must hold inputs and a target, got {describe_structure(batch)}; "
            "make the dataset return (input, target) pairs."
        )
    if isinstance(batch, Mapping):
        input_key = _find_key(batch, INPUT_KEYS)
        target_key = _find_key(batch, TARGET_KEYS)
        if input_key is not None and target_key is not None:
            return batch[input_key], batch[target_key]
        raise ConfigError(
            f"cannot tell inputs from target in the batch {describe_structure(batch)}: "
            f"expected one input key of {list(INPUT_KEYS)} and one target key of {list(TARGET_KEYS)}; "
            "rename the keys or give the loader a collate_fn that returns (inputs, target)."
        )
    raise ConfigError(
        f"a batch must be (inputs, target) or a dict, got {describe_structure(batch)}; "
        "make the dataset return (input, target) pairs."
    )


def move_to_device(obj: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """Return ``obj`` with every tensor moved to ``device``.

    Walks tuples, lists, named tuples, mappings and dataclass instances;
    anything else is returned unchanged. Tensors already on ``device`` are
    returned as they are (no copy).

    Args:
        obj: a tensor or a nested structure holding tensors.
        device: the target device.
        non_blocking: passed to ``Tensor.to`` (useful with pinned memory).

    Returns:
        An object of the same structure (containers are rebuilt, not mutated).

    Example:
        >>> out = move_to_device({"x": [torch.zeros(2)]}, "cpu")
        >>> out["x"][0].device.type
        'cpu'
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(move_to_device(v, device, non_blocking=non_blocking) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to_device(v, device, non_blocking=non_blocking) for v in obj)
    if isinstance(obj, Mapping):
        moved = {k: move_to_device(v, device, non_blocking=non_blocking) for k, v in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:  # a mapping type whose constructor takes something else
            return moved
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: move_to_device(getattr(obj, f.name), device, non_blocking=non_blocking)
            for f in dataclasses.fields(obj)
            if f.init
        }
        return dataclasses.replace(obj, **changes)
    return obj


def batch_size_of(inputs: Any) -> int:
    """Return the number of samples in a batch's inputs (or any batched structure).

    The size is the first dimension of the first tensor or array met in a
    depth-first walk; a list or tuple holding no tensor (a list of strings)
    counts its items.

    Args:
        inputs: a tensor, an array, or a nested structure of them.

    Returns:
        The batch size.

    Raises:
        ConfigError: when no batch dimension can be found.

    Example:
        >>> batch_size_of((torch.zeros(5, 2), torch.zeros(5)))
        5
    """
    size = _first_batch_dim(inputs)
    if size is None:
        if isinstance(inputs, (tuple, list)) and inputs:
            return len(inputs)
        raise ConfigError(
            f"cannot find a batch dimension in {describe_structure(inputs)}; "
            "the inputs must hold a tensor whose first dimension is the batch."
        )
    return size


def call_model(model: nn.Module | Any, inputs: Any) -> Any:
    """Run the model's forward on a batch's inputs.

    A tuple or list of inputs is unpacked into positional arguments; anything
    else (a tensor, a dict, a custom object) is passed as the single argument.

    Args:
        model: the model (any callable).
        inputs: the inputs part of a batch, as returned by :func:`split_batch`.

    Returns:
        Whatever the model returns.

    Example:
        >>> call_model(nn.Identity(), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def describe_structure(obj: Any) -> str:
    """Describe a nested batch in one line, for error messages.

    Args:
        obj: any object, typically a batch or a model output.

    Returns:
        A short text such as ``tuple(Tensor[128, 1, 28, 28] float32, Tensor[128] int64)``.

    Example:
        >>> describe_structure((torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)))
        'tuple(Tensor[2, 3] float32, Tensor[2] int64)'
    """
    return _describe(obj, depth=0)


def _describe(obj: Any, *, depth: int) -> str:
    if isinstance(obj, torch.Tensor):
        return f"Tensor[{', '.join(str(d) for d in obj.shape)}] {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, np.ndarray):
        return f"ndarray[{', '.join(str(d) for d in obj.shape)}] {obj.dtype}"
    if depth >= _DESCRIBE_MAX_DEPTH:
        return type(obj).__name__
    if isinstance(obj, Mapping):
        shown = list(obj.items())[:_DESCRIBE_MAX_ITEMS]
        items = [f"{k!r}: {_describe(v, depth=depth + 1)}" for k, v in shown]
        more = ", ..." if len(obj) > _DESCRIBE_MAX_ITEMS else ""
        return f"{type(obj).__name__}({', '.join(items)}{more})"
    if isinstance(obj, (tuple, list)):
        items = [_describe(v, depth=depth + 1) for v in obj[:_DESCRIBE_MAX_ITEMS]]
        more = f", ... {len(obj)} items" if len(obj) > _DESCRIBE_MAX_ITEMS else ""
        return f"{type(obj).__name__}({', '.join(items)}{more})"
    if isinstance(obj, (int, float, bool, str)) or obj is None:
        text = repr(obj)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(obj).__name__


def _find_key(batch: Mapping, candidates: tuple[str, ...]) -> str | None:
    """Return the first candidate key present in the mapping, or None."""
    for key in candidates:
        if key in batch:
            return key
    return None


def _first_batch_dim(obj: Any) -> int | None:
    """Return the first dimension of the first tensor or array in a depth-first walk."""
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return int(obj.shape[0]) if obj.ndim >= 1 else None
    if isinstance(obj, Mapping):
        children = obj.values()
    elif isinstance(obj, (tuple, list)):
        children = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        return None
    for child in children:
        size = _first_batch_dim(child)
        if size is not None:
            return size
    return None
