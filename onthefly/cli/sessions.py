"""``onthefly ls``, ``rm``, ``pin`` and ``unpin``: list, keep or delete sessions of the store."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from onthefly.store.lifecycle import StoreRoot
from onthefly.store.records import SessionListing

__all__ = [
    "add_ls",
    "add_rm",
    "add_pin",
    "add_unpin",
    "run_ls",
    "run_rm",
    "run_pin",
    "run_unpin",
    "session_json",
    "session_text",
]


# -- ls -------------------------------------------------------------------------


def add_ls(commands: Any, common: argparse.ArgumentParser) -> None:
    """``onthefly ls``: sessions of the store root, newest first, with their runs."""
    parser = commands.add_parser(
        "ls",
        parents=[common],
        help="list sessions and their runs, newest first",
        description="List the sessions of the store root, newest first, with their runs.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run_ls)


def run_ls(args: argparse.Namespace, out: TextIO) -> int:
    store = StoreRoot(args.home)
    entries = store.list_sessions()
    if args.json:
        json.dump([session_json(e) for e in entries], out, indent=2)
        out.write("\n")
        return 0
    if not entries:
        out.write(f"no sessions in {store.root}\n")
        return 0
    for entry in entries:
        out.write(session_text(entry))
    return 0


def session_json(entry: SessionListing) -> dict[str, Any]:
    """A session entry as JSON: id, folder, flags, project and runs."""
    return {
        "id": entry.id,
        "dir": str(entry.dir),
        "created_at": entry.created_at,
        "live": entry.live,
        "pinned": entry.pinned,
        "project": entry.project,
        "error": entry.error,
        "runs": [run.summary() for run in entry.runs],
    }


def session_text(entry: SessionListing) -> str:
    """A session entry as text: one line for the session, one per run under it."""
    flags = [flag for flag, on in (("live", entry.live), ("pinned", entry.pinned)) if on]
    head = f"{entry.id}  {entry.project or '?'}" + (f"  [{', '.join(flags)}]" if flags else "")
    lines = [head]
    if entry.error:
        lines.append(f"  (catalog unreadable: {entry.error})")
    elif not entry.runs:
        lines.append("  (no runs)")
    else:
        width = max(len(run.name) for run in entry.runs)
        for run in entry.runs:
            lines.append(f"  {run.name.ljust(width)}  {run.kind:<8}  {run.status:<8}  {run.id}")
    return "\n".join(lines) + "\n"


# -- rm, pin, unpin ---------------------------------------------------------------


def add_rm(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly rm``."""
    parser = commands.add_parser(
        "rm",
        parents=[common],
        help="delete sessions (their whole folder)",
        description=(
            "Delete sessions of the store: catalog, shards and checkpoints. A live session (its training "
            "process still runs) is refused. Pinned sessions are deleted too: pinning only protects "
            "from the automatic clean-up."
        ),
    )
    parser.add_argument("sessions", nargs="+", metavar="SESSION", help="session ids (see `onthefly ls`)")
    parser.set_defaults(handler=run_rm)


def add_pin(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly pin``."""
    parser = commands.add_parser(
        "pin",
        parents=[common],
        help="keep sessions through the automatic clean-up",
        description=(
            "Pin sessions: when a new session starts, earlier ones are deleted unless they are live or "
            "pinned. Imported sessions are pinned already."
        ),
    )
    parser.add_argument("sessions", nargs="+", metavar="SESSION", help="session ids (see `onthefly ls`)")
    parser.set_defaults(handler=run_pin)


def add_unpin(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly unpin``."""
    parser = commands.add_parser(
        "unpin",
        parents=[common],
        help="let the automatic clean-up delete sessions again",
        description="Unpin sessions: the next new session then deletes them unless they are live.",
    )
    parser.add_argument("sessions", nargs="+", metavar="SESSION", help="session ids (see `onthefly ls`)")
    parser.set_defaults(handler=run_unpin)


def run_rm(args: argparse.Namespace, out: TextIO) -> int:
    store = StoreRoot(args.home)
    folders = [store.session_dir(session_id) for session_id in args.sessions]  # all exist before any goes
    for folder in folders:
        store.remove(folder.name)
        out.write(f"removed session {folder.name}\n")
    return 0


def run_pin(args: argparse.Namespace, out: TextIO) -> int:
    store = StoreRoot(args.home)
    folders = [store.session_dir(session_id) for session_id in args.sessions]
    for folder in folders:
        store.pin(folder.name)
        out.write(f"pinned session {folder.name}\n")
    return 0


def run_unpin(args: argparse.Namespace, out: TextIO) -> int:
    store = StoreRoot(args.home)
    folders = [store.session_dir(session_id) for session_id in args.sessions]
    for folder in folders:
        store.unpin(folder.name)
        out.write(f"unpinned session {folder.name}\n")
    return 0
