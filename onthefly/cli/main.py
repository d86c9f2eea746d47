"""The ``onthefly`` command.

Each subcommand is one ``add_*`` function that declares its arguments and
sets ``handler`` to the function that runs it; :data:`COMMANDS` lists them in
help order. A larger subcommand lives in a module of its own
(``onthefly/cli/<name>.py``) exposing the same kind of ``add_command``
function, and is appended to :data:`COMMANDS`.

Only :func:`main` catches :class:`~onthefly.errors.OnTheFlyError`: it prints
one line, ``onthefly: error: <message>``, and exits with status 1 (with the
traceback under ``--debug``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import pyarrow.csv as pacsv

from onthefly._version import __version__
from onthefly.cli.export import add_export
from onthefly.cli.import_ import add_import
from onthefly.cli.report import add_report
from onthefly.cli.serve import add_serve
from onthefly.cli.sessions import add_ls, add_pin, add_rm, add_unpin
from onthefly.cli.tables import render_table
from onthefly.errors import ConfigError, OnTheFlyError
from onthefly.store.read.exports import write_rows
from onthefly.store.read.query import json_rows, query_table
from onthefly.store.read.query import sql as open_sql

__all__ = ["COMMANDS", "build_parser", "main"]

SQL_FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_SQL_LIMIT = 10_000

AddCommand = Callable[[Any, argparse.ArgumentParser], None]
"""``add(subcommands, common)``: declare one subcommand; ``common`` holds --home and --debug."""


# -- sql ------------------------------------------------------------------------


def add_sql(commands: Any, common: argparse.ArgumentParser) -> None:
    """``onthefly sql "SELECT ..."``: a read-only query over a session's views."""
    parser = commands.add_parser(
        "sql",
        parents=[common],
        help="run a read-only SQL query over a session",
        description=(
            "Run one SELECT over a session's views (samples, steps, runs, run_edges, checkpoints, "
            "tests, slices, slice_members, epochs, events, sessions). Prints a table on a terminal "
            "and CSV when piped, unless --format says otherwise."
        ),
    )
    parser.add_argument("query", help="one SELECT statement")
    parser.add_argument("--session", help="session id or folder (default: the newest session)")
    parser.add_argument("--format", choices=SQL_FORMATS, help="output format (parquet needs -o)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the result to FILE")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_SQL_LIMIT,
        metavar="N",
        help=f"at most N rows (default {DEFAULT_SQL_LIMIT}; 0 for all)",
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the query after SECONDS")
    parser.set_defaults(handler=run_sql)


def sql_format(requested: str | None, output: str | None, *, tty: bool) -> str:
    """The output format of ``onthefly sql``: the requested one, else from the file suffix, else by terminal.

    Args:
        requested: ``--format``, or None.
        output: ``-o FILE``, or None.
        tty: whether standard output is a terminal.

    Returns:
        One of :data:`SQL_FORMATS`.

    Raises:
        ConfigError: parquet was asked for without an output file.

    Example:
        >>> sql_format(None, None, tty=False), sql_format(None, "a.parquet", tty=True)
        ('csv', 'parquet')
    """
    fmt = requested
    if fmt is None and output is not None:
        suffix = Path(output).suffix.lower().lstrip(".")
        fmt = suffix if suffix in ("csv", "json", "parquet") else "csv"
    if fmt is None:
        fmt = "table" if tty else "csv"
    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet writes a binary file: pass -o FILE.parquet")
    return fmt


def run_sql(args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 0:
        raise ConfigError(f"--limit {args.limit} is negative: pass a row count, or 0 for all rows")
    fmt = sql_format(args.format, args.output, tty=out.isatty())
    con = open_sql(args.session, home=args.home)
    try:
        result = query_table(con, args.query, limit=args.limit or None, timeout=args.timeout)
    finally:
        con.close()
    table = result.table
    if result.truncated:
        print(
            f"onthefly: note: output stops at {args.limit} rows; pass --limit 0 for all of them",
            file=sys.stderr,
        )
    if fmt in ("csv", "json", "parquet") and args.output is not None:
        write_rows(table, args.output, format=fmt)
        return 0
    if fmt == "table":
        text = render_table(table.column_names, json_rows(table))
    elif fmt == "json":
        names = table.column_names
        text = json.dumps([dict(zip(names, row)) for row in json_rows(table)], indent=2) + "\n"
    else:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        text = buffer.getvalue().decode("utf-8")
    if args.output is not None:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    return 0


# -- the command ----------------------------------------------------------------

COMMANDS: tuple[AddCommand, ...] = (
    add_ls,
    add_sql,
    add_report,
    add_export,
    add_import,
    add_serve,
    add_rm,
    add_pin,
    add_unpin,
)
"""Subcommands in help order; a new one appends its ``add_command`` here."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``onthefly`` with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="onthefly",
        description="Interactive PyTorch training: inspect the local session store.",
    )
    parser.add_argument("--version", action="version", version=f"onthefly {__version__}")
    _add_global_options(parser, default=True)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands, common)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=None if default else argparse.SUPPRESS,
        help="store root (default: $ONTHEFLY_HOME or ./.onthefly)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if default else argparse.SUPPRESS,
        help="show the traceback of an error",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``onthefly`` with ``argv`` (default: the process arguments).

    Returns:
        The exit status: 0 on success, 1 on an OnTheFly error, 2 on bad
        usage (from argparse), 130 on Ctrl-C.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        onthefly 0.1.0
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args, sys.stdout) or 0)
    except OnTheFlyError as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(f"onthefly: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); stay quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
