"""Exporting a session bundle: a whole session in one zip file.

A bundle holds ``manifest.json``, ``catalog.sqlite``, the session's active
Parquet shards and its safetensors checkpoints, under the same relative paths
as in the session folder; docs/bundle-format.md describes it for readers that
do not have OnTheFly.

Export runs in two phases so a training loop waits only for the cheap one:

1. :func:`snapshot_session` (on the training thread, at a batch boundary):
   a fresh checkpoint of the current run, a flush of the shard writer, a copy
   of the catalog through SQLite's backup API, and hard links of the active
   shards and listed checkpoints into a staging folder under the store root.
2. :func:`write_bundle` (on the caller's thread): the zip, written from the
   staging folder (each file read once, its CRC-32 and sha256 computed on
   helper threads; a checkpoint keeps the sha256 recorded when it was saved),
   then fsynced and renamed into place; the staging folder is removed.

:func:`export_session` does both for a session that no process of this one
owns (the ``onthefly export`` command). Import lives in
:mod:`onthefly.store.bundle.import_`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onthefly._version import __version__
from onthefly.errors import ConfigError, CorruptFileError, MissingFileError, StoreError
from onthefly.store.bundle.checks import FORMAT, FORMAT_VERSION, kind_of, name_problem
from onthefly.store.bundle.pipeline import write_zip
from onthefly.store.bundle.staging import link_or_copy, new_scratch, remove_scratch
from onthefly.store.catalog import migrate
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.durable import fsync_folder
from onthefly.store.layout import CATALOG, MANIFEST, rank_catalogs
from onthefly.store.records import CheckpointInfo, RunInfo, SessionRecord

if TYPE_CHECKING:
    from onthefly.store.lifecycle import SessionFiles, StoreRoot

__all__ = [
    "StagedFile",
    "Snapshot",
    "snapshot_session",
    "stage_session",
    "write_bundle",
    "export_session",
    "build_manifest",
]

# On the staged copy of the catalog only, never on a live one.
JOURNAL_DELETE = "PRAGMA journal_mode=DELETE"
PRUNE_RETIRED_SHARDS = "DELETE FROM shards WHERE state != 'active'"


@dataclass(frozen=True)
class StagedFile:
    """One file of a snapshot: its path in the session and bundle, and what it is."""

    path: str  # relative, POSIX separators
    kind: str  # catalog | samples | steps | checkpoints
    bytes: int
    run: str | None = None
    checkpoint: CheckpointInfo | None = None
    rank: int | None = None  # the rank folder (ranks/<r>/) of a multi-process session


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of a session in a staging folder, ready to be zipped.

    Attributes:
        dir: the staging folder; :func:`write_bundle` removes it.
        session: the session record.
        runs: every run, parents filled in.
        files: the catalog first, then shards and checkpoints, then each
            other rank's catalog and shards (``ranks/<r>/``).
        schema: the catalog's schema revision.
    """

    dir: Path
    session: SessionRecord
    runs: tuple[RunInfo, ...]
    files: tuple[StagedFile, ...]
    schema: str

    def discard(self) -> None:
        """Remove the staging folder without writing a bundle."""
        remove_scratch(self.dir)


# -- phase 1: the snapshot ------------------------------------------------------


def snapshot_session(session: SessionFiles, *, checkpoint: Callable[[], Any] | None = None) -> Snapshot:
    """Stage a live session owned by this process (run it on the training thread).

    Args:
        session: the live session.
        checkpoint: called first to save a checkpoint of the run being
            trained (with optimizer state); None when nothing is training.
            Other runs keep their latest checkpoint.

    Returns:
        The :class:`Snapshot`; pass it to :func:`write_bundle`.

    Raises:
        StoreError: the writer failed or the staging folder cannot be made.
        MissingFileError: a listed shard or checkpoint is not on disk.

    Example:
        >>> snap = snapshot_session(session_store)                  # doctest: +SKIP
        >>> write_bundle(snap, path="run.zip")["files"]             # doctest: +SKIP
        7
    """
    if checkpoint is not None:
        checkpoint()
    session.flush()
    return stage_session(session.dir, root=session.store.root)


