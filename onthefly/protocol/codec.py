"""The dashboard link's messages: JSON-RPC 2.0 objects, one per line of UTF-8 JSON.

Encoding and decoding a line, checking params, results and notification
payloads against :mod:`onthefly.protocol.spec`, and the error code an
exception is answered with. The extension's
``extension/src/protocol/codec.ts`` mirrors it.

Example:
    >>> from onthefly.protocol import codec
    >>> line = codec.encode(codec.Request(id=1, method="status", params={}))
    >>> codec.decode(line)
    Request(id=1, method='status', params={})
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from onthefly.errors import (
    ConfigError,
    OnTheFlyError,
    ProtocolError,
    QueryError,
    StoreError,
    TrainingError,
)
from onthefly.protocol.spec import (
    BAD_ARGUMENT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    METHODS,
    NOTIFICATIONS,
    OPERATION_FAILED,
    PARSE_ERROR,
    QUERY_FAILED,
    STORE_FAILED,
    TRAINING_FAILED,
    Field,
)

__all__ = [
    "Request",
    "Notification",
    "Response",
    "ErrorResponse",
    "Message",
    "MessageError",
    "encode",
    "decode",
    "validate_params",
    "check_fields",
    "check_result",
    "check_notification",
    "error_code_for",
]

# Most specific first: the first class in an exception's MRO found here wins.
_ERROR_CLASS_CODES: dict[type[BaseException], int] = {
    QueryError: QUERY_FAILED,
    StoreError: STORE_FAILED,
    ConfigError: BAD_ARGUMENT,
    TrainingError: TRAINING_FAILED,
    OnTheFlyError: OPERATION_FAILED,
}


# --------------------------------------------------------------------------
# Messages

Id = int | str


@dataclass(frozen=True)
class Request:
    """A call that expects a :class:`Response` or :class:`ErrorResponse` with the same id."""

    id: Id
    method: str
    params: dict[str, Any] | list[Any]

    def to_json(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": self.id, "method": self.method, "params": self.params}


@dataclass(frozen=True)
class Notification:
    """A message without an id; nobody answers it."""

    method: str
    params: dict[str, Any] | list[Any]

    def to_json(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": self.method, "params": self.params}


@dataclass(frozen=True)
class Response:
    """The result of a request."""

    id: Id
    result: Any

    def to_json(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": self.id, "result": self.result}


@dataclass(frozen=True)
class ErrorResponse:
    """A request's failure; ``id`` is None when the request's id could not be read."""

    id: Id | None
    code: int
    message: str
    data: Any = None

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": self.id, "error": error}


Message = Request | Notification | Response | ErrorResponse


class MessageError(ProtocolError):
    """A message breaks the protocol.

    ``code`` is the JSON-RPC error code to answer with, ``id`` the request's
    id when it could be read (else None).
    """

    def __init__(self, message: str, *, code: int, id: Id | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.id = id


def _default(obj: Any) -> Any:
    """JSON for values handlers commonly return: numpy, paths, dates, dataclasses."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return _finite(_default(obj))


