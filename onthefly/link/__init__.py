"""The dashboard link: JSON-RPC 2.0 over a loopback socket (see docs/protocol.md)."""

from __future__ import annotations

from onthefly.link.client import DashboardLink
from onthefly.link.handshake import HandshakeError, VersionMismatch
from onthefly.link.token import read_token, remove_token, token_path, write_token

__all__ = [
    "DashboardLink",
    "HandshakeError",
    "VersionMismatch",
    "read_token",
    "remove_token",
    "token_path",
    "write_token",
]
