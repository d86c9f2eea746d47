"""Checks of a bundle's files once extracted: checkpoints, shards and the catalog.

An import extracts every file into a scratch folder (each one's size and
sha256 already checked as it streamed); these checks then look inside them
without trusting anything: a checkpoint must be a safetensors file written by
OnTheFly (its header is validated; no tensor is loaded and nothing is
unpickled), a shard a Parquet file with a readable footer, and the catalog an
SQLite database holding only OnTheFly's tables (no triggers or views), at a
schema this version reads (an older one is upgraded through Alembic, in the
scratch copy), listing exactly the files the bundle holds; so must each rank's
catalog of a multi-process session, for the files of its ``ranks/<r>/``.
"""

from __future__ import annotations

import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onthefly.errors import BundleError, OnTheFlyError, SchemaError
from onthefly.store.bundle.checks import kind_of, split_rank
from onthefly.store.catalog import migrate
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.catalog.rows import TABLES
from onthefly.store.layout import CATALOG, RANKS_DIR, migrate_lock_path

__all__ = ["Member", "refusal", "check_files", "check_catalog", "catalog_paths"]

LIST_SCHEMA_OBJECTS = "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex_%'"
QUICK_CHECK = "PRAGMA quick_check"
DISTRUST_SCHEMA = "PRAGMA trusted_schema=OFF"

CHECKPOINT_FORMAT = ("onthefly.format", "onthefly.checkpoint")
"""The safetensors metadata entry every OnTheFly checkpoint carries."""

_KNOWN_TABLES = frozenset(TABLES) | {"alembic_version", "sqlite_sequence", "sqlite_stat1"}
_REMEDY = "it was not written by `onthefly export` or was changed since; ask for a fresh export"


@dataclass(frozen=True)
class Member:
    """A zip entry that passed the checks, with its manifest entry."""

    info: zipfile.ZipInfo
    path: str
    bytes: int
    sha256: str
    kind: str
    run: str | None
    checkpoint: str | None
    rank: int | None = None  # the rank folder (ranks/<r>/) it sits in, for multi-process sessions


def refusal(bundle: Path, problems: list[str]) -> BundleError:
    """The error refusing ``bundle``, naming the first problem and how many more there are."""
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return BundleError(f"bundle {bundle} was refused: {problems[0]}{more}; {_REMEDY}")


def check_files(scratch: Path, members: list[Member], bundle: Path) -> None:
    """Refuse a checkpoint that is not an OnTheFly safetensors file, or a shard that is not Parquet."""
    for member in members:
        if member.kind == "checkpoints":
            _check_checkpoint(scratch / member.path, member.path, bundle)
        elif member.kind in ("samples", "steps"):
            _check_parquet(scratch / member.path, member.path, bundle)


