"""Random number generator state: seed it, capture it, put it back.

The training loop seeds Python, NumPy and torch once, captures their states
into every checkpoint, and restores them on resume. Anything that runs in the
middle of training (a test pass, a report, a health check) wraps itself in
:func:`preserved_rng` so that training continues exactly as if it had not run.

The captured state is a plain dict of JSON-able values and arrays::

    {
        "python": {"version": int, "internal": list[int], "gauss_next": float | None},
        "numpy": {"kind": str, "keys": np.ndarray[uint32], "pos": int,
                  "has_gauss": int, "cached_gaussian": float},
        "torch": torch.Tensor[uint8],
        "cuda": list[torch.Tensor[uint8]],   # present only when CUDA is available
    }
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from onthefly.errors import ConfigError

__all__ = ["seed_everything", "capture_rng", "restore_rng", "preserved_rng"]

_MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts 0 .. 2**32 - 1
_REQUIRED_KEYS = ("python", "numpy", "torch")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Args:
        seed: an integer in ``[0, 2**32 - 1]``.

    Raises:
        ConfigError: when ``seed`` is not an integer in that range.

    Example:
        >>> seed_everything(0)
        >>> a = torch.rand(2); seed_everything(0); bool((a == torch.rand(2)).all())
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r} ({type(seed).__name__}); pass for example seed=0.")
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ConfigError(f"seed must be between 0 and {_MAX_SEED}, got {seed}; pick a seed in that range.")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device when CUDA is initialised
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def capture_rng() -> dict[str, Any]:
    """Return a copy of the current Python, NumPy, torch and CUDA generator states.

    Returns:
        A dict in the format described in the module docstring. Mutating it
        does not affect the generators.

    Example:
        >>> state = capture_rng()
        >>> a = torch.rand(3); restore_rng(state); bool((a == torch.rand(3)).all())
        True
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": np.array(keys, dtype=np.uint32, copy=True),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state().clone(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the Python, NumPy, torch and CUDA generators to a captured state.

    CUDA states are restored for the devices both the capture and this machine
    have; they are ignored when CUDA is not available (a checkpoint taken on a
    GPU machine can be resumed on CPU).

    Args:
        state: a dict returned by :func:`capture_rng` (arrays may come back as
            tensors or lists, as after a round trip through a checkpoint).

    Raises:
        ConfigError: when a required part is missing or malformed; nothing is
            changed in that case.

    Example:
        >>> state = capture_rng(); _ = random.random(); restore_rng(state)
    """
    python_state, numpy_state, torch_state = _parse_state(state)
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(_as_byte_tensor(cuda_state, "cuda"), device)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block and put every generator back as it was, even if the block raises.

    Use it around work done in the middle of training (tests, reports, health
    checks) so that the training's random stream is left untouched.

    Example:
        >>> with preserved_rng():
        ...     _ = torch.rand(10)  # the training's next torch.rand is unaffected
    """
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def _parse_state(state: dict[str, Any]) -> tuple[tuple, tuple, torch.Tensor]:
    """Validate a captured state and convert it to what the setters take."""
    if not isinstance(state, dict):
        raise ConfigError(
            f"an RNG state must be a dict from capture_rng(), got {type(state).__name__}; "
            "pass the value capture_rng() returned."
        )
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise ConfigError(
            f"the RNG state lacks {missing} (it has {sorted(state)}); pass a complete state from capture_rng()."
        )
    try:
        py = state["python"]
        internal = tuple(int(v) for v in py["internal"])
        gauss_next = None if py["gauss_next"] is None else float(py["gauss_next"])
        python_state = (int(py["version"]), internal, gauss_next)
        npy = state["numpy"]
        numpy_state = (
            str(npy["kind"]),
            np.asarray(npy["keys"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"the RNG state is malformed ({type(exc).__name__}: {exc}); pass a state from capture_rng()."
        ) from exc
    return python_state, numpy_state, _as_byte_tensor(state["torch"], "torch")


def _as_byte_tensor(value: Any, part: str) -> torch.Tensor:
    """Return a CPU uint8 tensor holding a torch generator state."""
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to(device="cpu", dtype=torch.uint8).contiguous()
        return torch.as_tensor(np.asarray(value, dtype=np.uint8))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the {part!r} RNG state is not a byte array ({type(value).__name__}); pass a state from capture_rng()."
        ) from exc
