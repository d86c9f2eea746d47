"""Lines over a socket: the link's framing.

One message per line of UTF-8 JSON. A line longer than
:data:`~onthefly.protocol.spec.MAX_LINE_BYTES` is never buffered whole: the reader
stops at the limit and raises :class:`FrameTooLarge`, and the connection is
closed. Blank lines are skipped.

Example:
    >>> import socket
    >>> a, b = socket.socketpair()
    >>> conn = LineConnection(a)
    >>> b.sendall(b'{"jsonrpc":"2.0","method":"log","params":{}}\\n')
    >>> conn.read_message()
    Notification(method='log', params={})
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from onthefly.errors import ProtocolError
from onthefly.protocol.codec import Message, decode, encode
from onthefly.protocol.spec import MAX_LINE_BYTES

__all__ = ["FrameTooLarge", "ConnectionClosed", "LineReader", "LineConnection"]

CHUNK_BYTES = 64 * 1024


class FrameTooLarge(ProtocolError):
    """A line went past the size limit; the connection must be closed."""


class ConnectionClosed(ProtocolError):
    """The other side closed the connection."""


class LineReader:
    """Splits a byte stream into lines, holding at most ``max_bytes`` plus one chunk.

    Args:
        recv: reads up to n bytes; returns b"" at the end of the stream. It
            may raise (a socket timeout, for example): the bytes read so far
            stay buffered and the next call goes on from there.
        max_bytes: the longest line accepted, newline excluded.
        chunk: bytes asked of ``recv`` at a time.
    """

    def __init__(self, recv: Callable[[int], bytes], *, max_bytes: int = MAX_LINE_BYTES, chunk: int = CHUNK_BYTES):
        self._recv = recv
        self._max = max_bytes
        self._chunk = chunk
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline

    @property
    def buffered(self) -> int:
        """Bytes read but not yet returned."""
        return len(self._buf)

    def read_line(self) -> bytes:
        """The next non-blank line, without its newline.

        Raises:
            FrameTooLarge: the line is longer than ``max_bytes``.
            ConnectionClosed: the stream ended (a partial last line is dropped).
        """
        while True:
            i = self._buf.find(b"\n", self._scanned)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                self._scanned = 0
                if len(line) > self._max:
                    raise FrameTooLarge(
                        f"a line of {len(line)} bytes is over the limit of {self._max}: "
                        "the connection is closed; send smaller messages"
                    )
                if line.strip():
                    return line
                continue
            self._scanned = len(self._buf)
            if len(self._buf) > self._max:
                raise FrameTooLarge(
                    f"a line went past {self._max} bytes without a newline: the connection is closed; "
                    "send smaller messages"
                )
            data = self._recv(self._chunk)
            if not data:
                raise ConnectionClosed(
                    "the other side closed the connection"
                    + (f" ({len(self._buf)} bytes of an unfinished line dropped)" if self._buf else "")
                )
            self._buf += data


class LineConnection:
    """A socket carrying protocol messages, one per line.

    Reads happen on one thread; :meth:`send` may be called from any thread
    (writes are serialised by a lock). The socket's timeout applies to both:
    a read that times out raises :class:`TimeoutError` and may simply be
    retried; a send that times out leaves the stream unusable, so the caller
    closes the connection.

    Args:
        sock: a connected stream socket.
        max_bytes: the longest line accepted.
    """

    def __init__(self, sock: socket.socket, *, max_bytes: int = MAX_LINE_BYTES):
        self.sock = sock
        self.max_bytes = max_bytes
        self._reader = LineReader(sock.recv, max_bytes=max_bytes)
        self._write_lock = threading.Lock()
        self._closed = False

    def settimeout(self, seconds: float | None) -> None:
        """Set the socket's timeout for reads and sends."""
        self.sock.settimeout(seconds)

    def read_line(self) -> bytes:
        """The next line (see :meth:`LineReader.read_line`)."""
        return self._reader.read_line()

    def read_message(self) -> Message:
        """The next line, decoded.

        Raises:
            onthefly.protocol.codec.MessageError: the line is not a protocol message.
            FrameTooLarge, ConnectionClosed: see :meth:`LineReader.read_line`.
        """
        return decode(self._reader.read_line())

    def send(self, message: Message) -> None:
        """Encode and write one message (see :meth:`send_line`)."""
        self.send_line(encode(message))

    def send_line(self, data: bytes) -> None:
        """Write bytes that end with a newline.

        Raises:
            OSError: the connection broke or the send timed out.
        """
        with self._write_lock:
            self.sock.sendall(data)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Shut the socket down (waking a blocked reader) and close it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