def stage_session(session_dir: str | os.PathLike[str], *, root: str | os.PathLike[str]) -> Snapshot:
    """Stage a session folder: catalog backup plus links of its listed files.

    Works on a session another process is writing: the catalog is copied as
    of its last commit, and only files that copy lists are staged (rows
    written after it are left out).

    Args:
        session_dir: the session folder.
        root: the store root (the staging folder goes under it).

    Returns:
        The :class:`Snapshot`.

    Raises:
        MissingFileError: no catalog, or a listed file is missing.
        CorruptFileError: a checkpoint's size differs from the catalog's record.
        SchemaError: the catalog comes from a newer OnTheFly.
    """
    folder = Path(session_dir)
    source = folder / CATALOG
    if not source.is_file():
        raise MissingFileError(f"no {CATALOG} in {folder}: pass a session folder (`onthefly ls` lists them)")
    scratch = new_scratch(Path(root), "export")
    try:
        staged = scratch / CATALOG
        _backup_catalog(source, staged)
        with Catalog.open(staged, readonly=True) as catalog:
            session = catalog.session()
            runs = tuple(catalog.runs())
            shards = catalog.active_shards()
            checkpoints = catalog.checkpoints()
        if session is None:
            raise StoreError(f"catalog {source} records no session yet: there is nothing to export")
        files = [StagedFile(CATALOG, "catalog", staged.stat().st_size)]
        for shard in shards:
            _check_listed(shard.path, shard.kind, source)
            link_or_copy(folder / shard.path, scratch / shard.path)
            files.append(StagedFile(shard.path, shard.kind, (scratch / shard.path).stat().st_size, run=shard.run_id))
        for info in checkpoints:
            _check_listed(info.path, "checkpoints", source)
            link_or_copy(folder / info.path, scratch / info.path)
            size = (scratch / info.path).stat().st_size
            if size != info.bytes:
                raise CorruptFileError(
                    f"checkpoint {folder / info.path} holds {size} bytes, the catalog recorded {info.bytes}: "
                    "the file changed after it was saved; remove that checkpoint or export another session"
                )
            files.append(StagedFile(info.path, "checkpoints", size, run=info.run_id, checkpoint=info))
        files += _stage_ranks(folder, scratch)
    except BaseException:
        remove_scratch(scratch)
        raise
    return Snapshot(dir=scratch, session=session, runs=runs, files=tuple(files), schema=migrate.HEAD)


def _stage_ranks(folder: Path, scratch: Path) -> list[StagedFile]:
    """The catalog and active shards of each other rank of a multi-process session (``ranks/<r>/``)."""
    files = []
    for prefix, source in rank_catalogs(folder):
        rank = int(prefix.split("/")[1])
        staged = scratch / prefix / CATALOG
        staged.parent.mkdir(parents=True)
        _backup_catalog(source, staged)
        with Catalog.open(staged, readonly=True) as catalog:
            shards = catalog.active_shards()
        files.append(StagedFile(prefix + CATALOG, "catalog", staged.stat().st_size, rank=rank))
        for shard in shards:
            path = prefix + shard.path
            _check_listed(path, shard.kind, source)
            link_or_copy(folder / path, scratch / path)
            files.append(StagedFile(path, shard.kind, (scratch / path).stat().st_size, run=shard.run_id, rank=rank))
    return files