def _check_checkpoint(path: Path, name: str, bundle: Path) -> None:
    """A checkpoint must be a safetensors file (header checked, nothing loaded) written by OnTheFly."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise refusal(bundle, [f"{name} is not a valid safetensors file ({exc})"]) from exc
    if metadata.get(CHECKPOINT_FORMAT[0]) != CHECKPOINT_FORMAT[1]:
        raise refusal(bundle, [f"{name} is a safetensors file but not an OnTheFly checkpoint"])


def _check_parquet(path: Path, name: str, bundle: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise refusal(bundle, [f"{name} is not a Parquet file"])
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        raise refusal(bundle, [f"{name} has an unreadable Parquet footer ({exc})"]) from exc


def catalog_paths(members: list[Member]) -> list[str]:
    """The bundle paths of every catalog it holds: the session's first, then each rank's in rank order."""
    ranked = sorted((m.rank or 0, m.path) for m in members if m.kind == "catalog")
    return [path for _, path in ranked]


def check_catalog(scratch: Path, manifest: dict[str, Any], members: list[Member], bundle: Path) -> None:
    """Refuse catalogs that are not OnTheFly's or do not describe the bundle.

    Every catalog (the session's, and each rank's of a multi-process session)
    must hold only OnTheFly's tables and pass SQLite's quick check; its
    schema must be one this version reads (an older one is upgraded in place,
    in the scratch copy; a newer one is refused with the upgrade command).
    The session's catalog must hold the manifest's session and runs and list
    exactly the bundle's files outside ``ranks/``, checkpoints with the
    sha256 and size it recorded; each rank's catalog belongs to the same
    session, knows no other runs, and lists exactly the files of its folder.

    Raises:
        BundleError: naming the first problem found.
    """
    session_id = manifest["session"]["id"]
    by_rank: dict[int | None, set[str]] = {}
    for member in members:
        by_rank.setdefault(member.rank, set()).add(member.path)
    problems = [
        f"it holds files of rank {r} without {RANKS_DIR}/{r}/{CATALOG}"
        for r in sorted(r for r in by_rank if r)
        if f"{RANKS_DIR}/{r}/{CATALOG}" not in by_rank[r]
    ]
    run_ids: set[str] = set()
    for name in catalog_paths(members):
        rank, _ = split_rank(name)
        prefix = "" if rank is None else f"{RANKS_DIR}/{rank}/"
        session, runs, shards, checkpoints = _read_catalog(scratch / name, name, bundle)
        if session is None or session.id != session_id:
            owner = session.id if session else None
            problems.append(f"{name} belongs to session {owner}, the manifest to {session_id}")
        ids = {run.id for run in runs}
        if rank is None:
            run_ids = ids
            if ids != {run["id"] for run in manifest["runs"]}:
                problems.append(f"{name} and the manifest list different runs")
        elif not ids <= run_ids:
            problems.append(f"{name} knows runs {sorted(ids - run_ids)} that {CATALOG} does not")
        if rank is not None and checkpoints:
            problems.append(f"{name} lists checkpoints; only the session's catalog does")
        listed = {name, *(prefix + s.path for s in shards), *(c.path for c in checkpoints)}
        held = by_rank.get(rank, set())
        problems += [f"{name} lists {p!r}, which the bundle lacks" for p in sorted(listed - held)]
        problems += [f"it holds {p!r}, which {name} does not list" for p in sorted(held - listed)]
        problems += [f"shard {s.path!r} is not under {s.kind}/" for s in shards if kind_of(s.path) != s.kind]
        problems += _checkpoint_problems(checkpoints, members, name)
    if problems:
        raise refusal(bundle, problems)


def _checkpoint_problems(checkpoints: list[Any], members: list[Member], name: str) -> list[str]:
    by_path = {m.path: m for m in members}
    return [
        f"checkpoint {info.id} differs from the sha256 and size {name} records"
        for info in checkpoints
        if (m := by_path.get(info.path)) is not None and (m.sha256 != info.sha256.lower() or m.bytes != info.bytes)
    ]


def _read_catalog(path: Path, name: str, bundle: Path) -> tuple[Any, list[Any], list[Any], list[Any]]:
    """``(session, runs, active shards, checkpoints)`` of a catalog once its schema is checked (and upgraded)."""
    _check_schema_objects(path, name, bundle)
    try:
        migrate.check_schema(path)
    except SchemaError as exc:
        if migrate.current_revision(path) is None:
            raise refusal(bundle, [f"{name} holds no OnTheFly catalog schema"]) from exc
        try:
            migrate.upgrade(path)  # an older schema: upgraded through Alembic, in the scratch copy
        except SchemaError as newer:
            raise BundleError(f"bundle {bundle}: {newer}") from newer
        finally:
            Path(migrate_lock_path(path)).unlink(missing_ok=True)
    try:
        with Catalog.open(path, readonly=True) as catalog:
            return catalog.session(), catalog.runs(), catalog.active_shards(), catalog.checkpoints()
    except OnTheFlyError as exc:
        raise refusal(bundle, [f"{name} cannot be read ({exc})"]) from exc


def _check_schema_objects(path: Path, name: str, bundle: Path) -> None:
    try:
        con = sqlite3.connect(migrate.readonly_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise refusal(bundle, [f"{name} cannot be opened ({exc})"]) from exc
    try:
        con.execute(DISTRUST_SCHEMA)
        objects = con.execute(LIST_SCHEMA_OBJECTS).fetchall()
        verdict = con.execute(QUICK_CHECK).fetchone()
    except sqlite3.DatabaseError as exc:
        raise refusal(bundle, [f"{name} is not a readable SQLite database ({exc})"]) from exc
    finally:
        con.close()
    problems = [
        f"{name} holds a {kind} ({obj!r}); catalogs hold none" for kind, obj in objects if kind in ("trigger", "view")
    ]
    problems += [
        f"{name} holds a table {obj!r} that is not OnTheFly's"
        for kind, obj in objects
        if kind == "table" and obj not in _KNOWN_TABLES
    ]
    if not verdict or verdict[0] != "ok":
        problems.append(f"{name} fails SQLite's integrity check ({verdict[0] if verdict else 'no answer'})")
    if problems:
        raise refusal(bundle, problems)
