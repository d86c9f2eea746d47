"""What a caller hands the shard writer, checked on the caller's thread.

Cheap checks that turn a wrong argument into one clear ConfigError before
anything is queued: names that become folder names, 1-D per-sample columns
(numpy arrays, CPU tensors or sequences), class scores and step-metric rows.
Pure functions; :class:`onthefly.store.shards.writer.ShardWriter` calls them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onthefly.errors import ConfigError

__all__ = ["PLAIN_NUMBERS", "check_name", "column", "class_scores", "steps_columns"]

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PLAIN_NUMBERS = frozenset({int, float, bool, type(None)})
"""The types of the values a step row may hold as they are (anything else goes through the full check)."""
_KIND_WORDS = {"iu": "integer", "fiu": "numeric", "biu": "boolean (or 0/1)"}


def check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or value in {".", ".."}:
        raise ConfigError(
            f"{what}={value!r} cannot name a shard folder: use letters, digits, '_', '-' or '.' (at most 128)"
        )


def column(name: str, value: Any, kinds: str, n: int | None = None) -> np.ndarray:
    """A 1-D numpy view of ``value`` (numpy array, CPU tensor or sequence), checked cheaply."""
    if not isinstance(value, np.ndarray):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ConfigError(
                    f"{name} is on {value.device}: pass a CPU tensor ({name}.detach().cpu()) "
                    "so the writer never waits on the device"
                )
            value = value.detach()
            value = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
        else:
            value = np.asarray(value)
    if value.ndim != 1:
        raise ConfigError(f"{name} has shape {value.shape}: pass a 1-D array with one value per sample")
    if value.dtype.kind not in kinds:
        raise ConfigError(f"{name} has dtype {value.dtype}: pass {_KIND_WORDS[kinds]} values")
    if n is not None and value.shape[0] != n:
        raise ConfigError(f"{name} has {value.shape[0]} values but sample_id has {n}: give one value per sample")
    return value


def class_scores(value: Any, n: int, *, given: Mapping[str, Any]) -> np.ndarray:
    scores = np.asarray(value)
    if scores.ndim != 2 or scores.shape[0] != n or scores.shape[1] < 2 or scores.dtype.kind != "f":
        raise ConfigError(
            f"scores has shape {scores.shape} and dtype {scores.dtype}: pass [{n}, C] float class scores, C >= 2"
        )
    if "label" not in given:
        raise ConfigError("scores were given without label: pass label= too (the fields compare pred with it)")
    clash = sorted(set(given) & {"pred", "correct", "margin"})
    if clash:
        raise ConfigError(f"scores were given with {clash}: pass either scores or those fields, not both")
    return scores


def steps_columns(rows: Any) -> dict[str, list | np.ndarray]:
    if isinstance(rows, Mapping):
        columns = {str(k): (v if isinstance(v, np.ndarray) else list(v)) for k, v in rows.items()}
    elif isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {str(k): [r.get(k) for r in rows] for k in names}
    else:
        raise ConfigError(
            f"step metrics of type {type(rows).__name__} are not understood: "
            "pass {'step': [...], 'loss': [...]} or a list of row dicts"
        )
    if "step" not in columns:
        raise ConfigError(f"step metrics {sorted(columns)} have no 'step': give the global step of each row")
    if "run_id" in columns:
        raise ConfigError("step metrics may not hold a 'run_id' column: it is given as the first argument")
    n = len(columns["step"])
    for name, values in columns.items():
        if len(values) != n:
            raise ConfigError(f"step metric {name!r} has {len(values)} values but 'step' has {n}: give one per row")
        if isinstance(values, np.ndarray):
            ok = values.ndim == 1 and values.dtype.kind in "biuf"
        else:
            ok = all(v is None or isinstance(v, (int, float, np.number, np.bool_)) for v in values)
        if not ok:
            raise ConfigError(
                f"step metric {name!r} holds a value that is not a plain number: log numbers or None "
                "(a tensor as .item())"
            )
    return columns
