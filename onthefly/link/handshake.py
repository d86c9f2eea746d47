"""The link's mutual authentication: hello, hello, welcome.

1. dashboard -> ``hello {protocol, nonce: D}``
2. trainer   -> ``hello {protocol, nonce: T, proof: HMAC(token, "onthefly-trainer:" + D + ":" + T), client}``
3. dashboard -> ``welcome {proof: HMAC(token, "onthefly-dashboard:" + T + ":" + D)}``

HMAC-SHA256 keyed with the token's 32 raw bytes; nonces are 16 random bytes
in hex; proofs are hex. Each side proves it holds the token over a nonce the
other side chose for this connection, so a recorded proof is worth nothing on
the next one, and the two prefixes keep a trainer's proof from passing as a
dashboard's.

The proofs and message checks are pure functions; :func:`trainer_handshake`
runs the training side over a :class:`~onthefly.link.framing.LineConnection`.

Example:
    >>> token = "11" * 32
    >>> trainer_proof(token, dashboard_nonce="aa" * 16, trainer_nonce="bb" * 16)[:16]
    '0f4b6acf8c6120fc'
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from onthefly.errors import ProtocolError
from onthefly.link.framing import LineConnection
from onthefly.link.token import token_key
from onthefly.protocol.codec import Message, Notification
from onthefly.protocol.spec import HELLO, PROTOCOL_VERSION, WELCOME

__all__ = [
    "HandshakeError",
    "VersionMismatch",
    "new_nonce",
    "trainer_proof",
    "dashboard_proof",
    "proof_matches",
    "dashboard_hello",
    "trainer_hello",
    "welcome",
    "parse_dashboard_hello",
    "parse_trainer_hello",
    "parse_welcome",
    "trainer_handshake",
    "version_message",
]

NONCE_BYTES = 16
TRAINER_PREFIX = "onthefly-trainer:"
DASHBOARD_PREFIX = "onthefly-dashboard:"
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_PROOF_RE = re.compile(r"[0-9a-f]{64}")


class HandshakeError(ProtocolError):
    """The handshake failed; the connection is closed.

    ``reason`` is one of ``no-token``, ``bad-message``, ``bad-proof``,
    ``version``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class VersionMismatch(HandshakeError):
    """The other side speaks another protocol version."""

    def __init__(self, message: str, *, theirs: Any) -> None:
        super().__init__(message, reason="version")
        self.theirs = theirs


def version_message(*, peer: str, theirs: Any, ours: int = PROTOCOL_VERSION) -> str:
    """The sentence both sides show when versions differ.

    Example:
        >>> version_message(peer="dashboard", theirs=2)
        'dashboard speaks protocol 2, this onthefly speaks 1: update the OnTheFly extension or onthefly-ai'
    """
    return f"{peer} speaks protocol {theirs}, this onthefly speaks {ours}: update the OnTheFly extension or onthefly-ai"


def new_nonce() -> str:
    """16 random bytes as 32 lowercase hex digits."""
    return secrets.token_hex(NONCE_BYTES)


def _hmac(token: str, message: str) -> str:
    return hmac.new(token_key(token), message.encode("utf-8"), hashlib.sha256).hexdigest()


def trainer_proof(token: str, *, dashboard_nonce: str, trainer_nonce: str) -> str:
    """The training process's proof: HMAC(token, "onthefly-trainer:" + D + ":" + T), hex.

    Args:
        token: the dashboard's token, 64 hex digits.
        dashboard_nonce: D, from the dashboard's hello.
        trainer_nonce: T, the training process's own nonce.

    Returns:
        64 lowercase hex digits.
    """
    return _hmac(token, f"{TRAINER_PREFIX}{dashboard_nonce}:{trainer_nonce}")


def dashboard_proof(token: str, *, trainer_nonce: str, dashboard_nonce: str) -> str:
    """The dashboard's proof: HMAC(token, "onthefly-dashboard:" + T + ":" + D), hex.

    Args:
        token: the dashboard's token, 64 hex digits.
        trainer_nonce: T, from the training process's hello.
        dashboard_nonce: D, the dashboard's own nonce.

    Returns:
        64 lowercase hex digits.
    """
    return _hmac(token, f"{DASHBOARD_PREFIX}{trainer_nonce}:{dashboard_nonce}")