def encode(message: Message) -> bytes:
    """One message as a line of UTF-8 JSON, newline included.

    Non-finite numbers (NaN, infinities) become ``null``: JSON has no such
    values, and the store keeps the exact ones.

    Args:
        message: a :class:`Request`, :class:`Notification`, :class:`Response`
            or :class:`ErrorResponse`.

    Returns:
        The bytes to write, ending with ``b"\\n"``.

    Raises:
        TypeError: a value in the message has no JSON form.

    Example:
        >>> encode(Notification("log", {"level": "info", "message": "hi"}))
        b'{"jsonrpc":"2.0","method":"log","params":{"level":"info","message":"hi"}}\\n'
    """
    obj = message.to_json()
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def decode(line: bytes | str) -> Message:
    """Parse one line (without its newline) into a message.

    Args:
        line: the bytes or text of one line.

    Returns:
        A :class:`Request`, :class:`Notification`, :class:`Response` or
        :class:`ErrorResponse`.

    Raises:
        MessageError: with ``code`` :data:`PARSE_ERROR` when the line is not
            UTF-8 JSON, :data:`INVALID_REQUEST` when it is JSON but not a
            JSON-RPC 2.0 message of this protocol (batches included).

    Example:
        >>> decode(b'{"jsonrpc":"2.0","id":7,"result":{"state":"paused"}}')
        Response(id=7, result={'state': 'paused'})
    """
    if isinstance(line, (bytes, bytearray, memoryview)):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(
                f"the line is not UTF-8 (byte {exc.start}): send UTF-8 JSON, one message per line",
                code=PARSE_ERROR,
            ) from None
    else:
        text = line
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MessageError(
            f"the line is not JSON ({exc}): send one JSON-RPC 2.0 object per line", code=PARSE_ERROR
        ) from None
    if isinstance(obj, list):
        raise MessageError("batches are not supported: send one message per line", code=INVALID_REQUEST)
    if not isinstance(obj, dict):
        raise MessageError(
            f"a message must be a JSON object, got {type(obj).__name__}: send a JSON-RPC 2.0 object",
            code=INVALID_REQUEST,
        )
    mid = obj.get("id")
    reply_id = mid if _valid_id(mid) else None
    if obj.get("jsonrpc") != "2.0":
        raise MessageError(
            f'"jsonrpc" is {obj.get("jsonrpc")!r}: every message carries "jsonrpc": "2.0"',
            code=INVALID_REQUEST,
            id=reply_id,
        )
    if "method" in obj:
        return _decode_call(obj, reply_id)
    if "result" in obj or "error" in obj:
        return _decode_reply(obj, reply_id)
    raise MessageError(
        'the message has neither "method" nor "result"/"error": it is no JSON-RPC 2.0 message',
        code=INVALID_REQUEST,
        id=reply_id,
    )


def _decode_call(obj: dict[str, Any], reply_id: Id | None) -> Message:
    method = obj["method"]
    if not isinstance(method, str):
        raise MessageError(f'"method" must be a string, got {method!r}', code=INVALID_REQUEST, id=reply_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, (dict, list)):
        raise MessageError(
            f'"params" must be an object, got {type(params).__name__}', code=INVALID_REQUEST, id=reply_id
        )
    if "id" not in obj:
        return Notification(method, params)
    if reply_id is None:
        raise MessageError(f'"id" must be a string or an integer, got {obj["id"]!r}', code=INVALID_REQUEST)
    return Request(reply_id, method, params)


def _decode_reply(obj: dict[str, Any], reply_id: Id | None) -> Message:
    if "result" in obj and "error" in obj:
        raise MessageError('a reply holds "result" or "error", not both', code=INVALID_REQUEST, id=reply_id)
    if "error" not in obj:
        if reply_id is None:
            raise MessageError('a result needs a string or integer "id"', code=INVALID_REQUEST)
        return Response(reply_id, obj["result"])
    error = obj["error"]
    ok = (
        isinstance(error, dict)
        and isinstance(error.get("code"), int)
        and not isinstance(error.get("code"), bool)
        and isinstance(error.get("message"), str)
    )
    if not ok:
        raise MessageError('"error" must be {code: integer, message: string}', code=INVALID_REQUEST, id=reply_id)
    if obj.get("id") is not None and reply_id is None:
        raise MessageError('"id" must be a string, an integer or null', code=INVALID_REQUEST)
    return ErrorResponse(reply_id, error["code"], error["message"], error.get("data"))


# --------------------------------------------------------------------------
# Validation


def _is_kind(value: Any, kind: str) -> bool:
    for k in kind.split("|"):
        if k == "null" and value is None:
            return True
        if k == "string" and isinstance(value, str):
            return True
        if k == "boolean" and isinstance(value, bool):
            return True
        if k == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if k == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value)
        if k == "object" and isinstance(value, dict):
            return True
        if k == "array" and isinstance(value, list):
            return True
        if k == "integer[]" and isinstance(value, list):
            return all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return False


def _field_problem(f: Field, value: Any) -> str | None:
    if not _is_kind(value, f.kind):
        return f"{f.name!r} must be {f.kind}, got {json.dumps(value, default=repr)[:80]}"
    if f.choices and value not in f.choices:
        return f"{f.name!r} must be one of {', '.join(map(str, f.choices))}, got {value!r}"
    if f.minimum is not None and isinstance(value, (int, float)) and value < f.minimum:
        return f"{f.name!r} must be at least {f.minimum:g}, got {value!r}"
    if f.maximum is not None and isinstance(value, (int, float)) and value > f.maximum:
        return f"{f.name!r} must be at most {f.maximum:g}, got {value!r}"
    return None


