"""The data operations every session handle offers: query, report, slice, export_slice.

``trainer.session`` (a training process) and ``onthefly serve`` (a finished or
imported session) answer these the same way, so they share this mixin; the
dashboard reaches both through the same RPC methods.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["DataOperations"]


class DataOperations:
    """Mixin. Subclasses provide ``_data_lock`` (a lock serialising the one
    DuckDB connection), ``_connection()`` (that connection, views refreshed)
    and ``_writable_catalog()`` (the session's catalog, for slices)."""

    _data_lock: threading.Lock

    def _connection(self) -> Any:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def _writable_catalog(self) -> Any:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def query(
        self, sql: str, params: list | dict | None = None, *, limit: int = 10_000, format: str = "rows"
    ) -> dict[str, Any]:
        """Read-only SQL over this session's views (samples, steps, runs, epochs, ...).

        Returns:
            ``{columns, types, rows, truncated}``, or ``{arrow, truncated}`` with ``format="arrow"``.
        """
        from .query import run_query

        with self._data_lock:
            return run_query(self._connection(), sql, params, limit=limit, format=format)

    def report(
        self, *, run: str | None = None, split: str = "train", epoch: int | None = None, k: int = 20
    ) -> dict[str, Any]:
        """The per-sample loss distribution of one pass: histogram, quantiles, hardest samples."""
        from .reports import report

        with self._data_lock:
            return report(self._connection(), run=run, split=split, epoch=epoch, k=k)

    def slice(
        self,
        *,
        name: str,
        run: str | None = None,
        split: str = "train",
        epoch: int | None = None,
        loss_min: float | None = None,
        loss_max: float | None = None,
        q_min: float | None = None,
        q_max: float | None = None,
        ids: list[int] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Save the samples in a loss range, quantile range or id set as a named slice."""
        from .reports import select_slice

        with self._data_lock:
            return select_slice(
                self._connection(),
                self._writable_catalog(),
                name=name,
                run=run,
                split=split,
                epoch=epoch,
                loss_min=loss_min,
                loss_max=loss_max,
                q_min=q_min,
                q_max=q_max,
                ids=ids,
                replace=replace,
            )

    def export_slice(self, *, name: str, path: str, format: str = "csv") -> dict[str, Any]:
        """Write a slice's rows to CSV, Parquet or JSON at ``path`` (inside the working directory)."""
        from .reports import export_slice

        with self._data_lock:
            return export_slice(
                self._connection(),
                self._writable_catalog(),
                name=name,
                path=path,
                format=format,
                root=Path(os.getcwd()),
            )
