"""``onthefly export [SESSION] -o FILE.zip``: write a session to a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from onthefly.errors import StoreError
from onthefly.store.bundle.export import export_session
from onthefly.store.lifecycle import StoreRoot

__all__ = ["add_export", "run_export", "human_bytes"]


def add_export(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly export``."""
    parser = commands.add_parser(
        "export",
        parents=[common],
        help="write a session (catalog, shards, checkpoints) to a .zip bundle",
        description=(
            "Write a session to one .zip bundle: its catalog, Parquet shards and safetensors checkpoints, "
            "with a manifest of sizes and sha256 sums (docs/bundle-format.md). `onthefly import` reads it "
            "back; sqlite3, DuckDB and safetensors read it without OnTheFly. A session being trained by "
            "another process is exported as that process last wrote it."
        ),
    )
    parser.add_argument("session", nargs="?", help="session id or folder (default: the newest session)")
    parser.add_argument(
        "-o", "--output", metavar="FILE.zip", help="the bundle to write (default: <session id>.zip here)"
    )
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace, out: TextIO) -> int:
    from tqdm import tqdm

    store = StoreRoot(args.home)
    folder = _session_folder(store, args.session)
    output = args.output or f"{folder.name}.zip"
    if store.is_live(folder.name):
        print(
            f"onthefly: note: session {folder.name} is live: the bundle holds what its process has written "
            "so far and its latest checkpoints",
            file=sys.stderr,
        )
    with tqdm(desc="export", unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=None) as bar:
        result = export_session(folder, store=store, path=output, progress=bar.update)
    out.write(
        f"exported session {result['session']} ({result['runs']} run(s), {result['files']} files, "
        f"{human_bytes(result['bytes'])}) to {result['path']}\n"
    )
    return 0


def _session_folder(store: StoreRoot, session: str | None) -> Path:
    if session is None:
        newest = store.newest()
        if newest is None:
            raise StoreError(f"no session in the store root {store.root}: run a training script first, or pass --home")
        return Path(newest.dir)
    if Path(session).is_dir():
        return Path(session)
    return store.session_dir(session)


def human_bytes(count: int) -> str:
    """A size for people: ``1.5 MiB``.

    Example:
        >>> human_bytes(1536), human_bytes(512)
        ('1.5 KiB', '512 B')
    """
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
