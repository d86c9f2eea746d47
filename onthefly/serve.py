"""Hosting a finished or imported session over the dashboard link.

``onthefly serve`` connects to the dashboard the way a training process does
(docs/protocol.md) and answers its requests from the session's files, so the
dashboard can browse a session no process is training: ``status``, ``query``,
``report``, ``slice``, ``export_slice`` and ``export`` work as they do for a
live run; ``pause``, ``resume``, ``stop`` and ``checkpoint`` are refused (there
is no training to steer), and so is ``test``: a session stores weights, not
the model's code or its data loaders, so nothing here can rebuild the model
(a bundle could name code to import, but code named by a file someone sent is
not something to run). Testing is done by resuming the run in Python.

While it serves, the process holds the session's ``LOCK`` (so the clean-up of
a new training session leaves it alone and no trainer reopens it meanwhile)
and is the session's only writer: slices are the one thing it writes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from onthefly._version import __version__
from onthefly.errors import OnTheFlyError, StoreError
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.layout import CATALOG, LOCK
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read.operations import DataOperations

__all__ = ["ServedHandle", "open_served", "serve"]

SERVED_STATE = "finished"


class ServedHandle(DataOperations):
    """The session handle of a session no training process owns (read-only but for slices).

    Args:
        session_dir: the session folder.
        store: the store root it belongs to (exports stage under it).

    Raises:
        StoreError: the session is live (its training process answers the
            dashboard itself).

    Example:
        >>> handle = ServedHandle(store.session_dir(sid), store=store)  # doctest: +SKIP
        >>> handle.report(split="train")["quantiles"]                     # doctest: +SKIP
    """

    def __init__(self, session_dir: str | os.PathLike[str], *, store: StoreRoot) -> None:
        self.dir = Path(session_dir)
        self.store = store
        self.id = self.dir.name
        self._file_lock = FileLock(str(self.dir / LOCK), thread_local=False)
        try:
            self._file_lock.acquire(timeout=0)
        except Timeout:
            raise StoreError(
                f"session {self.id} is live (a process holds {self.dir / LOCK}): the process training it "
                "answers the dashboard itself; serve it once that process has ended"
            ) from None
        try:
            with Catalog.open(self.dir / CATALOG, readonly=True) as catalog:
                info = catalog.session()
        except BaseException:
            self._file_lock.release()
            raise
        self.project = info.project if info is not None else "?"
        self.origin = info.origin if info is not None else "new"
        self._lock = threading.Lock()  # one DuckDB connection, used by one link worker at a time
        self._data_lock = self._lock
        self._con: Any = None
        self._catalog: Catalog | None = None
        self._closed = False

    # -- state ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``{state: "finished", step, epoch, session, run, project, pid, served, origin, checkpoint}``.

        ``run``, ``step`` and ``epoch`` are those of the newest run's latest
        checkpoint (the newest run itself, at 0, when it has none).
        """
        with Catalog.open(self.dir / CATALOG, readonly=True) as catalog:
            runs = catalog.runs()
            latest = None
            for run in reversed(runs):
                latest = catalog.latest_checkpoint(run.id)
                if latest is not None:
                    break
        run_id = latest.run_id if latest is not None else (runs[-1].id if runs else None)
        return {
            "state": SERVED_STATE,
            "step": latest.step if latest else 0,
            "epoch": latest.epoch if latest else 0,
            "session": self.id,
            "run": run_id,
            "project": self.project,
            "pid": os.getpid(),
            "served": True,
            "origin": self.origin,
            "checkpoint": latest.id if latest else None,
        }

    def snapshot(self) -> dict[str, Any]:
        """What a connecting dashboard gets first: the state and every run."""
        with Catalog.open(self.dir / CATALOG, readonly=True) as catalog:
            runs = [r.summary() for r in catalog.runs()]
        return {"state": self.status(), "runs": runs}

    # -- refused: there is no training to steer ------------------------------------
    def pause(self) -> dict[str, Any]:
        """Refused: a served session is not training."""
        raise self._not_training("pause")

    def resume(self, *, epochs: int | None = None) -> dict[str, Any]:
        """Refused: train further by resuming the run in Python."""
        raise self._not_training("resume")

    def stop(self) -> dict[str, Any]:
        """Refused: a served session is not training (stop `onthefly serve` with Ctrl-C)."""
        raise self._not_training("stop")

    def checkpoint(self) -> dict[str, Any]:
        """Refused: there is no model in memory to save."""
        raise self._not_training("checkpoint")

    def test(self, *, split: str = "test") -> dict[str, Any]:
        """Refused: a session holds weights, not the model's code or data loaders."""
        run = self.status()["run"] or "<run>"
        raise OnTheFlyError(
            f"session {self.id} is served from its files, which hold the weights but not the model's code or "
            f"its {split} loader, so it cannot be tested here: resume it in Python with "
            f"Trainer(...).fit(model, ..., resume_from='{self.id}/{run}') and call trainer.session.test()"
        )

    def _not_training(self, what: str) -> OnTheFlyError:
        return OnTheFlyError(
            f"session {self.id} is served read-only by `onthefly serve` and is not training, so {what} does "
            f"nothing here: to train further, resume it in Python with resume_from='{self.id}/<run>'"
        )

    # -- data: query, report, slice and export_slice come from DataOperations --------------
    def export(self, *, path: str) -> dict[str, Any]:
        """Write the session to a ``.zip`` bundle at ``path`` (``{path, bytes, session, runs, files}``)."""
        from onthefly.store.bundle.export import export_session

        return export_session(self.dir, store=self.store, path=path)

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections and release the session's lock; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._con is not None:
                self._con.close()
            if self._catalog is not None:
                self._catalog.close()
        self._file_lock.release()

    def __enter__(self) -> ServedHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> Any:
        from onthefly.store.read.query import connect, refresh

        if self._closed:
            raise StoreError(f"served session {self.id} is closed: serve it again")
        if self._con is None:
            self._con = connect(self.dir)
        else:
            refresh(self._con, self.dir)
        return self._con

    def _writable_catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.open(self.dir / CATALOG)
        return self._catalog


