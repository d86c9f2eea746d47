"""A dashboard for tests: a real TCP server on 127.0.0.1 speaking docs/protocol.md.

It listens on a free port (or a given one), writes its token where training
processes look for it, runs the dashboard side of the handshake, sends
requests and waits for their answers, and collects notifications. It doubles
as a reference for other dashboards: ``_handshake`` is the whole dashboard
side of the handshake.

Example:
    with DashboardServer() as dash:
        link = DashboardLink(handle, port=dash.port, client_info={...})
        link.start()
        trainer = dash.accept()
        assert trainer.request("status")["state"] == "running"
"""

from __future__ import annotations

import itertools
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onthefly.link.client import DashboardLink
from onthefly.link.framing import ConnectionClosed, FrameTooLarge, LineConnection
from onthefly.link.handshake import (
    HandshakeError,
    dashboard_hello,
    dashboard_proof,
    new_nonce,
    parse_trainer_hello,
    proof_matches,
    trainer_proof,
    welcome,
)
from onthefly.link.token import remove_token, write_token
from onthefly.protocol.codec import ErrorResponse, Message, MessageError, Notification, Request, Response
from onthefly.protocol.spec import HOST, PORT_ENV, PROTOCOL_VERSION, TOKEN_ENV

from .handle import CounterHandle

__all__ = [
    "DashboardServer",
    "TrainerConnection",
    "RpcError",
    "Trial",
    "link_env",
    "dash",
    "make_link",
    "wait_until",
]

TIMEOUT_S = 5.0