def _backup_catalog(source: Path, target: Path) -> None:
    """Copy the last committed state of ``source`` to ``target`` (one backup step), self-contained."""
    with migrate.translated_errors(source):
        src = sqlite3.connect(migrate.readonly_uri(source), uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                dst.execute(JOURNAL_DELETE).fetchall()
            finally:
                dst.close()
        finally:
            src.close()
    if migrate.current_revision(target) != migrate.HEAD:
        migrate.upgrade(target)  # the copy only; raises for a catalog of a newer OnTheFly
    dst = sqlite3.connect(target)
    try:
        with dst:
            dst.execute(PRUNE_RETIRED_SHARDS)
    finally:
        dst.close()


def _check_listed(path: str, kind: str, catalog: Path) -> None:
    problem = name_problem(path)
    if problem is None and kind_of(path) != kind:
        problem = f"is not under {kind}/"
    if problem:
        raise CorruptFileError(
            f"catalog {catalog} lists a {kind} file at {path!r}, which {problem}: "
            "the catalog was edited by hand; it cannot be exported as is"
        )


# -- phase 2: the zip -------------------------------------------------------------


def write_bundle(
    snapshot: Snapshot,
    *,
    path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write a snapshot as a bundle at ``path``, atomically, and remove its staging folder.

    Args:
        snapshot: from :func:`snapshot_session` or :func:`stage_session`.
        path: the ``.zip`` file to write (replaced if it exists); its folder
            must exist.
        progress: called with the number of bytes written after each piece.

    Returns:
        ``{path, bytes, session, runs, files}``: the absolute path, the
        bundle's size, the session id, and how many runs and files it holds.

    Raises:
        ConfigError: ``path`` does not end with ``.zip`` or its folder is missing.
        StoreError: the file could not be written (disk full, permissions),
            or a staged file changed size meanwhile.

    Example:
        >>> write_bundle(snapshot, path="mnist.zip")  # doctest: +SKIP
        {'path': '/work/mnist.zip', 'bytes': 48213, 'session': '2025...', 'runs': 1, 'files': 6}
    """
    try:
        target = _zip_target(path)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        try:
            _write_zip(snapshot, partial, progress)
            os.replace(partial, target)
            fsync_folder(target.parent)
        except OSError as exc:
            raise StoreError(
                f"writing bundle {target} failed: {exc.strerror or exc}; free disk space or check permissions"
            ) from exc
        finally:
            partial.unlink(missing_ok=True)
    finally:
        snapshot.discard()
    return {
        "path": str(target),
        "bytes": target.stat().st_size,
        "session": snapshot.session.id,
        "runs": len(snapshot.runs),
        "files": len(snapshot.files),
    }


def _zip_target(path: str | os.PathLike[str]) -> Path:
    target = Path(path).expanduser()
    if target.suffix.lower() != ".zip":
        raise ConfigError(f"bundle path {str(path)!r} does not end with .zip: pass e.g. {target.name}.zip")
    target = target.absolute()
    if not target.parent.is_dir():
        raise ConfigError(f"the folder of {target} does not exist: create it or pass another path")
    if target.is_dir():
        raise ConfigError(f"{target} is a folder: pass a file name ending with .zip")
    return target


def _write_zip(snapshot: Snapshot, partial: Path, progress: Callable[[int], None] | None) -> None:
    def manifest(digests: dict[str, str]) -> bytes:
        doc = build_manifest(snapshot, digests, created_at=time.time())
        return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")

    # A checkpoint's sha256 is the one recorded when it was saved: not hashed
    # again here; an import checks the bytes against it, so damage shows there.
    sources = [
        (snapshot.dir / f.path, f.path, f.checkpoint.sha256.lower() if f.checkpoint else None) for f in snapshot.files
    ]
    write_zip(sources, partial, manifest_name=MANIFEST, manifest=manifest, progress=progress)


def build_manifest(snapshot: Snapshot, digests: dict[str, str], *, created_at: float) -> dict[str, Any]:
    """The manifest of a bundle: format, package, session, runs with lineage, files.

    Args:
        snapshot: what the bundle holds.
        digests: path -> hex sha256 of every staged file.
        created_at: unix seconds of the export.

    Returns:
        A JSON-able dict (see docs/bundle-format.md).

    Example:
        >>> build_manifest(snap, digests, created_at=0.0)["format_version"]  # doctest: +SKIP
        1
    """
    latest: dict[str, CheckpointInfo] = {}
    for f in snapshot.files:
        ck = f.checkpoint
        if ck is not None and (ck.run_id not in latest or (ck.step, ck.created_at) >= _order(latest[ck.run_id])):
            latest[ck.run_id] = ck
    session = snapshot.session
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package": "onthefly-ai",
        "package_version": __version__,
        "created_at": created_at,
        "created": datetime.fromtimestamp(created_at, timezone.utc).isoformat(timespec="seconds"),
        "schema_revision": snapshot.schema,
        "session": {
            "id": session.id,
            "project": session.project,
            "created_at": session.created_at,
            "origin": session.origin,
            "host": session.host,
            "package_version": session.package_version,
        },
        "runs": [_run_entry(run, latest.get(run.id)) for run in snapshot.runs],
        "files": [_file_entry(f, digests[f.path]) for f in snapshot.files],
    }


def _order(ck: CheckpointInfo) -> tuple[int, float]:
    return ck.step, ck.created_at


def _run_entry(run: RunInfo, latest: CheckpointInfo | None) -> dict[str, Any]:
    return {
        **run.summary(),
        "latest_checkpoint": None
        if latest is None
        else {"id": latest.id, "step": latest.step, "epoch": latest.epoch, "holds": list(latest.holds)},
    }


def _file_entry(f: StagedFile, digest: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": f.path, "kind": f.kind, "bytes": f.bytes, "sha256": digest}
    if f.run is not None:
        entry["run"] = f.run
    if f.checkpoint is not None:
        entry["checkpoint"] = f.checkpoint.id
    if f.rank is not None:
        entry["rank"] = f.rank
    return entry


# -- both phases for a session of the store ------------------------------------------


def export_session(
    session: str | os.PathLike[str] | None,
    *,
    store: StoreRoot,
    path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Export a session of ``store`` that this process does not own to a bundle.

    A session another process is training can be exported too: the bundle
    then holds what that process had committed (its last flush) and its
    latest checkpoints; ask that process (``trainer.session.export``) for a
    fresh checkpoint of the run in progress.

    Args:
        session: a session id or folder; None for the newest session.
        store: the store root.
        path: the ``.zip`` to write.
        progress: called with bytes written, as for :func:`write_bundle`.

    Returns:
        As :func:`write_bundle`.

    Raises:
        StoreError: the store has no session, or no such session.
        ConfigError: a bad ``path``.

    Example:
        >>> export_session(None, store=StoreRoot(), path="latest.zip")["runs"]  # doctest: +SKIP
        2
    """
    _zip_target(path)  # refuse a bad path before any work
    if session is None:
        newest = store.newest()
        if newest is None:
            raise StoreError(f"no session in the store root {store.root}: run a training script first")
        folder = Path(newest.dir)
    elif Path(session).is_dir():
        folder = Path(session)
    else:
        folder = store.session_dir(os.fspath(session))
    return write_bundle(stage_session(folder, root=store.root), path=path, progress=progress)
