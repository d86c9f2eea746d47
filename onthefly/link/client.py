"""The training side of the dashboard link.

:class:`DashboardLink` connects from background threads to the dashboard on
127.0.0.1, authenticates both ways (see :mod:`onthefly.link.handshake`),
answers the dashboard's requests by calling the session handle, and streams
notifications. Nothing it does can stop training: the training thread only
appends to an in-memory :class:`~onthefly.link.outbox.Outbox` (which also
decides the pace of notifications), and every failure of the connection sends
the link back to retrying.

Example:
    >>> link = DashboardLink(handle, client_info={"session": sid, "project": "demo", "run": rid})
    >>> link.start()
    >>> link.push_step({"step": 1, "epoch": 0, "loss": 0.7})   # on the training thread
    >>> link.notify("state", {"state": "paused", "step": 1, "epoch": 0})
    >>> link.close()
"""

from __future__ import annotations

import inspect
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from onthefly._version import __version__
from onthefly.errors import ConfigError, OnTheFlyError, ProtocolError
from onthefly.link.framing import LineConnection
from onthefly.link.handshake import HandshakeError, VersionMismatch, trainer_handshake
from onthefly.link.outbox import (
    Batch,
    Outbox,
    columnar,
)
from onthefly.link.token import read_token, token_key
from onthefly.protocol.codec import (
    ErrorResponse,
    MessageError,
    Notification,
    Request,
    Response,
    decode,
    encode,
    error_code_for,
    validate_params,
)
from onthefly.protocol.spec import (
    BUSY,
    DEFAULT_PORT,
    HOST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MAX_LINE_BYTES,
    METHOD_NOT_FOUND,
    NOTIFICATIONS,
    PORT_ENV,
    RESULT_TOO_LARGE,
)

__all__ = ["DashboardLink", "Outbox", "Batch", "dispatch", "columnar", "resolve_port", "next_delay"]

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0  # the longest wait between two connection attempts
HANDSHAKE_TIMEOUT_S = 5.0  # for connecting and for each handshake step
IO_TIMEOUT_S = 10.0  # a send that makes no progress this long drops the connection
WORKERS = 4  # requests served at once
MAX_PENDING = 64  # requests accepted but not answered; more get BUSY


# --------------------------------------------------------------------------
# Decisions


def resolve_port(port: int | None = None) -> int:
    """The dashboard's port: ``port``, else ``$ONTHEFLY_DASHBOARD_PORT``, else 47621.

    Raises:
        ConfigError: the port is not an integer between 1 and 65535.

    Example:
        >>> resolve_port(50000)
        50000
    """
    if port is None:
        env = os.environ.get(PORT_ENV, "").strip()
        if not env:
            return DEFAULT_PORT
        try:
            port = int(env)
        except ValueError:
            raise ConfigError(
                f"${PORT_ENV} is {env!r}, not a port number: set it to an integer between 1 and 65535 or unset it"
            ) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"dashboard port {port!r} is not between 1 and 65535: pass the dashboard's port")
    return port


def next_delay(previous: float) -> float:
    """The wait before the next connection attempt: doubling, capped at 2 s.

    Example:
        >>> next_delay(0.0), next_delay(0.4), next_delay(1.5)
        (0.05, 0.8, 2.0)
    """
    return min(RETRY_MAX_S, max(RETRY_MIN_S, previous * 2))


def dispatch(handle: Any, request: Request) -> Response | ErrorResponse:
    """Answer one request by calling ``handle.<method>(**params)``.

    Only names in :data:`onthefly.protocol.spec.METHODS` are called. Never raises:
    every failure becomes an :class:`~onthefly.protocol.codec.ErrorResponse`.

    Args:
        handle: the session handle.
        request: a decoded request.

    Returns:
        The response to send.
    """
    try:
        kwargs = validate_params(request.method, request.params)
    except MessageError as exc:
        return ErrorResponse(request.id, exc.code, str(exc))
    fn = getattr(handle, request.method, None)
    if not callable(fn):
        return ErrorResponse(
            request.id,
            METHOD_NOT_FOUND,
            f"method {request.method!r} is not offered by this training process: update onthefly-ai",
        )
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        return ErrorResponse(request.id, INVALID_PARAMS, f"{request.method}: {exc}")
    except ValueError:  # no signature to check (a builtin): let the call decide
        pass
    try:
        result = fn(**kwargs)
    except OnTheFlyError as exc:
        return ErrorResponse(request.id, error_code_for(exc), str(exc), {"type": type(exc).__name__})
    except Exception as exc:
        return ErrorResponse(
            request.id,
            INTERNAL_ERROR,
            f"{request.method} failed: {type(exc).__name__}: {exc}",
            {"type": type(exc).__name__},
        )
    return Response(request.id, result)


