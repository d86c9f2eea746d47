"""``onthefly serve [SESSION|FILE.zip]``: let the dashboard browse a session no process is training."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from onthefly.store.lifecycle import StoreRoot

__all__ = ["add_serve", "run_serve"]


def add_serve(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare ``onthefly serve``."""
    parser = commands.add_parser(
        "serve",
        parents=[common],
        help="host a finished or imported session for the dashboard",
        description=(
            "Connect to the dashboard like a training process and answer it from a session's files: "
            "status, queries, reports, slices, slice exports and bundle exports. Pause, resume, stop, "
            "checkpoint and test are refused (nothing is training, and a session does not hold the "
            "model's code or data). A .zip bundle is imported first (pinned). Runs until Ctrl-C."
        ),
    )
    parser.add_argument(
        "target", nargs="?", metavar="SESSION|FILE.zip", help="session id, folder or bundle (default: the newest)"
    )
    parser.add_argument(
        "--port", type=int, metavar="P", help="the dashboard's port (default 47621 or $ONTHEFLY_DASHBOARD_PORT)"
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, out: TextIO) -> int:
    from onthefly.serve import serve

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        serve(args.target, store=StoreRoot(args.home), port=args.port, printer=say)
    except KeyboardInterrupt:
        say("[onthefly] stopped serving")
    return 0
