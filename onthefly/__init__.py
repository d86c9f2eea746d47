"""OnTheFly: interactive PyTorch training with live per-sample loss.

    from onthefly import Trainer

``Trainer`` trains your model and records every sample's loss;
``attach_lightning`` does the same for a Lightning trainer; ``sql()``
opens a session's data in DuckDB. Names load lazily so the ``onthefly``
command starts without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import OnTheFlyError

if TYPE_CHECKING:  # pragma: no cover
    from .lightning import attach_lightning
    from .store.read.query import sql
    from .trainer import Trainer

__all__ = ["Trainer", "attach_lightning", "sql", "OnTheFlyError", "__version__"]

_LAZY = {
    "Trainer": ("onthefly.trainer", "Trainer"),
    "attach_lightning": ("onthefly.lightning", "attach_lightning"),
    "sql": ("onthefly.store.read.query", "sql"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onthefly' has no attribute {name!r}")