def open_served(target: str | os.PathLike[str] | None, *, store: StoreRoot) -> ServedHandle:
    """The handle for ``onthefly serve [SESSION|FILE.zip]``.

    Args:
        target: a session id or folder, a ``.zip`` bundle (imported first,
            pinned), or None for the newest session of the store.
        store: the store root.

    Returns:
        An open :class:`ServedHandle`; close it when done.

    Raises:
        StoreError: no session, or the session is live.
        BundleError: the bundle cannot be imported.

    Example:
        >>> with open_served("mnist.zip", store=StoreRoot()) as handle:  # doctest: +SKIP
        ...     handle.status()["origin"]
        'imported'
    """
    if target is None:
        newest = store.newest()
        if newest is None:
            raise StoreError(f"no session in the store root {store.root}: pass a bundle (FILE.zip) or train first")
        folder = Path(newest.dir)
    elif Path(target).suffix.lower() == ".zip":
        from onthefly.store.bundle.import_ import import_bundle

        folder = Path(import_bundle(target, store=store).dir)
    elif Path(target).is_dir():
        folder = Path(target)
    else:
        folder = store.session_dir(os.fspath(target))
    return ServedHandle(folder, store=store)


def serve(
    target: str | os.PathLike[str] | None,
    *,
    store: StoreRoot,
    port: int | None = None,
    until: threading.Event | None = None,
    printer: Callable[[str], None] = print,
) -> None:
    """Host a session over the dashboard link until ``until`` is set (or Ctrl-C).

    Args:
        target: as for :func:`open_served`.
        store: the store root.
        port: the dashboard's port (default ``$ONTHEFLY_DASHBOARD_PORT`` or 47621).
        until: an event that ends serving; None serves until interrupted.
        printer: where the one-line messages go.

    Raises:
        StoreError, BundleError, ConfigError: before serving starts.

    Example:
        >>> serve("mnist.zip", store=StoreRoot())  # doctest: +SKIP
        [onthefly] serving session 20250101-120000-a1b2c3 (mnist) read-only ...
    """
    from onthefly.link import DashboardLink

    handle = open_served(target, store=store)
    try:
        status = handle.status()
        client = {
            "version": __version__,
            "pid": os.getpid(),
            "session": handle.id,
            "project": handle.project,
            "run": status["run"],
            "served": True,
        }
        with DashboardLink(handle, port=port, client_info=client, printer=printer) as link:
            printer(
                f"[onthefly] serving session {handle.id} ({handle.project}) read-only to the dashboard on port "
                f"{link.port}; Ctrl-C stops"
            )
            (until or threading.Event()).wait()
    finally:
        handle.close()
