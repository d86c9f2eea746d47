"""Scratch folders of exports and imports, and the file operations they share.

An export stages a session under ``<root>/.staging/export-<pid>-<token>/``
(hard links, so staging costs no copy); an import extracts a bundle under
``<root>/.staging/import-<pid>-<token>/`` and renames it into
``sessions/`` once verified. Both live under the store root, on the same
file system as the sessions, so links and renames work. A scratch folder
left behind by a process that died is removed by the next one made.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from onthefly.errors import MissingFileError, StoreError
from onthefly.store.layout import staging_dir

__all__ = ["new_scratch", "remove_scratch", "link_or_copy"]

HASH_CHUNK = 16 << 20

_SCRATCH_NAME = re.compile(r"^(export|import)-(\d+)-[0-9a-f]{12}$")


def new_scratch(root: Path, kind: str) -> Path:
    """Create ``<root>/.staging/<kind>-<pid>-<token>/`` and return it.

    Scratch folders of processes that no longer run are removed first.

    Args:
        root: the store root.
        kind: ``"export"`` or ``"import"``.

    Raises:
        StoreError: the folder cannot be created (permissions, disk).
    """
    staging = staging_dir(root)
    _remove_orphans(staging)
    folder = staging / f"{kind}-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the scratch folder {folder}: {exc.strerror}; check that the store root is writable"
        ) from exc
    return folder


def remove_scratch(folder: Path) -> None:
    """Delete a scratch folder, and ``.staging`` with it when nothing else is left there."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # another export or import is using it, or it is already gone


def _remove_orphans(staging: Path) -> None:
    try:
        names = os.listdir(staging)
    except OSError:
        return
    for name in names:
        match = _SCRATCH_NAME.match(name)
        if match and not _pid_alive(int(match.group(2))):
            shutil.rmtree(staging / name, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return True


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target`` (copying when the file system refuses links).

    Raises:
        MissingFileError: ``source`` does not exist.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except FileNotFoundError:
        raise MissingFileError(
            f"{source} is listed in the catalog but missing on disk: restore it, or export another session"
        ) from None
    except OSError:
        pass  # links not allowed here (another device, a file system without them): copy
    shutil.copyfile(source, target)
