"""OnTheFly for Lightning: ``attach_lightning`` adds a callback to your trainer.

Works with ``lightning.pytorch`` and ``pytorch_lightning`` 2.x; see
:func:`~onthefly.lightning.attach.attach_lightning`.
"""

from __future__ import annotations

from .attach import attach_lightning

__all__ = ["attach_lightning"]