def proof_matches(expected: str, given: Any) -> bool:
    """Compare proofs in constant time; anything but a string never matches."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def dashboard_hello(nonce: str, *, protocol: int = PROTOCOL_VERSION) -> Notification:
    """Step 1, sent by the dashboard."""
    return Notification(HELLO, {"protocol": protocol, "nonce": nonce})


def trainer_hello(*, nonce: str, proof: str, client: dict[str, Any], protocol: int = PROTOCOL_VERSION) -> Notification:
    """Step 2, sent by the training process."""
    return Notification(HELLO, {"protocol": protocol, "nonce": nonce, "proof": proof, "client": client})


def welcome(proof: str) -> Notification:
    """Step 3, sent by the dashboard."""
    return Notification(WELCOME, {"proof": proof})


def _params(message: Message, method: str, step: str) -> dict[str, Any]:
    if not isinstance(message, Notification) or message.method != method or not isinstance(message.params, dict):
        raise HandshakeError(
            f"expected the {step} notification '{method}', got {type(message).__name__} "
            f"{getattr(message, 'method', '')!r}",
            reason="bad-message",
        )
    return message.params


def _protocol(params: dict[str, Any], peer: str) -> int:
    version = params.get("protocol")
    if not isinstance(version, int) or isinstance(version, bool):
        raise HandshakeError(f"the {peer}'s hello has no integer 'protocol': got {version!r}", reason="bad-message")
    return version


def _nonce(params: dict[str, Any], peer: str) -> str:
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise HandshakeError(
            f"the {peer}'s nonce must be 32 lowercase hex digits, got {str(nonce)[:40]!r}", reason="bad-message"
        )
    return nonce


def parse_dashboard_hello(message: Message) -> tuple[int, str]:
    """Step 1 as the training process reads it.

    Returns:
        ``(protocol, nonce)``; the version is returned, not checked, so the
        caller can still answer with its own.

    Raises:
        HandshakeError: reason ``bad-message``.
    """
    params = _params(message, HELLO, "dashboard's")
    return _protocol(params, "dashboard"), _nonce(params, "dashboard")


def parse_trainer_hello(message: Message) -> tuple[int, str, str, dict[str, Any]]:
    """Step 2 as the dashboard reads it.

    Returns:
        ``(protocol, nonce, proof, client)``.

    Raises:
        HandshakeError: reason ``bad-message``.
    """
    params = _params(message, HELLO, "training process's")
    version = _protocol(params, "training process")
    nonce = _nonce(params, "training process")
    proof = params.get("proof")
    client = params.get("client")
    if not isinstance(proof, str) or not _PROOF_RE.fullmatch(proof):
        raise HandshakeError("the training process's proof must be 64 lowercase hex digits", reason="bad-message")
    if not isinstance(client, dict):
        raise HandshakeError("the training process's hello has no 'client' object", reason="bad-message")
    return version, nonce, proof, client


def parse_welcome(message: Message) -> str:
    """Step 3 as the training process reads it.

    Returns:
        The dashboard's proof (format unchecked: :func:`proof_matches` decides).

    Raises:
        HandshakeError: reason ``bad-message``.
    """
    return _params(message, WELCOME, "dashboard's").get("proof")


def trainer_handshake(conn: LineConnection, *, token: str | None, client: dict[str, Any]) -> None:
    """Run the training side of the handshake on a fresh connection.

    The socket's timeout bounds each step. Without a token the dashboard's
    hello is read and nothing is answered. On a version mismatch the
    training process still sends its hello (so the dashboard can tell its
    user which side to update) and then fails.

    Args:
        conn: the connection to the dashboard.
        token: the dashboard's token, or None when there is none.
        client: who this training process is (version, pid, session, ...).

    Raises:
        HandshakeError: reason ``no-token``, ``bad-message`` or ``bad-proof``.
        VersionMismatch: the dashboard speaks another version.
        onthefly.protocol.codec.MessageError: a line that is no protocol message.
        OSError, TimeoutError, ConnectionClosed, FrameTooLarge: the connection failed.
    """
    version, d_nonce = parse_dashboard_hello(conn.read_message())
    if token is None:
        raise HandshakeError("no dashboard token: not answering the dashboard's hello", reason="no-token")
    t_nonce = new_nonce()
    proof = trainer_proof(token, dashboard_nonce=d_nonce, trainer_nonce=t_nonce)
    conn.send(trainer_hello(nonce=t_nonce, proof=proof, client=client))
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(version_message(peer="dashboard", theirs=version), theirs=version)
    given = parse_welcome(conn.read_message())
    expected = dashboard_proof(token, trainer_nonce=t_nonce, dashboard_nonce=d_nonce)
    if not proof_matches(expected, given):
        raise HandshakeError(
            "the dashboard's welcome proof does not match the token: another program may be listening "
            "on the dashboard's port",
            reason="bad-proof",
        )
