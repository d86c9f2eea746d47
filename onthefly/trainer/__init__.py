"""The native Trainer (and, later, the Lightning adapter)."""

from .trainer import Trainer

__all__ = ["Trainer"]
