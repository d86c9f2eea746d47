"""Importing a session bundle: the file is treated as hostile until checked.

Before a byte is written: every entry name must be a relative path of the
bundle layout (no ``..``, absolute path, drive letter or backslash), every
entry a regular file (no link, folder or device), no name twice, sizes and
compression ratios under :class:`~onthefly.store.bundle.checks.Limits`, and
the manifest of a format this version reads, listing exactly the files the zip
holds. Then the files are extracted into a scratch folder under the store
root, each one's size and sha256 checked against the manifest as it streams,
and checkpoints, shards and the catalog are checked from the inside
(:mod:`onthefly.store.bundle.verify`). Only then is the folder renamed into
``sessions/<id>``: a failed import leaves the store as it was.

Nothing is unpickled: the catalog is SQLite, shards Parquet, checkpoints
safetensors, the manifest JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onthefly.errors import BundleError, ConfigError, OnTheFlyError, StoreError
from onthefly.store.bundle.checks import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    Limits,
    duplicate_runs,
    format_verdict,
    kind_of,
    manifest_problems,
    mode_problem,
    name_problem,
    size_problems,
    split_rank,
)
from onthefly.store.bundle.staging import new_scratch, remove_scratch
from onthefly.store.bundle.verify import (
    Member,
    catalog_paths,
    check_catalog,
    check_files,
    refusal,
)
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.durable import fsync_folder
from onthefly.store.layout import CATALOG, MANIFEST, MARKER, PINNED

if TYPE_CHECKING:
    from onthefly.store.lifecycle import StoreRoot
    from onthefly.store.records import SessionListing

__all__ = ["import_bundle", "read_manifest"]

READ_CHUNK = 8 << 20

# On the scratch copy of an imported catalog only.
DISTRUST_SCHEMA = "PRAGMA trusted_schema=OFF"
SET_ORIGIN_IMPORTED = "UPDATE sessions SET origin = 'imported' WHERE id = ?"
DROP_RETIRED_SHARDS = "DELETE FROM shards WHERE state != 'active'"
DROP_RUN_SHARDS = "DELETE FROM shards WHERE run_id = ?"
DROP_RUN_CHECKPOINTS = "DELETE FROM checkpoints WHERE run_id = ?"

_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ENCRYPTED = 0x1


def read_manifest(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The manifest of a bundle, after the checks that need no extraction.

    Args:
        path: the ``.zip`` file.
        limits: size caps (see :class:`~onthefly.store.bundle.checks.Limits`).

    Returns:
        The parsed ``manifest.json`` (format, session, runs, files).

    Raises:
        ConfigError: no file at ``path``.
        BundleError: not a zip, a hostile entry, or a manifest this version
            cannot read (a newer format is named with the upgrade command).

    Example:
        >>> read_manifest("mnist.zip")["session"]["project"]  # doctest: +SKIP
        'mnist'
    """
    bundle = _bundle_path(path)
    with _open_zip(bundle) as zf:
        manifest, _ = _checked(zf, bundle, limits)
    return manifest


