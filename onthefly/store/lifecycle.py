"""Sessions of a store root: create, lock, list, pin and clean up.

Storage is ephemeral: when a new session begins, the folders of earlier
sessions are removed unless they are live (their process holds ``LOCK``) or
pinned (a ``PINNED`` file, e.g. for imported or exported sessions). The
clean-up only ever deletes folders directly under ``<root>/sessions`` whose
name is a session id and that hold a ``SESSION`` marker, and it never follows
a symbolic link.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from onthefly.errors import ConfigError, MissingFileError, OnTheFlyError, StoreError
from onthefly.paths import resolve_home
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.layout import CATALOG, LOCK, MARKER, PINNED, sessions_dir
from onthefly.store.records import SessionListing

if TYPE_CHECKING:
    from onthefly.store.checkpoints.checkpoints import CheckpointStore
    from onthefly.store.shards.writer import ShardWriter

__all__ = ["SESSION_ID_RE", "new_session_id", "removable", "StoreRoot", "SessionFiles"]

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
"""``YYYYmmdd-HHMMSS-xxxxxx``: UTC creation time and 6 random hex digits."""


def new_session_id() -> str:
    """A fresh session id; ids sort by creation time (to the second).

    Example:
        >>> SESSION_ID_RE.match(new_session_id()) is not None
        True
    """
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def removable(name: str, *, has_marker: bool, live: bool, pinned: bool, keep: Collection[str]) -> tuple[bool, str]:
    """Whether the clean-up may remove the entry ``sessions/<name>``, and why.

    Args:
        name: the folder's name.
        has_marker: it holds a ``SESSION`` marker file.
        live: a process holds its ``LOCK``.
        pinned: it holds a ``PINNED`` file.
        keep: ids to keep regardless.

    Returns:
        ``(remove, reason)``.

    Example:
        >>> removable("20250101-120000-a1b2c3", has_marker=True, live=False, pinned=False, keep=())
        (True, 'an earlier session')
    """
    if not SESSION_ID_RE.match(name):
        return False, "not a session id"
    if not has_marker:
        return False, f"no {MARKER} marker"
    if name in keep:
        return False, "kept"
    if live:
        return False, "live"
    if pinned:
        return False, "pinned"
    return True, "an earlier session"


def _new_lock(path: Path) -> FileLock:
    # A new FileLock object per call: probing with a fresh descriptor conflicts
    # with a lock this same process holds, so liveness is right in-process too.
    return FileLock(str(path), thread_local=False)


def _live_error(session_id: str, folder: Path) -> StoreError:
    return StoreError(
        f"session {session_id} is live (a process holds {folder / LOCK}): stop its process first, then remove it"
    )


def _write_json_atomically(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_marker(folder: Path) -> dict:
    try:
        with open(folder / MARKER, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _id_time(session_id: str) -> float | None:
    try:
        stamp = datetime.strptime(session_id[:15], "%Y%m%d-%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


class StoreRoot:
    """A store root: ``<root>/sessions/<session_id>/`` folders.

    Args:
        root: the store root; default ``$ONTHEFLY_HOME`` or ``./.onthefly``.

    Example:
        >>> store = StoreRoot("/tmp/otf")
        >>> with store.open_session("mnist") as session:
        ...     run = session.catalog.add_run(name="baseline")
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(root)
        self.sessions_dir = sessions_dir(self.root)

    def __repr__(self) -> str:
        return f"StoreRoot({str(self.root)!r})"

    # --- opening a session ---------------------------------------------------

    def open_session(
        self,
        project: str,
        *,
        session_id: str | None = None,
        cleanup: bool = True,
        meta: dict | None = None,
    ) -> SessionFiles:
        """Create (or reopen) a session folder, lock it and open its catalog.

        Args:
            project: the project name recorded in the session.
            session_id: reopen or create this id; default a new one.
            cleanup: then remove earlier sessions that are neither live nor pinned.
            meta: free JSON metadata for the session record.

        Returns:
            The live session; close it to release its lock.

        Raises:
            StoreError: the session is open in another process.
            ConfigError: ``session_id`` is not a valid id.

        Example:
            >>> session = StoreRoot("/tmp/otf").open_session("mnist")
            >>> session.close()
        """
        if not project or not isinstance(project, str):
            raise ConfigError(f"project must be a non-empty string, got {project!r}: pass a name")
        folder = self._new_or_existing(session_id) if session_id else self.sessions_dir / new_session_id()
        folder.mkdir(parents=True, exist_ok=True)
        lock = _new_lock(folder / LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise StoreError(
                f"session {folder.name} is open in another process (its {folder / LOCK} is held): "
                "stop that process or open a new session"
            ) from None
        catalog: Catalog | None = None
        try:
            # The marker is written only once the lock is held: a folder with a
            # marker and a free lock is never one that is still being created.
            if not (folder / MARKER).exists():
                _write_json_atomically(
                    folder / MARKER, {"id": folder.name, "project": project, "created_at": time.time()}
                )
            catalog = Catalog.open(folder / CATALOG)
            catalog.init_session(folder.name, project, meta=meta)
        except BaseException:
            if catalog is not None:
                catalog.close()
            lock.release()
            raise
        session = SessionFiles(store=self, id=folder.name, dir=folder, catalog=catalog, lock=lock)
        if cleanup:
            self.cleanup(keep={folder.name})
        return session

    def _new_or_existing(self, session_id: str) -> Path:
        if SESSION_ID_RE.match(session_id):
            folder = self.sessions_dir / session_id
            if folder.exists() and not (folder / MARKER).is_file():
                raise StoreError(
                    f"{folder} exists but is not a session (no {MARKER} marker): "
                    "move it away or choose another session id"
                )
            return folder
        return self.session_dir(session_id)

    # --- looking at sessions -------------------------------------------------

    def session_dir(self, session_id: str) -> Path:
        """The folder of an existing session.

        Args:
            session_id: a session id, or the name of a marker-bearing folder.

        Returns:
            ``<root>/sessions/<session_id>``.

        Raises:
            ConfigError: the id could name something outside the sessions folder.
            MissingFileError: no such session; the message lists the existing ones.

        Example:
            >>> StoreRoot("/tmp/otf").session_dir("20250101-120000-a1b2c3")
        """
        if (
            not isinstance(session_id, str)
            or not session_id
            or session_id in {".", ".."}
            or "/" in session_id
            or "\\" in session_id
            or "\x00" in session_id
        ):
            raise ConfigError(f"{session_id!r} is not a session id: pass a name listed by `onthefly ls`")
        folder = self.sessions_dir / session_id
        if not (folder / MARKER).is_file():
            existing = [entry.name for entry in self._session_folders()]
            shown = ", ".join(existing[:20]) if existing else "none"
            raise MissingFileError(
                f"no session {session_id!r} in {self.sessions_dir}; existing sessions: {shown}: pass one of these ids"
            )
        return folder

    def _session_folders(self) -> list[Path]:
        """Entries of ``sessions/`` with a SESSION marker, newest id first."""
        try:
            entries = list(os.scandir(self.sessions_dir))
        except FileNotFoundError:
            return []
        folders = [Path(e.path) for e in entries if e.name not in {".", ".."} and (Path(e.path) / MARKER).is_file()]
        return sorted(folders, key=lambda p: p.name, reverse=True)

    def list_sessions(self) -> list[SessionListing]:
        """Every session of the root, newest first, with its runs.

        A catalog that cannot be read gives an entry with ``error`` set instead
        of an exception, so one bad session never hides the others.

        Example:
            >>> [entry.id for entry in StoreRoot("/tmp/otf").list_sessions()]
        """
        entries = []
        for folder in self._session_folders():
            try:
                entries.append(self._entry(folder))
            except (MissingFileError, FileNotFoundError):
                continue  # removed while listing
        return sorted(entries, key=lambda e: (e.created_at, e.id), reverse=True)

    def _entry(self, folder: Path) -> SessionListing:
        marker = _read_marker(folder)
        created = marker.get("created_at")
        if not isinstance(created, (int, float)):
            created = _id_time(folder.name) or folder.stat().st_mtime
        runs: tuple = ()
        error = None
        project = marker.get("project") if isinstance(marker.get("project"), str) else None
        catalog_path = folder / CATALOG
        if not catalog_path.is_file():
            error = f"no {CATALOG} in {folder}"
        else:
            try:
                with Catalog.open(catalog_path, readonly=True) as catalog:
                    runs = tuple(catalog.runs())
                    info = catalog.session()
                    project = info.project if info is not None else project
            except (OnTheFlyError, OSError) as exc:
                error = str(exc)
        return SessionListing(
            id=folder.name,
            dir=folder,
            created_at=float(created),
            live=self.is_live(folder.name),
            pinned=self.is_pinned(folder.name),
            project=project,
            runs=runs,
            error=error,
        )

    def newest(self) -> SessionListing | None:
        """The newest session, or None when there is none."""
        sessions = self.list_sessions()
        return sessions[0] if sessions else None

    def is_live(self, session_id: str) -> bool:
        """Whether a process (this one included) holds the session's ``LOCK``."""
        lock_path = self.session_dir(session_id) / LOCK
        if not lock_path.exists():
            return False
        probe = _new_lock(lock_path)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:
            return False  # cannot probe (no write access); remove() fails alike and deletes nothing
        probe.release()
        return False

    # --- pinning and removal -------------------------------------------------

    def pin(self, session_id: str) -> None:
        """Keep the session through clean-ups until :meth:`unpin`."""
        _write_json_atomically(self.session_dir(session_id) / PINNED, {"pinned_at": time.time()})

    def unpin(self, session_id: str) -> None:
        """Let the next clean-up remove the session again (when it is not live)."""
        (self.session_dir(session_id) / PINNED).unlink(missing_ok=True)

    def is_pinned(self, session_id: str) -> bool:
        """Whether the session holds a ``PINNED`` file."""
        return (self.session_dir(session_id) / PINNED).is_file()

    def remove(self, session_id: str) -> None:
        """Delete a session folder (a symlinked one: only the link).

        Raises:
            StoreError: the session is live; stop its process first.
        """
        folder = self.session_dir(session_id)
        if folder.parent != self.sessions_dir:
            raise StoreError(f"{folder} is not directly under {self.sessions_dir}: refusing to delete it")
        if folder.is_symlink():
            # Only the link goes; nothing is created or deleted in its target.
            if self.is_live(session_id):
                raise _live_error(session_id, folder)
            folder.unlink()
            return
        lock = _new_lock(folder / LOCK)
        try:
            # Held while deleting, so nobody reopens the session half-deleted.
            lock.acquire(timeout=0)
        except Timeout:
            raise _live_error(session_id, folder) from None
        try:
            shutil.rmtree(folder)
        finally:
            try:
                lock.release()
            except OSError:
                pass

    def cleanup(self, *, keep: Collection[str] = ()) -> list[str]:
        """Remove sessions that are neither live, pinned nor in ``keep``.

        Folders whose name is not a session id, folders without a ``SESSION``
        marker, plain files and anything outside ``<root>/sessions`` are never
        touched. A session that cannot be removed is logged and skipped.

        Args:
            keep: ids to keep regardless.

        Returns:
            The ids removed.

        Example:
            >>> StoreRoot("/tmp/otf").cleanup(keep={"20250101-120000-a1b2c3"})
        """
        removed: list[str] = []
        for folder in self._session_folders():
            name = folder.name
            try:
                live, pinned = self.is_live(name), self.is_pinned(name)
            except (OnTheFlyError, OSError):
                continue  # removed meanwhile by another process, or unreadable: leave it
            ok, _reason = removable(name, has_marker=True, live=live, pinned=pinned, keep=keep)
            if not ok:
                continue
            try:
                self.remove(name)
            except (OnTheFlyError, OSError) as exc:
                log.warning("kept session %s: %s", name, exc)
                continue
            removed.append(name)
        return removed


class SessionFiles:
    """A live session owned by this process: its folder, lock and writable catalog.

    Get one from :meth:`StoreRoot.open_session`; close it (or use it as a context
    manager) to stop the shard writer, close the catalog and release the lock.
    """

    def __init__(self, *, store: StoreRoot, id: str, dir: Path, catalog: Catalog, lock: FileLock) -> None:
        self.store = store
        self.id = id
        self.dir = dir
        self.catalog = catalog
        self._lock = lock
        self._writer: ShardWriter | None = None
        self._checkpoints: CheckpointStore | None = None
        self._closed = False
        self._guard = threading.Lock()  # the writer and checkpoints are made once

    def __repr__(self) -> str:
        return f"SessionFiles({self.id!r}, {str(self.dir)!r}{', closed' if self._closed else ''})"

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"session {self.id} is closed: open it again with StoreRoot.open_session")

    @property
    def writer(self) -> ShardWriter:
        """The session's shard writer, started on first use."""
        with self._guard:
            self._require_open()
            if self._writer is None:
                from onthefly.store.shards.writer import ShardWriter

                self._writer = ShardWriter(self.dir, self.catalog)
            return self._writer

    def flush(self) -> None:
        """Wait until everything handed to the background (shard rows, checkpoint files) is on disk and listed."""
        with self._guard:
            self._require_open()
            checkpoints = self._checkpoints
        if checkpoints is not None:
            checkpoints.wait()
        self.writer.flush()

    @property
    def checkpoints(self) -> CheckpointStore:
        """Save and load checkpoints of this session."""
        with self._guard:
            self._require_open()
            if self._checkpoints is None:
                from onthefly.store.checkpoints.checkpoints import CheckpointStore

                self._checkpoints = CheckpointStore(self.dir, self.catalog)
            return self._checkpoints

    def close(self) -> None:
        """Flush and stop the writer, close the catalog, release the lock; idempotent."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
        try:
            if self._checkpoints is not None:
                self._checkpoints.close()  # listed before the catalog closes
            if self._writer is not None:
                self._writer.close()
        finally:
            try:
                self.catalog.close()
            finally:
                self._lock.release()

    def __enter__(self) -> SessionFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
