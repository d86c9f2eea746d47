"""Fresh copies of the user's model, for reports, forks and merges.

A copy never touches the training model: it is built by the user's
``model_factory`` (three accepted forms) or, without one, by deep-copying the
model after setting aside attachments that cannot be copied (a Lightning
trainer, loggers, locks, open files).
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["resolve_model_factory", "clone_model"]

# Attributes that tie a module to a live process rather than to its weights.
_DETACHABLE_NAMES = ("trainer", "_trainer", "logger", "_logger", "loggers", "_fabric", "callbacks")
_UNCOPYABLE_TYPES: tuple[type, ...] = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Thread,
    threading.Event,
    io.IOBase,
)


def resolve_model_factory(model_factory: Any) -> Callable[[], nn.Module] | None:
    """Turn the seed's three factory forms into one zero-argument callable.

    Args:
        model_factory: None; a callable (or class); a ``(callable, args, kwargs)``
            tuple (``args``/``kwargs`` optional); or a dict with keys
            ``factory``, ``args``, ``kwargs``.

    Returns:
        A callable building a new model, or None when none was given.

    Example:
        >>> build = resolve_model_factory((nn.Linear, (4, 2), {}))
        >>> isinstance(build(), nn.Linear)
        True
    """
    if model_factory is None:
        return None
    if callable(model_factory) and not isinstance(model_factory, (tuple, list, dict)):
        return model_factory
    if isinstance(model_factory, Mapping):
        unknown = set(model_factory) - {"factory", "args", "kwargs"}
        if "factory" not in model_factory or unknown:
            raise ConfigError(
                "model_factory as a dict needs the key 'factory' and may have 'args' and 'kwargs'; "
                f"got keys {sorted(model_factory)}"
            )
        fn, args, kwargs = model_factory["factory"], model_factory.get("args", ()), model_factory.get("kwargs", {})
    elif isinstance(model_factory, (tuple, list)):
        if not 1 <= len(model_factory) <= 3:
            raise ConfigError(f"model_factory as a tuple is (callable, args, kwargs); got {len(model_factory)} items")
        fn = model_factory[0]
        args = model_factory[1] if len(model_factory) > 1 else ()
        kwargs = model_factory[2] if len(model_factory) > 2 else {}
    else:
        raise ConfigError(
            "model_factory must be a callable, a (callable, args, kwargs) tuple or a dict; "
            f"got {type(model_factory).__name__}"
        )
    if not callable(fn):
        raise ConfigError(f"model_factory's factory must be callable, got {fn!r}")
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, Mapping):
        raise ConfigError("model_factory's args must be a tuple or list and kwargs a dict")
    args, kwargs = tuple(args), dict(kwargs)

    def build() -> nn.Module:
        return fn(*args, **kwargs)

    return build


def _detachable(name: str, value: Any) -> bool:
    if name in _DETACHABLE_NAMES:
        return True
    return isinstance(value, _UNCOPYABLE_TYPES)


def clone_model(model: nn.Module, factory: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A new model with the same weights, leaving ``model`` exactly as it was.

    Uses ``factory`` when given (then loads ``model``'s state dict), otherwise
    deep-copies ``model`` with its process-bound attachments set aside on every
    submodule and put back afterwards (also on error).

    Raises:
        ConfigError: naming the attribute that blocked the copy, and asking for a
            ``model_factory``.
    """
    if factory is not None:
        fresh = factory()
        fresh.load_state_dict(model.state_dict())
        first = next(model.parameters(), None)
        return fresh.to(first.device) if first is not None else fresh

    set_aside: list[tuple[nn.Module, str, Any]] = []
    try:
        for module in model.modules():
            for name, value in list(vars(module).items()):
                if name.startswith("__") or name in ("_parameters", "_buffers", "_modules"):
                    continue
                if _detachable(name, value):
                    set_aside.append((module, name, value))
                    vars(module)[name] = None
        try:
            return copy.deepcopy(model)
        except Exception as exc:
            blocker = _find_blocker(model)
            where = f" (attribute {blocker!r})" if blocker else ""
            raise ConfigError(
                f"cannot copy the model{where}: {exc}. Pass model_factory=... so OnTheFly can build a fresh one"
            ) from exc
    finally:
        for module, name, value in set_aside:
            vars(module)[name] = value


def _find_blocker(model: nn.Module) -> str | None:
    for mod_name, module in model.named_modules():
        for name, value in vars(module).items():
            if name in ("_parameters", "_buffers", "_modules"):
                continue
            try:
                copy.deepcopy(value)
            except Exception:
                return f"{mod_name + '.' if mod_name else ''}{name}"
    return None