def _answer_bytes(request: Request, response: Response | ErrorResponse) -> bytes:
    """The encoded answer, or an error saying why the answer cannot be sent."""
    try:
        data = encode(response)
    except (TypeError, ValueError) as exc:
        return encode(ErrorResponse(request.id, INTERNAL_ERROR, f"the result of {request.method} is not JSON: {exc}"))
    if len(data) > MAX_LINE_BYTES:
        return encode(
            ErrorResponse(
                request.id,
                RESULT_TOO_LARGE,
                f"the answer to {request.method} is {len(data)} bytes, over the {MAX_LINE_BYTES} limit: "
                "ask for fewer rows (limit) or columns",
            )
        )
    return data


# --------------------------------------------------------------------------
# The link


class DashboardLink:
    """The training process's connection to the dashboard.

    Args:
        handle: the session handle. A request ``m`` with params ``P`` calls
            ``handle.m(**P)`` for ``m`` in :data:`onthefly.protocol.spec.METHODS`;
            ``handle.snapshot()`` returns ``{"state": {...}, "runs": [...]}``,
            sent to every dashboard right after its handshake.
        port: the dashboard's port; ``$ONTHEFLY_DASHBOARD_PORT`` or 47621 when None.
        client_info: who this process is (``session``, ``project``, ``run``);
            ``version``, ``pid`` and ``host`` are added when missing.
        printer: where the link's one-line messages go.
        token: a fixed token; when None the token file (or
            ``$ONTHEFLY_TOKEN``) is read before every connection attempt.

    Raises:
        ConfigError: a bad port, token or client_info.

    Example:
        >>> with DashboardLink(handle, client_info={"session": sid}) as link:
        ...     train(link)
    """

    def __init__(
        self,
        handle: Any,
        *,
        port: int | None = None,
        client_info: Mapping[str, Any],
        printer: Callable[[str], None] = print,
        token: str | None = None,
    ):
        if not isinstance(client_info, Mapping):
            raise ConfigError(f"client_info must be a dict, got {type(client_info).__name__}")
        if token is not None:
            token_key(token)
        self.port = resolve_port(port)
        self._handle = handle
        self._token = token
        self._client = {"version": __version__, "pid": os.getpid(), "host": socket.gethostname(), **client_info}
        self._printer = printer
        self._cond = threading.Condition(threading.Lock())
        self._outbox = Outbox()
        self._conn: LineConnection | None = None  # handshake done, snapshot sent
        self._dialing: LineConnection | None = None
        self._closing = False
        self._closed = threading.Event()
        self._pending = 0
        self._jobs: queue.SimpleQueue[tuple[LineConnection, Request] | None] = queue.SimpleQueue()
        self._said: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._lifecycle = threading.Lock()

    # -- public ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a dashboard is connected and authenticated."""
        return self._conn is not None

    def start(self) -> None:
        """Start connecting in the background (daemon threads). Idempotent.

        Raises:
            ConfigError: the link was closed; create a new one.
        """
        with self._lifecycle:
            if self._closed.is_set():
                raise ConfigError("this DashboardLink is closed: create a new one to connect again")
            if self._threads:
                return
            targets = {"connect": self._run, "send": self._send_loop}
            targets.update({f"worker-{i}": self._work for i in range(WORKERS)})
            for name, target in targets.items():
                thread = threading.Thread(target=target, name=f"onthefly-link-{name}", daemon=True)
                self._threads[name] = thread
                thread.start()

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        """Queue a notification for the dashboard. Never blocks on I/O, never raises.

        ``state`` keeps only the latest; other notifications are dropped while
        no dashboard is connected (the store has them).

        Args:
            method: a name in :data:`onthefly.protocol.spec.NOTIFICATIONS`.
            params: its payload (copied, shallowly).
        """
        try:
            if method not in NOTIFICATIONS or not isinstance(params, Mapping):
                self._say_once(
                    f"notify-{method}",
                    f"[onthefly] dropped notification {method!r}: not one of {', '.join(NOTIFICATIONS)} "
                    "with a dict payload",
                )
                return
            with self._cond:
                self._outbox.put(method, dict(params))
                if self._conn is not None:
                    self._cond.notify()
        except Exception:  # never disturb training
            pass

    def push_step(self, row: Mapping[str, Any]) -> None:
        """Add one step's metrics (``step``, ``epoch``, ``loss``, ``lr``, ...) to the next ``steps`` message.

        Never blocks on I/O, never raises; dropped while no dashboard is connected.
        """
        try:
            with self._cond:
                if self._outbox.is_open and self._outbox.put_step(dict(row)) and self._conn is not None:
                    self._cond.notify()
        except Exception:  # never disturb training
            pass

    def close(self, *, timeout: float = 1.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), disconnect and stop. Idempotent."""
        with self._lifecycle:
            if self._closed.is_set():
                return
            self._closed.set()
        with self._cond:
            self._closing = True
            dialing = self._dialing
            self._cond.notify_all()
        if dialing is not None:
            dialing.close()
        deadline = time.monotonic() + timeout
        sender = self._threads.get("send")
        if sender is not None:
            sender.join(timeout)
        conn = self._conn
        if conn is not None:
            conn.close()
        connector = self._threads.get("connect")
        if connector is not None:
            connector.join(max(0.0, deadline - time.monotonic()) + 0.5)
        for name in self._threads:
            if name.startswith("worker-"):
                self._jobs.put(None)

    def __enter__(self) -> DashboardLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connecting --------------------------------------------------------

    def _say(self, text: str) -> None:
        try:
            self._printer(text)
        except Exception:
            pass

    def _say_once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._say(text)

    def _run(self) -> None:
        delay = 0.0
        while not self._closed.is_set():
            if delay and self._closed.wait(delay):
                return
            try:
                conn = self._dial()
            except Exception as exc:  # a bug; say it once and keep trying
                self._say_once(f"bug-{type(exc).__name__}", f"[onthefly] dashboard link error: {exc!r}; retrying")
                conn = None
            if conn is None:
                delay = next_delay(delay)
                continue
            try:
                self._serve(conn)
            except Exception as exc:
                self._say_once(f"bug-{type(exc).__name__}", f"[onthefly] dashboard link error: {exc!r}; reconnecting")
            finally:
                self._hang_up(conn)
            delay = RETRY_MIN_S

    def _read_token(self) -> str | None:
        if self._token is not None:
            return self._token
        try:
            return read_token(self.port)
        except ConfigError as exc:
            self._say_once("token", f"[onthefly] {exc}")
            return None

    def _dial(self) -> LineConnection | None:
        """Connect, authenticate and send the snapshot; None when any of it fails."""
        token = self._read_token()
        try:
            sock = socket.create_connection((HOST, self.port), timeout=HANDSHAKE_TIMEOUT_S)
        except OSError:
            return None
        conn = LineConnection(sock)
        with self._cond:
            if self._closing:
                conn.close()
                return None
            self._dialing = conn
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            trainer_handshake(conn, token=token, client=self._client)
            conn.settimeout(IO_TIMEOUT_S)
            with self._cond:
                kept = self._outbox.open()
            self._send_snapshot(conn, kept)
        except VersionMismatch as exc:
            self._say_once(f"version-{exc.theirs}", f"[onthefly] {exc}")
            return self._abandon(conn)
        except HandshakeError as exc:
            if exc.reason == "bad-proof":
                self._say_once("proof", f"[onthefly] refused the program on tcp://{HOST}:{self.port}: {exc}")
            return self._abandon(conn)
        except (OSError, ProtocolError):  # timeouts, resets, garbage: try again later
            return self._abandon(conn)
        self._say(f"[onthefly] dashboard connected on tcp://{HOST}:{self.port}")
        with self._cond:
            self._dialing = None
            if self._closing:
                self._outbox.close()
                conn.close()
                return None
            self._conn = conn
            self._cond.notify_all()
        return conn

    def _abandon(self, conn: LineConnection) -> None:
        with self._cond:
            self._dialing = None
            self._outbox.close()
        conn.close()
        return None

    def _send_snapshot(self, conn: LineConnection, kept_state: Mapping[str, Any] | None) -> None:
        """Send the current state and runs, so a (re)connecting dashboard starts up to date."""
        try:
            snap = self._handle.snapshot()
            if not isinstance(snap, Mapping):
                raise TypeError(f"snapshot() returned {type(snap).__name__}, not a dict")
            messages = [Notification("state", snap["state"])] if snap.get("state") is not None else []
            messages += [Notification("run", dict(run)) for run in snap.get("runs") or ()]
            lines = [encode(m) for m in messages]
        except Exception as exc:
            self._say_once("snapshot", f"[onthefly] could not send the run's snapshot to the dashboard: {exc!r}")
            lines = []
        if not lines and kept_state is not None:
            lines = [encode(Notification("state", kept_state))]
        for line in lines:
            conn.send_line(line)

    def _hang_up(self, conn: LineConnection) -> None:
        with self._cond:
            was_up = self._conn is conn
            if was_up:
                self._conn = None
            self._outbox.close()
        conn.close()
        if was_up and not self._closed.is_set():
            self._say("[onthefly] dashboard disconnected; training goes on")

    # -- serving -----------------------------------------------------------

    def _serve(self, conn: LineConnection) -> None:
        """Read the dashboard's lines until the connection ends."""
        while not self._closed.is_set():
            try:
                line = conn.read_line()
            except TimeoutError:
                continue
            except (OSError, ProtocolError):  # closed, reset, or a line over the limit
                return
            try:
                message = decode(line)
            except MessageError as exc:
                self._send_answer(conn, ErrorResponse(exc.id, exc.code, str(exc)))
                continue
            if isinstance(message, Request):
                self._submit(conn, message)
            # The dashboard sends no notifications or replies in this version: ignored.

    def _submit(self, conn: LineConnection, request: Request) -> None:
        with self._cond:
            busy = self._pending >= MAX_PENDING
            if not busy:
                self._pending += 1
        if busy:
            self._send_answer(
                conn,
                ErrorResponse(
                    request.id,
                    BUSY,
                    f"{MAX_PENDING} requests are already waiting for an answer: wait for some before sending more",
                ),
            )
            return
        self._jobs.put((conn, request))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            conn, request = job
            try:
                response = dispatch(self._handle, request)
                self._send_line(conn, _answer_bytes(request, response))
            except Exception as exc:
                self._say_once(f"bug-{type(exc).__name__}", f"[onthefly] dashboard link error: {exc!r}")
            finally:
                with self._cond:
                    self._pending -= 1

    def _send_answer(self, conn: LineConnection, response: ErrorResponse) -> None:
        self._send_line(conn, encode(response))

    def _send_line(self, conn: LineConnection, data: bytes) -> bool:
        try:
            conn.send_line(data)
            return True
        except OSError:  # broken or stalled: the reader sees the close and reconnects
            conn.close()
            return False

    def _send_loop(self) -> None:
        """Send queued notifications at the pace :class:`Outbox` decides."""
        while True:
            with self._cond:
                while True:
                    conn, final = self._conn, self._closing
                    batch = self._outbox.take(time.monotonic(), flush=final) if conn else Batch([], (), None)
                    if batch.messages or batch.step_rows or final:
                        break
                    self._cond.wait(batch.wait)
            for message in batch.notifications():
                try:
                    data = encode(message)
                except (TypeError, ValueError) as exc:
                    text = f"[onthefly] dropped a {message.method!r} notification: {exc}"
                    self._say_once(f"encode-{message.method}", text)
                    continue
                if len(data) > MAX_LINE_BYTES:
                    text = f"[onthefly] dropped a {message.method!r} notification of {len(data)} bytes"
                    self._say_once(f"size-{message.method}", text)
                    continue
                if not self._send_line(conn, data):
                    break
            if final:
                return