def import_bundle(
    path: str | os.PathLike[str],
    *,
    store: StoreRoot,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> SessionListing:
    """Import a bundle into ``store`` as a pinned session, or find it already there.

    The session keeps its id and its runs keep theirs; the session's origin
    becomes ``"imported"``. Importing the same bundle again returns the
    session already there. A run whose shards and checkpoints another session
    of the store already holds keeps its data there; the new session gets its
    record only (docs/bundle-format.md, "Importing twice").

    Args:
        path: the ``.zip`` file.
        store: the store root to import into.
        limits: size caps against zip bombs.
        progress: called with the number of bytes extracted after each piece.

    Returns:
        The imported (or already present) session.

    Raises:
        ConfigError: no file at ``path``.
        BundleError: the bundle is malformed, hostile, of a newer format, or a
            different export of a session the store already holds; the store
            is left as it was.

    Example:
        >>> entry = import_bundle("mnist.zip", store=StoreRoot())  # doctest: +SKIP
        >>> entry.pinned, [run.name for run in entry.runs]     # doctest: +SKIP
        (True, ['baseline'])
    """
    bundle = _bundle_path(path)
    with _open_zip(bundle) as zf:
        manifest, members = _checked(zf, bundle, limits)
        session_id = _session_id(manifest, bundle)
        if _already_there(store, manifest, members, bundle):
            if not store.is_pinned(session_id):
                store.pin(session_id)
            return _entry(store, session_id)
        _check_free_space(store.root, sum(m.bytes for m in members))
        made_root = not store.root.exists()
        scratch = new_scratch(store.root, "import")
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onthefly-import-sha256") as hasher:
                for member in members:
                    _extract(zf, member, scratch, bundle, progress, hasher)
            check_files(scratch, members, bundle)
            check_catalog(scratch, manifest, members, bundle)
            dropped = duplicate_runs(_runs_with_data(members), _owned_runs(store, session_id))
            _finish_catalog(scratch, session_id, dropped, members)
            _write_markers(scratch, manifest, bundle)
            _move_into_place(scratch, store, session_id, bundle)
        except BaseException:
            remove_scratch(scratch)
            if made_root:
                _rmdir_quietly(store.root)
            raise
        remove_scratch(scratch)  # gone by the rename; this drops an empty .staging
    return _entry(store, session_id)


# -- checks before extraction ----------------------------------------------------


def _bundle_path(path: str | os.PathLike[str]) -> Path:
    bundle = Path(path).expanduser()
    if not bundle.is_file():
        raise ConfigError(
            f"bundle {str(path)!r} does not exist: check the path (`onthefly import FILE.zip` and "
            "onthefly.sql('FILE.zip') take a file written by `onthefly export`)"
        )
    return bundle


@contextmanager
def _open_zip(bundle: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(
            f"{bundle} is not a readable zip file ({exc}): pass a bundle written by `onthefly export`"
        ) from exc
    try:
        yield zf
    finally:
        zf.close()


def _checked(zf: zipfile.ZipFile, bundle: Path, limits: Limits) -> tuple[dict[str, Any], list[Member]]:
    """Entry checks, then the manifest, then the two compared: ``(manifest, members)``."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise refusal(bundle, [f"it holds {len(infos)} entries, over the cap of {limits.max_entries}"])
    problems = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        problem = name_problem(name) or mode_problem(info.external_attr)
        if problem:
            problems.append(f"entry {name[:200]!r} {problem}")
        elif name in seen:
            problems.append(f"entry {name!r} appears twice")
        elif info.flag_bits & _ENCRYPTED:
            problems.append(f"entry {name!r} is encrypted")
        elif info.compress_type not in _ZIP_METHODS:
            method = info.compress_type
            problems.append(f"entry {name!r} uses compression method {method} (only stored and deflated are read)")
        seen.add(name)
    sizes = [(i.filename, i.file_size, i.compress_size, i.compress_type != zipfile.ZIP_STORED) for i in infos]
    problems += size_problems(sizes, limits=limits)
    if problems:
        raise refusal(bundle, problems)
    manifest = _manifest(zf, bundle, limits)
    return manifest, _members(infos, manifest, bundle)


def _manifest(zf: zipfile.ZipFile, bundle: Path, limits: Limits) -> dict[str, Any]:
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise BundleError(
            f"{bundle} holds no {MANIFEST}: it is not an OnTheFly session bundle; pass a file written by "
            "`onthefly export`"
        ) from None
    if info.file_size > limits.max_manifest_bytes:
        cap = limits.max_manifest_bytes
        raise refusal(bundle, [f"{MANIFEST} declares {info.file_size} bytes, over the cap of {cap}"])
    try:
        with zf.open(info) as f:
            data = f.read(limits.max_manifest_bytes + 1)
        manifest = json.loads(data.decode("utf-8"))
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise refusal(bundle, [f"{MANIFEST} cannot be read as JSON ({exc})"]) from exc
    if not isinstance(manifest, dict):
        raise refusal(bundle, [f"{MANIFEST} is not a JSON object"])
    verdict = format_verdict(manifest)
    if verdict == "newer":
        raise BundleError(
            f"bundle {bundle} has format version {manifest['format_version']}, newer than this OnTheFly reads "
            f"(up to {FORMAT_VERSION}): upgrade with `pip install -U onthefly-ai`, then import it again"
        )
    if verdict == "foreign":
        raise BundleError(
            f"{bundle} is not an OnTheFly session bundle ({MANIFEST} has format {manifest.get('format')!r}, "
            f"version {manifest.get('format_version')!r}): pass a file written by `onthefly export`"
        )
    problems = manifest_problems(manifest)
    if problems:
        raise refusal(bundle, [f"{MANIFEST}: {p}" for p in problems])
    return manifest


def _members(infos: list[zipfile.ZipInfo], manifest: dict[str, Any], bundle: Path) -> list[Member]:
    listed = {entry["path"]: entry for entry in manifest["files"]}
    by_name = {info.filename: info for info in infos if info.filename != MANIFEST}
    problems = [f"it holds {name!r}, which its manifest does not list" for name in sorted(set(by_name) - set(listed))]
    problems += [f"it lacks {name!r}, which its manifest lists" for name in sorted(set(listed) - set(by_name))]
    members = []
    for name, entry in listed.items():
        info = by_name.get(name)
        if info is None:
            continue
        if info.file_size != entry["bytes"]:
            problems.append(f"{name} holds {info.file_size} bytes, its manifest says {entry['bytes']}")
        members.append(
            Member(
                info=info,
                path=name,
                bytes=entry["bytes"],
                sha256=entry["sha256"],
                kind=kind_of(name),
                run=entry.get("run"),
                checkpoint=entry.get("checkpoint"),
                rank=split_rank(name)[0],
            )
        )
    if problems:
        raise refusal(bundle, problems)
    return members


def _session_id(manifest: dict[str, Any], bundle: Path) -> str:
    from onthefly.store.lifecycle import SESSION_ID_RE

    session_id = manifest["session"]["id"]
    if not SESSION_ID_RE.match(session_id):
        raise refusal(bundle, [f"its session id {session_id[:80]!r} is not of the form YYYYmmdd-HHMMSS-xxxxxx"])
    return session_id


def _already_there(store: StoreRoot, manifest: dict[str, Any], members: list[Member], bundle: Path) -> bool:
    """True when the store holds this session with everything the bundle brings."""
    session_id = manifest["session"]["id"]
    folder = store.sessions_dir / session_id
    if not os.path.lexists(folder):
        return False
    if not (folder / MARKER).is_file():
        raise BundleError(
            f"{folder} exists but is not a session (no {MARKER} marker): move it away, then import {bundle} again"
        )
    with Catalog.open(folder / CATALOG, readonly=True) as catalog:
        runs = {run.id for run in catalog.runs()}
        checkpoints = {info.id for info in catalog.checkpoints()}
    missing_runs = sorted({run["id"] for run in manifest["runs"]} - runs)
    missing_checkpoints = sorted({m.checkpoint for m in members if m.checkpoint} - checkpoints)
    if not missing_runs and not missing_checkpoints:
        return True
    raise BundleError(
        f"session {session_id} is already in {store.sessions_dir} without runs {missing_runs} and checkpoints "
        f"{missing_checkpoints} that {bundle} holds (a later export of it): keep one copy, e.g. remove the one "
        f"there with `onthefly rm {session_id}` and import again"
    )


def _check_free_space(root: Path, total: int) -> None:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if total > free:
        raise StoreError(
            f"importing needs {total} bytes under {root} but only {free} are free: free disk space or "
            "import into another store (--home)"
        )


# -- extraction and checks of the files --------------------------------------------


def _extract(
    zf: zipfile.ZipFile,
    member: Member,
    scratch: Path,
    bundle: Path,
    progress: Callable[[int], None] | None,
    hasher: ThreadPoolExecutor,
) -> None:
    """Stream one entry to the scratch folder, checking its size and sha256 as it goes.

    The sha256 is computed on ``hasher``'s thread while this one reads and
    writes the next piece (hashlib releases the GIL on large buffers).
    """
    target = scratch / member.path
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    pending: list[Future[None]] = []
    size = 0
    try:
        with zf.open(member.info) as source, open(target, "xb") as out:
            while chunk := source.read(READ_CHUNK):
                size += len(chunk)
                if size > member.bytes:
                    raise refusal(bundle, [f"{member.path} expands past the {member.bytes} bytes it declares"])
                pending.append(hasher.submit(digest.update, chunk))
                out.write(chunk)
                if len(pending) > 2:
                    pending.pop(0).result()
                if progress is not None:
                    progress(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise refusal(bundle, [f"{member.path} cannot be decompressed ({exc})"]) from exc
    finally:
        for future in pending:
            future.result()
    if size != member.bytes:
        raise refusal(bundle, [f"{member.path} holds {size} bytes, its manifest says {member.bytes}"])
    if digest.hexdigest() != member.sha256:
        raise refusal(
            bundle, [f"{member.path} does not match its sha256 (manifest {member.sha256}, found {digest.hexdigest()})"]
        )


def _runs_with_data(members: list[Member]) -> list[str]:
    return sorted({m.run for m in members if m.run is not None and m.kind != "catalog"})


def _owned_runs(store: StoreRoot, session_id: str) -> dict[str, str]:
    """run id -> the session of the store holding that run's shards or checkpoints."""
    owned: dict[str, str] = {}
    for entry in store.list_sessions():
        if entry.id == session_id or entry.error:
            continue
        try:
            with Catalog.open(entry.dir / CATALOG, readonly=True) as catalog:
                runs = {s.run_id for s in catalog.active_shards()} | {c.run_id for c in catalog.checkpoints()}
        except OnTheFlyError:
            continue
        for run in runs:
            owned.setdefault(run, entry.id)
    return owned


def _finish_catalog(scratch: Path, session_id: str, dropped: dict[str, str], members: list[Member]) -> None:
    """Mark the session imported in each catalog; leave out the data of runs another session keeps."""
    for member in members:
        if member.run in dropped and member.kind != "catalog":
            (scratch / member.path).unlink()
    for name in catalog_paths(members):
        con = sqlite3.connect(scratch / name)
        try:
            con.execute(DISTRUST_SCHEMA)
            with con:
                con.execute(SET_ORIGIN_IMPORTED, (session_id,))
                con.execute(DROP_RETIRED_SHARDS)
                for run in sorted(dropped):
                    con.execute(DROP_RUN_SHARDS, (run,))
                    con.execute(DROP_RUN_CHECKPOINTS, (run,))
        finally:
            con.close()


def _write_markers(scratch: Path, manifest: dict[str, Any], bundle: Path) -> None:
    session = manifest["session"]
    created = session.get("created_at")
    marker = {
        "id": session["id"],
        "project": session["project"],
        "created_at": created if isinstance(created, (int, float)) and math.isfinite(created) else time.time(),
        "imported_at": time.time(),
        "bundle": bundle.name,
    }
    (scratch / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    (scratch / PINNED).write_text(json.dumps({"pinned_at": time.time(), "reason": "imported"}), encoding="utf-8")


def _move_into_place(scratch: Path, store: StoreRoot, session_id: str, bundle: Path) -> None:
    sessions = store.sessions_dir
    made = not sessions.exists()
    sessions.mkdir(parents=True, exist_ok=True)
    target = sessions / session_id
    try:
        if os.path.lexists(target):
            raise BundleError(
                f"session {session_id} appeared in {sessions} while {bundle} was imported: import it again"
            )
        os.rename(scratch, target)
    except BaseException:
        if made:
            _rmdir_quietly(sessions)
        raise
    fsync_folder(sessions)


def _rmdir_quietly(folder: Path) -> None:
    """Remove a folder this import created, if it is empty (another process may use it meanwhile)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _entry(store: StoreRoot, session_id: str) -> SessionListing:
    for entry in store.list_sessions():
        if entry.id == session_id:
            return entry
    raise StoreError(f"session {session_id} vanished from {store.sessions_dir} right after the import: import it again")
