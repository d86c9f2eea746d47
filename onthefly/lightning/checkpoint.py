"""Lightning's checkpoint dict in and out of OnTheFly's safetensors checkpoints.

A Lightning checkpoint is a dict (``state_dict``, ``optimizer_states``,
``lr_schedulers``, ``loops``, ``callbacks``, hyperparameters...).
:func:`to_store` splits it into the parts of an OnTheFly checkpoint (model,
optimizers, schedulers; the rest as JSON-like ``extra``) and :func:`from_store`
builds it back, so Lightning's own restore code resumes the run: loop
progress, callbacks, optimizers and schedulers included. Values a safetensors
checkpoint cannot hold without pickling (classes, arbitrary objects) are left
out and named.

:class:`StoreCheckpointIO` stands in front of the strategy's checkpoint I/O
for the duration of a fit: a save to :data:`CAPTURE_PATH` is handed to
OnTheFly instead of being written with ``torch.save``, a load of a preloaded
path returns that dict, and everything else (the user's ``ModelCheckpoint``)
goes to the I/O that was there before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..store.checkpoints.checkpoints import CheckpointData

__all__ = ["CAPTURE_PATH", "RESUME_PATH", "StoreCheckpointIO", "from_store", "storable", "to_store"]

CAPTURE_PATH = "onthefly-capture.safetensors"
"""The path a save uses to hand Lightning's checkpoint dict to OnTheFly."""

RESUME_PATH = "onthefly-resume.safetensors"
"""The ``ckpt_path`` Lightning gets when resuming from a checkpoint in the store."""

_PARTS = ("state_dict", "optimizer_states", "lr_schedulers")
_DROPPED = object()


def storable(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """What a safetensors checkpoint can hold of ``value``, and the paths it had to leave out.

    Keeps tensors, numpy arrays and scalars, None, bools, ints, floats, strings
    and dicts/lists/tuples of those (dict subclasses become dicts; keys must be
    strings, ints, floats, bools or None).

    Returns:
        ``(kept, dropped)``: ``kept`` is ``value`` without the leftovers;
        ``dropped`` lists their dotted paths.

    Example:
        >>> storable({"lr": 0.1, "cls": int})
        ({'lr': 0.1}, ['cls'])
    """
    dropped: list[str] = []
    kept = _keep(value, path, dropped)
    return (None if kept is _DROPPED else kept), dropped


def _keep(value: Any, path: str, dropped: list[str]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, np.ndarray, np.generic)):
        if isinstance(value, torch.Tensor) and (value.is_sparse or value.is_quantized or value.is_meta):
            dropped.append(path)
            return _DROPPED
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                dropped.append(f"{path}.{key!r}" if path else repr(key))
                continue
            sub = f"{path}.{key}" if path else str(key)
            kept = _keep(item, sub, dropped)
            if kept is not _DROPPED:
                out[key] = kept
        return out
    if isinstance(value, (list, tuple)):
        items = [_keep(item, f"{path}.{i}", dropped) for i, item in enumerate(value)]
        if any(item is _DROPPED for item in items):
            return _DROPPED if isinstance(value, tuple) else [i for i in items if i is not _DROPPED]
        return tuple(items) if isinstance(value, tuple) else items
    dropped.append(path)
    return _DROPPED


def to_store(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split a Lightning checkpoint dict into OnTheFly checkpoint parts.

    Returns:
        ``({"model", "optimizer", "scheduler", "lightning"}, dropped)``: pass the
        first three to ``CheckpointStore.save`` and keep ``lightning`` in its
        ``extra``; ``dropped`` names what could not be stored.

    Raises:
        ConfigError: when ``checkpoint`` has no ``state_dict``.

    Example:
        >>> parts, dropped = to_store(trainer_checkpoint_dict)  # doctest: +SKIP
    """
    if "state_dict" not in checkpoint:
        raise ConfigError(
            f"a Lightning checkpoint needs a 'state_dict'; got keys {sorted(map(str, checkpoint))}: "
            "pass the dict Lightning's dump_checkpoint returns"
        )
    rest = {k: v for k, v in checkpoint.items() if k not in _PARTS}
    lightning, dropped = storable(rest)
    optimizers = checkpoint.get("optimizer_states")
    schedulers = checkpoint.get("lr_schedulers")
    parts = {
        "model": dict(checkpoint["state_dict"]),
        "optimizer": list(optimizers) if optimizers else None,
        "scheduler": list(schedulers) if schedulers else None,
        "lightning": lightning or {},
    }
    return parts, dropped


def from_store(data: CheckpointData) -> dict[str, Any]:
    """The Lightning checkpoint dict an OnTheFly checkpoint holds.

    Raises:
        ConfigError: when the checkpoint was not written by the Lightning integration.

    Example:
        >>> ck = from_store(load_checkpoint(path)); ck["global_step"]  # doctest: +SKIP
        120
    """
    lightning = data.extra.get("lightning")
    if not isinstance(lightning, dict):
        raise ConfigError(
            "this checkpoint was written by the native Trainer, not by attach_lightning, so it holds no "
            "Lightning loop state: resume it with onthefly.Trainer, or pick a checkpoint of a Lightning run"
        )
    checkpoint = dict(lightning)
    checkpoint["state_dict"] = data.model
    checkpoint["optimizer_states"] = _as_list(data.optimizer)
    checkpoint["lr_schedulers"] = _as_list(data.scheduler)
    return checkpoint


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class StoreCheckpointIO:
    """Checkpoint I/O placed before the strategy's own for one fit.

    Args:
        inner: the strategy's checkpoint I/O until now (gets every other path).
        on_capture: receives the checkpoint dict saved to :data:`CAPTURE_PATH`.
        preloaded: path -> checkpoint dict returned by ``load_checkpoint``.
    """

    def __init__(
        self, inner: Any, *, on_capture: Callable[[dict], None], preloaded: Mapping[str, dict] | None = None
    ) -> None:
        self.inner = inner
        self._on_capture = on_capture
        self._preloaded = dict(preloaded or {})

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if str(path) == CAPTURE_PATH:
            self._on_capture(checkpoint)
            return
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        if str(path) in self._preloaded:
            return self._preloaded.pop(str(path))
        return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        teardown = getattr(self.inner, "teardown", None)
        if callable(teardown):
            teardown()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
