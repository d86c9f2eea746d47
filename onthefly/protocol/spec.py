"""The dashboard link protocol as data: version, transport, error codes, methods and notifications.

This module is the Python source of truth of ``docs/protocol.md``; the
extension's ``extension/src/protocol/spec.ts`` mirrors it. Every change to the
listing below (methods, notifications, parameters, result fields, error codes,
limits, version) changes :func:`fingerprint`, and a test then asks for the
``protocol-hash`` line of ``docs/protocol.md`` to be updated with the docs.

How messages are written, read and checked against this listing is
:mod:`onthefly.protocol.codec`.

Example:
    >>> from onthefly.protocol import spec
    >>> spec.METHODS["report"].training_thread
    False
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_PORT",
    "HOST",
    "PORT_ENV",
    "TOKEN_ENV",
    "MAX_LINE_BYTES",
    "HELLO",
    "WELCOME",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "OPERATION_FAILED",
    "QUERY_FAILED",
    "STORE_FAILED",
    "BAD_ARGUMENT",
    "TRAINING_FAILED",
    "BUSY",
    "RESULT_TOO_LARGE",
    "ERROR_CODES",
    "STATES",
    "LOG_LEVELS",
    "Field",
    "MethodSpec",
    "NotificationSpec",
    "METHODS",
    "NOTIFICATIONS",
    "HANDSHAKE",
    "listing",
    "fingerprint",
]

PROTOCOL_VERSION = 1
HOST = "127.0.0.1"
DEFAULT_PORT = 47621
PORT_ENV = "ONTHEFLY_DASHBOARD_PORT"
TOKEN_ENV = "ONTHEFLY_TOKEN"
MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer line closes the connection

HELLO = "hello"
WELCOME = "welcome"

# JSON-RPC 2.0 codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Codes of this protocol (the -32000..-32099 range JSON-RPC leaves to servers).
OPERATION_FAILED = -32000
QUERY_FAILED = -32001
STORE_FAILED = -32002
BAD_ARGUMENT = -32003
TRAINING_FAILED = -32004
BUSY = -32005
RESULT_TOO_LARGE = -32006

ERROR_CODES: dict[str, int] = {
    "parse_error": PARSE_ERROR,
    "invalid_request": INVALID_REQUEST,
    "method_not_found": METHOD_NOT_FOUND,
    "invalid_params": INVALID_PARAMS,
    "internal_error": INTERNAL_ERROR,
    "operation_failed": OPERATION_FAILED,
    "query_failed": QUERY_FAILED,
    "store_failed": STORE_FAILED,
    "bad_argument": BAD_ARGUMENT,
    "training_failed": TRAINING_FAILED,
    "busy": BUSY,
    "result_too_large": RESULT_TOO_LARGE,
}


# --------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class Field:
    """One named member of params, a result or a notification payload.

    ``kind`` is a JSON type name (``string``, ``integer``, ``number``,
    ``boolean``, ``object``, ``array``, ``null``), ``integer[]`` for an array
    of integers, or several of them joined by ``|``.
    """

    name: str
    kind: str
    required: bool = True
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    def spec(self) -> dict[str, Any]:
        """The field without its doc, as it enters :func:`listing`."""
        out = dataclasses.asdict(self)
        del out["doc"]
        out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class MethodSpec:
    """A request the dashboard sends and the training process answers."""

    name: str
    params: tuple[Field, ...]
    result: tuple[Field, ...]
    training_thread: bool  # needs the model: runs on the training thread at a batch boundary
    doc: str = ""


@dataclass(frozen=True)
class NotificationSpec:
    """A message the training process sends without expecting an answer.

    ``columnar`` payloads hold, besides the listed fields, any number of other
    arrays, all of the same length.
    """

    name: str
    fields: tuple[Field, ...]
    columnar: bool = False
    doc: str = ""


def _opt(name: str, kind: str, doc: str = "", **kw: Any) -> Field:
    return Field(name, kind, required=False, doc=doc, **kw)


def _req(name: str, kind: str, doc: str = "", **kw: Any) -> Field:
    return Field(name, kind, required=True, doc=doc, **kw)


STATES = ("idle", "running", "paused", "testing", "finished")
LOG_LEVELS = ("debug", "info", "warning", "error")

_STATE = _req("state", "string", choices=STATES)

HANDSHAKE: dict[str, tuple[Field, ...]] = {
    "hello (dashboard)": (
        _req("protocol", "integer", "the protocol version the dashboard speaks"),
        _req("nonce", "string", "16 random bytes, 32 lowercase hex digits"),
    ),
    "hello (trainer)": (
        _req("protocol", "integer", "the protocol version the training process speaks"),
        _req("nonce", "string", "16 random bytes, 32 lowercase hex digits"),
        _req("proof", "string", "HMAC-SHA256(token, 'onthefly-trainer:' + D + ':' + T), hex"),
        _req("client", "object", "version, pid, session, project, run, host"),
    ),
    "welcome": (_req("proof", "string", "HMAC-SHA256(token, 'onthefly-dashboard:' + T + ':' + D), hex"),),
}

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec(
            "status",
            params=(),
            result=(
                _STATE,
                _req("step", "integer"),
                _req("epoch", "integer"),
                _req("session", "string"),
                _req("run", "string|null"),
                _req("project", "string"),
                _req("pid", "integer"),
                _opt("samples_per_s", "number|null"),
            ),
            training_thread=False,
            doc="Where the training process is.",
        ),
        MethodSpec("pause", (), (_STATE,), False, "Pause at the next batch boundary."),
        MethodSpec(
            "resume",
            params=(_opt("epochs", "integer", "after the run finished: epochs to train more (1)", minimum=1),),
            result=(_STATE,),
            training_thread=False,
            doc="Resume a paused run, or train a finished one further.",
        ),
        MethodSpec("stop", (), (_STATE,), False, "Stop training at the next batch boundary."),
        MethodSpec(
            "test",
            params=(_opt("split", "string", default="test"),),
            result=(
                _req("split", "string"),
                _req("loss", "number|null"),
                _req("metrics", "object"),
                _req("count", "integer"),
            ),
            training_thread=True,
            doc="Evaluate the model on a split; training waits meanwhile.",
        ),
        MethodSpec(
            "checkpoint",
            params=(),
            result=(
                _req("id", "string"),
                _req("step", "integer"),
                _req("epoch", "integer"),
                _req("path", "string"),
            ),
            training_thread=True,
            doc="Save a checkpoint of the current run now.",
        ),
        MethodSpec(
            "query",
            params=(
                _req("sql", "string", "one read-only statement over the session's views"),
                _opt("params", "array|object", "values bound to ? or $name placeholders"),
                _opt("limit", "integer", default=10000, minimum=1, maximum=1_000_000),
                _opt("format", "string", default="rows", choices=("rows", "arrow")),
            ),
            result=(
                _opt("columns", "array", "format rows"),
                _opt("types", "array", "format rows: DuckDB type names"),
                _opt("rows", "array", "format rows: one array per row"),
                _opt("arrow", "string", "format arrow: base64 of an Arrow IPC stream"),
                _req("truncated", "boolean", "true when more rows than limit matched"),
            ),
            training_thread=False,
            doc="Read-only SQL over the session store.",
        ),
        MethodSpec(
            "report",
            params=(
                _opt("run", "string"),
                _opt("split", "string", default="train"),
                _opt("epoch", "integer", minimum=0),
                _opt("k", "integer", default=20, minimum=0, maximum=10000),
            ),
            result=(
                _req("run", "string"),
                _req("split", "string"),
                _req("epoch", "integer"),
                _req("step", "integer"),
                _req("count", "integer"),
                _req("mean", "number|null"),
                _req("quantiles", "object", "p10, p50, p90, p99"),
                _req("hist", "object", "edges (n+1 numbers), counts (n integers)"),
                _req("hardest", "array", "[{sample_id, loss, label?, pred?}], hardest first"),
            ),
            training_thread=False,
            doc="The per-sample loss distribution of a pass.",
        ),
        MethodSpec(
            "slice",
            params=(
                _req("name", "string"),
                _opt("run", "string"),
                _opt("split", "string", default="train"),
                _opt("epoch", "integer", minimum=0),
                _opt("loss_min", "number"),
                _opt("loss_max", "number"),
                _opt("q_min", "number", minimum=0, maximum=1),
                _opt("q_max", "number", minimum=0, maximum=1),
                _opt("ids", "integer[]"),
                _opt("replace", "boolean", "replace a slice of the same name"),
            ),
            result=(
                _req("name", "string"),
                _req("count", "integer"),
                _req("run", "string"),
                _req("split", "string"),
                _req("epoch", "integer"),
                _req("method", "object", "the selection as given"),
            ),
            training_thread=False,
            doc="Save the samples of a loss range, quantile range or id set as a named slice.",
        ),
        MethodSpec(
            "export_slice",
            params=(
                _req("name", "string"),
                _req("path", "string", "inside the training process's working directory"),
                _opt("format", "string", default="csv", choices=("csv", "parquet", "json")),
            ),
            result=(
                _req("path", "string", "absolute"),
                _req("rows", "integer"),
                _req("bytes", "integer"),
            ),
            training_thread=False,
            doc="Write the rows of a slice to a file.",
        ),
        MethodSpec(
            "export",
            params=(_req("path", "string", "the .zip bundle to write"),),
            result=(
                _req("path", "string", "absolute"),
                _req("bytes", "integer"),
                _req("session", "string"),
                _req("runs", "integer"),
                _req("files", "integer"),
            ),
            training_thread=True,
            doc="Write the whole session to a .zip bundle (docs/bundle-format.md).",
        ),
    )
}

NOTIFICATIONS: dict[str, NotificationSpec] = {
    n.name: n
    for n in (
        NotificationSpec(
            "state",
            (
                _STATE,
                _req("step", "integer"),
                _req("epoch", "integer"),
                _opt("run", "string|null"),
                _opt("samples_per_s", "number|null"),
            ),
            doc="The run's state changed; only the latest is sent.",
        ),
        NotificationSpec(
            "run",
            (
                _req("id", "string"),
                _req("name", "string"),
                _req("kind", "string", "base, fork, merge or imported"),
                _req("status", "string"),
                _req("parents", "array", "[{id, role}]"),
                _opt("created_at", "number"),
                _opt("config", "object|null"),
                _opt("hparams", "object|null"),
            ),
            doc="A new or changed run.",
        ),
        NotificationSpec(
            "steps",
            (_req("step", "integer[]"),),
            columnar=True,
            doc="Step metrics, one array per metric, all of the same length.",
        ),
        NotificationSpec(
            "epoch",
            (
                _req("run", "string"),
                _req("split", "string"),
                _req("epoch", "integer"),
                _req("step", "integer"),
                _req("count", "integer"),
                _req("mean", "number|null"),
                _opt("min", "number|null"),
                _opt("max", "number|null"),
                _req("quantiles", "object"),
                _req("hist", "object"),
                _opt("metrics", "object|null"),
            ),
            doc="The per-sample loss summary of a finished pass.",
        ),
        NotificationSpec(
            "test",
            (
                _req("run", "string"),
                _req("split", "string"),
                _req("step", "integer"),
                _req("epoch", "integer"),
                _req("loss", "number|null"),
                _req("metrics", "object"),
                _req("count", "integer"),
            ),
            doc="A test pass finished.",
        ),
        NotificationSpec(
            "checkpoint",
            (
                _req("id", "string"),
                _req("run", "string"),
                _req("step", "integer"),
                _req("epoch", "integer"),
                _req("path", "string"),
            ),
            doc="A checkpoint was saved.",
        ),
        NotificationSpec(
            "log",
            (
                _req("level", "string", choices=LOG_LEVELS),
                _req("message", "string"),
                _opt("step", "integer|null"),
            ),
            doc="A line for the dashboard's log view.",
        ),
        NotificationSpec(
            "error",
            (
                _req("message", "string"),
                _opt("type", "string"),
                _req("fatal", "boolean"),
            ),
            doc="Something failed in the training process.",
        ),
    )
}

# --------------------------------------------------------------------------
# Fingerprint


def listing() -> dict[str, Any]:
    """Everything a client must agree on, without prose: the input of :func:`fingerprint`."""
    return {
        "version": PROTOCOL_VERSION,
        "transport": {
            "host": HOST,
            "default_port": DEFAULT_PORT,
            "port_env": PORT_ENV,
            "token_env": TOKEN_ENV,
            "max_line_bytes": MAX_LINE_BYTES,
        },
        "handshake": {name: [f.spec() for f in fields] for name, fields in HANDSHAKE.items()},
        "methods": {
            m.name: {
                "params": [f.spec() for f in m.params],
                "result": [f.spec() for f in m.result],
                "training_thread": m.training_thread,
            }
            for m in METHODS.values()
        },
        "notifications": {
            n.name: {"fields": [f.spec() for f in n.fields], "columnar": n.columnar} for n in NOTIFICATIONS.values()
        },
        "errors": ERROR_CODES,
    }


def fingerprint() -> str:
    """sha256 (hex) of the canonical JSON of :func:`listing`.

    ``docs/protocol.md`` carries it on a ``protocol-hash:`` line, so a change
    to the protocol that leaves the docs alone fails a test.

    Example:
        >>> len(fingerprint())
        64
    """
    canonical = json.dumps(listing(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
