"""Lines over a real socket pair: splitting, the size limit, the end of the stream."""

from __future__ import annotations

import socket
import threading

import pytest

from onthefly.link.framing import ConnectionClosed, FrameTooLarge, LineConnection, LineReader
from onthefly.protocol.codec import Notification, Request


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_lines_are_split_across_and_within_chunks(pair):
    a, b = pair
    reader = LineReader(a.recv, chunk=3)
    b.sendall(b"first\nsec")
    b.sendall(b"ond\n\n  \nthird\n")
    assert [reader.read_line() for _ in range(3)] == [b"first", b"second", b"third"]
    assert reader.buffered == 0


def test_a_line_at_the_limit_passes_and_one_past_it_is_refused(pair):
    a, b = pair
    reader = LineReader(a.recv, max_bytes=10, chunk=4)
    b.sendall(b"0123456789\n" + b"0123456789A\n")
    assert reader.read_line() == b"0123456789"
    with pytest.raises(FrameTooLarge, match="over the limit of 10"):
        reader.read_line()


def test_an_endless_line_is_refused_without_buffering_it_whole(pair):
    a, b = pair
    reader = LineReader(a.recv, max_bytes=1000, chunk=64)
    sender = threading.Thread(target=lambda: b.sendall(b"x" * 100_000), daemon=True)
    sender.start()
    with pytest.raises(FrameTooLarge, match="without a newline"):
        reader.read_line()
    assert reader.buffered <= 1000 + 64


def test_the_end_of_the_stream_is_reported_with_what_was_dropped(pair):
    a, b = pair
    reader = LineReader(a.recv)
    b.sendall(b"whole\npart")
    b.shutdown(socket.SHUT_WR)
    assert reader.read_line() == b"whole"
    with pytest.raises(ConnectionClosed, match="4 bytes of an unfinished line dropped"):
        reader.read_line()


def test_a_read_timeout_keeps_what_was_buffered(pair):
    a, b = pair
    conn = LineConnection(a)
    conn.settimeout(0.01)
    b.sendall(b'{"jsonrpc":"2.0","method":"lo')
    with pytest.raises(TimeoutError):
        conn.read_line()
    b.sendall(b'g","params":{}}\n')
    assert conn.read_message() == Notification("log", {})


def test_messages_sent_from_many_threads_arrive_whole(pair):
    a, b = pair
    sender, receiver = LineConnection(a), LineConnection(b)
    big = "y" * 50_000

    def send(i: int) -> None:
        for j in range(20):
            sender.send(Request(f"{i}-{j}", "query", {"sql": big}))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    got = [receiver.read_message() for _ in range(80)]
    for t in threads:
        t.join()
    assert sorted(m.id for m in got) == sorted(f"{i}-{j}" for i in range(4) for j in range(20))
    assert all(m.params["sql"] == big for m in got)


def test_close_wakes_a_blocked_reader_and_is_idempotent(pair):
    a, _ = pair
    conn = LineConnection(a)
    errors = []

    def read():
        try:
            conn.read_line()
        except (ConnectionClosed, OSError) as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    conn.close()
    conn.close()
    reader.join(5)
    assert not reader.is_alive() and len(errors) == 1 and conn.closed