def validate_params(method: str, params: Any) -> dict[str, Any]:
    """Check a request's params against :data:`METHODS` and fill in defaults.

    An optional parameter given as ``null`` counts as left out.

    Args:
        method: a name in :data:`METHODS`.
        params: the request's params (None for none).

    Returns:
        The keyword arguments to call the operation with: the given values
        plus the defaults of this protocol.

    Raises:
        MessageError: code :data:`METHOD_NOT_FOUND` for an unknown method,
            :data:`INVALID_PARAMS` for a missing, unexpected or ill-typed
            parameter (the message names it and what it should be).

    Example:
        >>> validate_params("report", {"k": 5})
        {'split': 'train', 'k': 5}
    """
    spec = METHODS.get(method)
    if spec is None:
        raise MessageError(
            f"unknown method {method!r}: this training process answers {', '.join(METHODS)}",
            code=METHOD_NOT_FOUND,
        )
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise MessageError(
            f"{method}: params must be an object of named parameters, got {type(params).__name__}",
            code=INVALID_PARAMS,
        )
    known = {f.name for f in spec.params}
    unexpected = sorted(k for k in params if k not in known)
    if unexpected:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise MessageError(f"{method}: unexpected parameter {unexpected[0]!r}; it takes {takes}", code=INVALID_PARAMS)
    kwargs: dict[str, Any] = {}
    for f in spec.params:
        value = params.get(f.name)
        if value is None:
            if f.required:
                raise MessageError(f"{method}: missing parameter {f.name!r} ({f.kind})", code=INVALID_PARAMS)
            if f.default is not None:
                kwargs[f.name] = f.default
            continue
        problem = _field_problem(f, value)
        if problem:
            raise MessageError(f"{method}: {problem}", code=INVALID_PARAMS)
        kwargs[f.name] = value
    return kwargs


def check_fields(fields: tuple[Field, ...], payload: Any, *, columnar: bool = False) -> list[str]:
    """The problems of a payload against its fields (an empty list when it fits).

    Args:
        fields: the expected members.
        payload: a decoded JSON value.
        columnar: every member must be an array, all of one length, and
            members not in ``fields`` are allowed.

    Returns:
        One sentence per problem.
    """
    if not isinstance(payload, dict):
        return [f"expected an object, got {type(payload).__name__}"]
    problems = []
    for f in fields:
        if f.name not in payload:
            if f.required:
                problems.append(f"missing {f.name!r}")
            continue
        problem = _field_problem(f, payload[f.name])
        if problem:
            problems.append(problem)
    if columnar:
        lengths = {k: len(v) for k, v in payload.items() if isinstance(v, list)}
        problems += [f"{k!r} must be an array" for k, v in payload.items() if not isinstance(v, list)]
        if len(set(lengths.values())) > 1:
            problems.append(f"columns differ in length: {lengths}")
    return problems


def check_result(method: str, result: Any) -> list[str]:
    """The problems of a method's result (see :func:`check_fields`)."""
    return check_fields(METHODS[method].result, result)


def check_notification(method: str, params: Any) -> list[str]:
    """The problems of a notification's payload (see :func:`check_fields`)."""
    spec = NOTIFICATIONS.get(method)
    if spec is None:
        return [f"unknown notification {method!r}"]
    return check_fields(spec.fields, params, columnar=spec.columnar)


def error_code_for(exc: BaseException) -> int:
    """The error code an operation's exception is answered with.

    Args:
        exc: what the operation raised.

    Returns:
        A code of this protocol for :class:`~onthefly.errors.OnTheFlyError`
        and its subclasses, :data:`INTERNAL_ERROR` for anything else.

    Example:
        >>> error_code_for(QueryError("no such table"))
        -32001
    """
    for cls in type(exc).__mro__:
        if cls in _ERROR_CLASS_CODES:
            return _ERROR_CLASS_CODES[cls]
    return INTERNAL_ERROR