def wait_until(predicate: Callable[[], Any], *, timeout: float = TIMEOUT_S, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def link_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config folder for token files, and no link variables from the outside."""
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("APPDATA", str(config))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(PORT_ENV, raising=False)
    return config / "onthefly"


@dataclass
class Trial:
    """A started DashboardLink, the handle it serves, and what it printed."""

    link: DashboardLink
    handle: CounterHandle
    printed: list[str]


@pytest.fixture
def make_link(link_env: Path) -> Iterator[Callable[..., Trial]]:
    """Start DashboardLinks over running CounterHandles; all are closed after the test."""
    made: list[Trial] = []

    def make(*, port: int, handle: CounterHandle | None = None, **options: Any) -> Trial:
        handle = handle or CounterHandle().start()
        printed: list[str] = []
        info = {"session": handle.session, "project": handle.project, "run": handle.run}
        link = DashboardLink(handle, port=port, client_info=info, printer=printed.append, **options)
        handle.link = link
        link.start()
        made.append(Trial(link, handle, printed))
        return made[-1]

    yield make
    for trial in made:
        trial.link.close()
        trial.handle.finish()


@pytest.fixture
def dash(link_env: Path) -> Iterator[DashboardServer]:
    """A test dashboard on a free port, its token written in the test's config folder."""
    server = DashboardServer()
    yield server
    server.close()


class RpcError(Exception):
    """An error answer to a request."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class TrainerConnection:
    """One authenticated training process, as the dashboard sees it."""

    _ids = itertools.count(1)

    def __init__(self, conn: LineConnection, client: dict[str, Any]):
        self.conn = conn
        self.client = client
        self.unanswerable: list[ErrorResponse] = []  # error answers without an id
        self.bad_lines: list[str] = []  # lines from the trainer that break the protocol
        self._cond = threading.Condition()
        self._replies: dict[Any, Response | ErrorResponse] = {}
        self._notes: list[Notification] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="test-dashboard-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message: Message = self.conn.read_message()
            except MessageError as exc:
                self.bad_lines.append(str(exc))
                continue
            except (OSError, ConnectionClosed, FrameTooLarge):
                break
            with self._cond:
                if isinstance(message, Notification):
                    self._notes.append(message)
                elif isinstance(message, (Response, ErrorResponse)) and message.id is not None:
                    self._replies[message.id] = message
                elif isinstance(message, ErrorResponse):
                    self.unanswerable.append(message)
                else:
                    self.bad_lines.append(f"unexpected {message!r}")
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def send_request(self, method: str, params: Any = None, *, id: Any = None) -> Any:
        """Send a request without waiting; returns its id."""
        rid = id if id is not None else f"d{next(self._ids)}"
        self.conn.send(Request(rid, method, {} if params is None else params))
        return rid

    def reply(self, rid: Any, *, timeout: float = TIMEOUT_S) -> Response | ErrorResponse:
        """The answer to request ``rid``; AssertionError when none comes."""
        with self._cond:
            ok = self._cond.wait_for(lambda: rid in self._replies or self._closed, timeout)
            if rid in self._replies:
                return self._replies.pop(rid)
        raise AssertionError(f"no answer to request {rid!r}" + (" (connection closed)" if ok else ""))

    def request(self, method: str, params: Any = None, *, timeout: float = TIMEOUT_S) -> Any:
        """Send a request and return its result; :class:`RpcError` for an error answer."""
        answer = self.reply(self.send_request(method, params), timeout=timeout)
        if isinstance(answer, ErrorResponse):
            raise RpcError(answer.code, answer.message, answer.data)
        return answer.result

    def send_raw(self, data: bytes) -> bool:
        """Write bytes as they are; False when the connection broke meanwhile."""
        try:
            self.conn.send_line(data)
            return True
        except OSError:
            return False

    def notifications(self, method: str | None = None) -> list[Notification]:
        with self._cond:
            return [n for n in self._notes if method is None or n.method == method]

    def wait_notification(
        self, method: str, *, where: Callable[[dict], bool] | None = None, timeout: float = TIMEOUT_S
    ) -> Notification:
        """The first notification ``method`` whose params satisfy ``where``."""

        def find() -> Notification | None:
            for n in self._notes:
                if n.method == method and (where is None or where(n.params)):
                    return n
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self._closed, timeout)
            found = find()
        if found is None:
            raise AssertionError(f"no {method!r} notification came")
        return found

    def wait_closed(self, *, timeout: float = TIMEOUT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)

    def close(self) -> None:
        self.conn.close()


class DashboardServer:
    """A listening test dashboard.

    Args:
        port: the port to listen on; 0 picks a free one.
        write_token_file: write a fresh token where training processes read
            it (else the token exists only in :attr:`token`).
        protocol_version: the version announced in the hello.
        welcome_proof: send this proof instead of the right one (to play an
            impostor).
        greeting: bytes sent instead of the hello (to play a hostile program).
        handshake_timeout: seconds allowed for each handshake step.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        write_token_file: bool = True,
        protocol_version: int = PROTOCOL_VERSION,
        welcome_proof: str | None = None,
        greeting: bytes | None = None,
        handshake_timeout: float = TIMEOUT_S,
    ):
        self.protocol_version = protocol_version
        self.welcome_proof = welcome_proof
        self.greeting = greeting
        self.handshake_timeout = handshake_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, port))
        self._listener.listen(8)
        self._listener.settimeout(0.05)  # so close() is seen by the accept loop
        self.port: int = self._listener.getsockname()[1]
        self._wrote_token = write_token_file
        self.token = write_token(self.port) if write_token_file else secrets.token_hex(32)
        self.failures: list[str] = []
        self._cond = threading.Condition()
        self._accepted: list[TrainerConnection] = []
        self._all: list[TrainerConnection] = []
        self._raw: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="test-dashboard", daemon=True)
        self._thread.start()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                if self._closed:
                    return
                continue
            except OSError:
                return
            with self._cond:
                if self._closed:
                    sock.close()
                    return
                self._raw.append(sock)
            threading.Thread(target=self._handshake, args=(sock,), daemon=True).start()

    def _fail(self, reason: str, conn: LineConnection) -> None:
        conn.close()
        with self._cond:
            self.failures.append(reason)
            self._cond.notify_all()

    def _handshake(self, sock: socket.socket) -> None:
        """The dashboard side of the handshake (docs/protocol.md, "Handshake")."""
        conn = LineConnection(sock)
        conn.settimeout(self.handshake_timeout)
        try:
            if self.greeting is not None:
                conn.send_line(self.greeting)
                conn.read_line()  # a training process answers nothing to this
                return self._fail("answered a hostile greeting", conn)
            d_nonce = new_nonce()
            conn.send(dashboard_hello(d_nonce, protocol=self.protocol_version))
            version, t_nonce, proof, client = parse_trainer_hello(conn.read_message())
            if version != self.protocol_version:
                return self._fail(
                    f"version: the training process speaks protocol {version}, "
                    f"this dashboard speaks {self.protocol_version}",
                    conn,
                )
            expected = trainer_proof(self.token, dashboard_nonce=d_nonce, trainer_nonce=t_nonce)
            if not proof_matches(expected, proof):
                return self._fail("bad-proof: the training process's proof does not match the token", conn)
            proof = dashboard_proof(self.token, trainer_nonce=t_nonce, dashboard_nonce=d_nonce)
            conn.send(welcome(self.welcome_proof or proof))
        except HandshakeError as exc:
            return self._fail(f"{exc.reason}: {exc}", conn)
        except MessageError as exc:
            return self._fail(f"bad-message: {exc}", conn)
        except (ConnectionClosed, FrameTooLarge, OSError) as exc:
            return self._fail(f"closed: {type(exc).__name__}: {exc}", conn)
        conn.settimeout(None)
        trainer = TrainerConnection(conn, client)
        with self._cond:
            self._accepted.append(trainer)
            self._all.append(trainer)
            self._cond.notify_all()

    def accept(self, *, timeout: float = TIMEOUT_S) -> TrainerConnection:
        """The next training process that completed the handshake."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._accepted, timeout):
                raise AssertionError(f"no training process connected within {timeout} s; failures: {self.failures}")
            return self._accepted.pop(0)

    def next_failure(self, *, timeout: float = TIMEOUT_S) -> str:
        """The reason of the next refused connection (in order of arrival)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.failures, timeout):
                raise AssertionError(f"no connection failed within {timeout} s")
            return self.failures.pop(0)

    def close(self) -> None:
        """Stop at once, as a killed dashboard would: listener, connections, token file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        try:  # stops listening at once, even while the accept thread is inside accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(TIMEOUT_S)
        for sock in self._raw:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._wrote_token:
            remove_token(self.port, token=self.token)
