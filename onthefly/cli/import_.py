"""``onthefly import FILE.zip``: add an exported session to the store, pinned."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, TextIO

from onthefly.cli.sessions import session_json
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.lifecycle import StoreRoot

__all__ = ["add_import", "run_import"]


def add_import(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly import``."""
    parser = commands.add_parser(
        "import",
        parents=[common],
        help="add an exported session (.zip bundle) to the store, pinned",
        description=(
            "Check a bundle written by `onthefly export` (paths, sizes, sha256 sums, file formats, catalog "
            "schema), then add its session to the store under its own id, pinned so the clean-up keeps it. "
            "Importing the same bundle again changes nothing. A bundle that fails a check leaves the store "
            "as it was."
        ),
    )
    parser.add_argument("bundle", metavar="FILE.zip", help="the bundle to import")
    parser.add_argument("--json", action="store_true", help="print the imported session as JSON")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace, out: TextIO) -> int:
    from tqdm import tqdm

    store = StoreRoot(args.home)
    manifest = read_manifest(args.bundle)
    session_id = manifest["session"]["id"]
    existed = os.path.lexists(store.sessions_dir / session_id)
    total = sum(entry["bytes"] for entry in manifest["files"])
    with tqdm(
        total=total, desc="import", unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=None
    ) as bar:
        entry = import_bundle(args.bundle, store=store, progress=bar.update)
    if args.json:
        json.dump({**session_json(entry), "already_there": existed}, out, indent=2)
        out.write("\n")
        return 0
    what = "was already in the store" if existed else "imported"
    out.write(
        f"session {entry.id} ({entry.project or '?'}, {len(entry.runs)} run(s)) {what} at {entry.dir}; pinned\n"
        f"  open it with `onthefly sql --session {entry.id} ...`, or resume a run with "
        f"resume_from='{entry.id}/<run>'\n"
    )
    return 0
