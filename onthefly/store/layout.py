"""The names of every file and folder of a store root and its sessions.

This is the on-disk layout; bundles hold a session under the same relative
paths, so these names are part of the bundle format (docs/bundle-format.md)
and never change::

    <root>/
        sessions/<id>/                       one session (SESSIONS_DIR)
            SESSION                          marker: id, project, creation time (MARKER)
            LOCK                             held by the process that owns it (LOCK)
            PINNED                           kept by the clean-up (PINNED)
            catalog.sqlite                   runs, checkpoints, shards... (CATALOG)
            catalog.sqlite.migrate.lock      held while the schema is upgraded
            samples/<run>/<split>/*.parquet  per-sample rows (SAMPLES_DIR)
            steps/<run>/*.parquet            step metrics (STEPS_DIR)
            checkpoints/<run>/<id>.safetensors                    (CHECKPOINTS_DIR)
            ranks/<r>/                       rank r > 0 of a multi-process run:
                                             its catalog.sqlite, samples/, steps/
        .staging/                            scratch folders of exports and imports
    bundle.zip: manifest.json (MANIFEST), then the session's files as above

Constants are the names; the functions join them. Relative paths (what the
catalog lists) use ``/`` on every platform.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "SESSIONS_DIR",
    "STAGING_DIR",
    "MARKER",
    "LOCK",
    "PINNED",
    "CATALOG",
    "MIGRATE_LOCK_SUFFIX",
    "SAMPLES_DIR",
    "STEPS_DIR",
    "CHECKPOINTS_DIR",
    "RANKS_DIR",
    "MANIFEST",
    "CHECKPOINT_SUFFIX",
    "sessions_dir",
    "staging_dir",
    "catalog_path",
    "migrate_lock_path",
    "samples_folder",
    "steps_folder",
    "checkpoints_folder",
    "checkpoint_file",
    "rank_dir",
    "rank_prefix",
    "rank_catalogs",
]

SESSIONS_DIR = "sessions"
"""Folder of a store root holding one folder per session, named by its id."""

STAGING_DIR = ".staging"
"""Folder of a store root holding the scratch folders of exports and imports."""

MARKER = "SESSION"
"""File that makes a folder a session (JSON: id, project, created_at); the clean-up removes only such folders."""

LOCK = "LOCK"
"""File lock the process that owns a session holds (training, or serving it)."""

PINNED = "PINNED"
"""File that keeps a session from the clean-up (imported or exported sessions, ``onthefly pin``)."""

CATALOG = "catalog.sqlite"
"""The session's catalog, in the session folder and in each rank folder."""

MIGRATE_LOCK_SUFFIX = ".migrate.lock"
"""Appended to a catalog's path: the file lock held while its schema is upgraded."""

SAMPLES_DIR = "samples"
"""Folder of the per-sample shards: ``samples/<run>/<split>/``."""

STEPS_DIR = "steps"
"""Folder of the step-metric shards: ``steps/<run>/``."""

CHECKPOINTS_DIR = "checkpoints"
"""Folder of the checkpoints: ``checkpoints/<run>/<checkpoint id>.safetensors``."""

RANKS_DIR = "ranks"
"""Folder of a multi-process session holding one folder per rank > 0 (its catalog and shards)."""

MANIFEST = "manifest.json"
"""The first entry of a bundle: its format, session, runs and files."""

CHECKPOINT_SUFFIX = ".safetensors"
"""How every checkpoint file's name ends."""


def sessions_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/sessions``: where a store root keeps its sessions.

    Example:
        >>> sessions_dir("/data/.onthefly").as_posix()
        '/data/.onthefly/sessions'
    """
    return Path(root) / SESSIONS_DIR


def staging_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/.staging``: the scratch folders of exports and imports, beside the sessions.

    Example:
        >>> staging_dir("/data/.onthefly").as_posix()
        '/data/.onthefly/.staging'
    """
    return Path(root) / STAGING_DIR


def catalog_path(folder: str | os.PathLike[str]) -> Path:
    """The catalog of a session folder (or of a rank folder).

    Example:
        >>> catalog_path("/data/.onthefly/sessions/x").as_posix()
        '/data/.onthefly/sessions/x/catalog.sqlite'
    """
    return Path(folder) / CATALOG


def migrate_lock_path(catalog: str | os.PathLike[str]) -> str:
    """The file lock held while the schema of the catalog at ``catalog`` is upgraded.

    Example:
        >>> migrate_lock_path("s/catalog.sqlite")
        's/catalog.sqlite.migrate.lock'
    """
    return str(catalog) + MIGRATE_LOCK_SUFFIX


def samples_folder(run_id: str, split: str) -> Path:
    """The folder of a run's per-sample shards of one split, relative to the session folder.

    Example:
        >>> samples_folder("r1", "train").as_posix()
        'samples/r1/train'
    """
    return Path(SAMPLES_DIR, run_id, split)


def steps_folder(run_id: str) -> Path:
    """The folder of a run's step-metric shards, relative to the session folder.

    Example:
        >>> steps_folder("r1").as_posix()
        'steps/r1'
    """
    return Path(STEPS_DIR, run_id)


def checkpoints_folder(session_dir: str | os.PathLike[str]) -> Path:
    """The folder of a session's checkpoints (one folder per run inside).

    Example:
        >>> checkpoints_folder("s").as_posix()
        's/checkpoints'
    """
    return Path(session_dir) / CHECKPOINTS_DIR


def checkpoint_file(run_id: str, checkpoint_id: str) -> str:
    """A checkpoint's path relative to the session folder, as the catalog lists it.

    Example:
        >>> checkpoint_file("r1", "ck-0123456789ab")
        'checkpoints/r1/ck-0123456789ab.safetensors'
    """
    return f"{CHECKPOINTS_DIR}/{run_id}/{checkpoint_id}{CHECKPOINT_SUFFIX}"


def rank_dir(session_dir: str | os.PathLike[str], rank: int) -> Path:
    """The folder of rank ``rank`` (> 0) of a multi-process session.

    Example:
        >>> rank_dir("s", 2).as_posix()
        's/ranks/2'
    """
    return Path(session_dir) / RANKS_DIR / str(rank)


def rank_prefix(rank: int) -> str:
    """``ranks/<r>/``: what makes a path inside a rank folder relative to the session folder.

    Example:
        >>> rank_prefix(3)
        'ranks/3/'
    """
    return f"{RANKS_DIR}/{rank}/"


def rank_catalogs(session_dir: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(prefix, catalog path)`` of each rank folder of a multi-process session, in rank order.

    Ranks other than 0 list their shards in ``ranks/<r>/catalog.sqlite``, with
    paths relative to their rank folder; the prefix (``ranks/<r>/``) makes them
    relative to the session folder. A single-process session has none.

    Example:
        >>> rank_catalogs(session_dir)  # doctest: +SKIP
        [('ranks/1/', PosixPath('.../ranks/1/catalog.sqlite'))]
    """
    base = Path(session_dir) / RANKS_DIR
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.name.isdigit() and (p / CATALOG).is_file()]
    return [(f"{RANKS_DIR}/{p.name}/", p / CATALOG) for p in sorted(found, key=lambda p: int(p.name))]
