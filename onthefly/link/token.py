"""The dashboard's token: the shared secret of the link's handshake.

A dashboard listening on a port writes a fresh random token to
``<config>/onthefly/dashboard-<port>.token`` (mode 0600); training processes
read it before every connection attempt, so a restarted dashboard with a new
token is picked up. ``$ONTHEFLY_TOKEN`` overrides the file.

Example:
    >>> token = write_token(47621)            # the dashboard, when it starts listening
    >>> read_token(47621) == token            # the training process
    True
    >>> remove_token(47621, token=token)      # the dashboard, when it stops
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from onthefly import paths
from onthefly.errors import ConfigError
from onthefly.protocol.spec import TOKEN_ENV

__all__ = ["token_path", "write_token", "read_token", "remove_token", "token_key"]

TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"[0-9a-fA-F]{64}")


def token_path(port: int, *, directory: Path | None = None) -> Path:
    """Where the dashboard on ``port`` keeps its token.

    Args:
        port: the dashboard's TCP port.
        directory: the config folder; :func:`onthefly.paths.config_dir` when None.

    Returns:
        ``<directory>/dashboard-<port>.token``.
    """
    return (directory if directory is not None else paths.config_dir()) / f"dashboard-{int(port)}.token"


def token_key(token: str) -> bytes:
    """The HMAC key of a token: its 32 raw bytes.

    Args:
        token: 64 hex digits.

    Returns:
        The decoded bytes.

    Raises:
        ConfigError: the token is not 64 hex digits.

    Example:
        >>> len(token_key("00" * 32))
        32
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        size = len(token) if isinstance(token, str) else type(token).__name__
        raise ConfigError(  # the value itself is not shown: it may be most of a secret
            f"dashboard token is not 64 hex digits (got {size} characters): restart the dashboard "
            f"to write a new one, or fix ${TOKEN_ENV}"
        )
    return bytes.fromhex(token)


def write_token(port: int, *, directory: Path | None = None) -> str:
    """Create a fresh token for the dashboard on ``port`` and write it, mode 0600.

    The file is written under a temporary name and renamed, so a reader sees
    the old token or the new one, never a part.

    Args:
        port: the port the dashboard listens on.
        directory: the config folder; :func:`onthefly.paths.config_dir` when None.

    Returns:
        The token, 64 lowercase hex digits.

    Example:
        >>> token = write_token(47621)
    """
    path = token_path(port, directory=directory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_hex(TOKEN_BYTES)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return token


def read_token(port: int, *, directory: Path | None = None) -> str | None:
    """The token of the dashboard on ``port``: ``$ONTHEFLY_TOKEN``, else the token file.

    Args:
        port: the dashboard's port.
        directory: the config folder; :func:`onthefly.paths.config_dir` when None.

    Returns:
        The token, or None when neither the variable nor the file exists.

    Raises:
        ConfigError: the variable or the file holds something other than 64
            hex digits.

    Example:
        >>> read_token(47621) is None or len(read_token(47621)) == 64
        True
    """
    env = os.environ.get(TOKEN_ENV)
    if env:
        token = env.strip()
    else:
        try:
            token = token_path(port, directory=directory).read_text(encoding="ascii", errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
    token_key(token)
    return token.lower()


def remove_token(port: int, *, token: str, directory: Path | None = None) -> bool:
    """Delete the token file of ``port`` if it still holds ``token``.

    A dashboard calls this when it stops listening; a newer dashboard's token
    on the same port is left alone.

    Args:
        port: the dashboard's port.
        token: the token this dashboard wrote.
        directory: the config folder; :func:`onthefly.paths.config_dir` when None.

    Returns:
        True when the file was removed.
    """
    path = token_path(port, directory=directory)
    try:
        current = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return False
    if current.lower() != token.lower():
        return False
    path.unlink(missing_ok=True)
    return True
