"""Where a multi-process session keeps the shards of ranks other than 0.

Apart from ``query.py`` so that training processes can find rank folders
without importing DuckDB.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RANKS_DIR", "rank_catalogs"]

CATALOG_FILE = "catalog.sqlite"
RANKS_DIR = "ranks"
"""Folder of a multi-process session holding one folder per rank > 0 (its catalog and shards)."""


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
    found = [p for p in base.iterdir() if p.name.isdigit() and (p / CATALOG_FILE).is_file()]
    return [(f"{RANKS_DIR}/{p.name}/", p / CATALOG_FILE) for p in sorted(found, key=lambda p: int(p.name))]
