"""Making a rename durable: fsync of the folder that holds it.

Every atomic write in the store (checkpoints, shards, bundles, exports) is
temp file, fsync, ``os.replace``, then ``fsync_folder`` of its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_folder"]


def fsync_folder(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
