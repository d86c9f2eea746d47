"""``onthefly rm``, ``pin`` and ``unpin``: keep or delete sessions of the store."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from onthefly.store.lifecycle import StoreRoot

__all__ = ["add_rm", "add_pin", "add_unpin", "run_rm", "run_pin", "run_unpin"]


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
