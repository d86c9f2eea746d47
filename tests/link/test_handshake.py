"""The handshake over real sockets: who is let in, who is refused, and what each side says."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from onthefly.link import client as client_module
from onthefly.link.framing import ConnectionClosed, LineConnection
from onthefly.link.handshake import (
    dashboard_hello,
    dashboard_proof,
    new_nonce,
    parse_trainer_hello,
    trainer_hello,
    trainer_proof,
    welcome,
)
from onthefly.link.token import token_path
from onthefly.protocol.codec import Request, decode
from onthefly.protocol.spec import HOST

from .dashboard import DashboardServer, dash, link_env, make_link, wait_until  # noqa: F401  (fixtures)

CONNECTED = "[onthefly] dashboard connected on tcp://127.0.0.1:{port}"


def raw_trainer(port: int) -> LineConnection:
    conn = LineConnection(socket.create_connection((HOST, port), timeout=5))
    return conn


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket, for playing a dashboard by hand."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(4)
    sock.settimeout(5)
    yield sock
    sock.close()


def accept(listener: socket.socket) -> LineConnection:
    sock, _ = listener.accept()
    conn = LineConnection(sock)
    conn.settimeout(5)
    return conn


def read_hello(conn: LineConnection) -> str:
    params = decode(conn.read_line()).params
    assert params["protocol"] == 1
    return params["nonce"]


def test_a_trainer_with_the_token_is_let_in_and_gets_the_snapshot_first(dash, make_link):
    trial = make_link(port=dash.port)
    trainer = dash.accept()
    assert trainer.client["session"] == "s-test" and trainer.client["run"] == "r1"
    assert {"version", "pid", "host", "project"} <= set(trainer.client)
    state = trainer.wait_notification("state")
    run = trainer.wait_notification("run")
    assert state.params["state"] == "running" and run.params["id"] == "r1"
    assert [n.method for n in trainer.notifications()][:2] == ["state", "run"]
    wait_until(lambda: trial.link.connected, what="link.connected")
    assert trial.printed == [CONNECTED.format(port=dash.port)]
    assert trainer.request("status")["state"] == "running"


def test_without_a_token_the_trainer_answers_nothing_and_connects_once_a_token_appears(link_env, make_link):
    with DashboardServer(write_token_file=False) as dash:
        trial = make_link(port=dash.port)
        assert dash.next_failure().startswith("closed")  # the trainer hung up after the hello
        assert not trial.link.connected and trial.printed == []
        path = token_path(dash.port)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dash.token)  # the token is re-read before every attempt
        trainer = dash.accept()
        assert trainer.request("status")["step"] >= 0


def test_a_trainer_with_a_wrong_proof_is_refused_by_the_dashboard(dash):
    conn = raw_trainer(dash.port)
    d_nonce = read_hello(conn)
    t_nonce = new_nonce()
    wrong = trainer_proof("ab" * 32, dashboard_nonce=d_nonce, trainer_nonce=t_nonce)
    conn.send(trainer_hello(nonce=t_nonce, proof=wrong, client={"session": "x"}))
    assert dash.next_failure().startswith("bad-proof")
    with pytest.raises(ConnectionClosed):
        conn.read_line()  # no welcome, just the close
    conn.close()


def test_a_replayed_trainer_proof_is_refused(dash):
    # A trainer holding the token completes a handshake; its messages are recorded.
    first = raw_trainer(dash.port)
    d1 = read_hello(first)
    t1 = new_nonce()
    p1 = trainer_proof(dash.token, dashboard_nonce=d1, trainer_nonce=t1)
    first.send(trainer_hello(nonce=t1, proof=p1, client={"session": "x"}))
    assert decode(first.read_line()).method == "welcome"
    dash.accept()
    # Someone without the token replays the recorded hello on a new connection.
    second = raw_trainer(dash.port)
    d2 = read_hello(second)
    assert d2 != d1
    second.send(trainer_hello(nonce=t1, proof=p1, client={"session": "x"}))
    assert dash.next_failure().startswith("bad-proof")
    with pytest.raises(ConnectionClosed):
        second.read_line()
    first.close()
    second.close()


def test_a_dashboard_with_a_wrong_welcome_is_refused_and_served_nothing(link_env, make_link):
    with DashboardServer(welcome_proof="0" * 64) as impostor:
        trial = make_link(port=impostor.port)
        trainer = impostor.accept()
        rid = trainer.send_request("status")
        assert trainer.wait_closed()
        with pytest.raises(AssertionError, match="no answer"):
            trainer.reply(rid, timeout=0.5)
        assert trainer.notifications() == []  # not even the snapshot
        impostor.accept()  # the trainer keeps trying, and says so only once
        assert not trial.link.connected
        refused = [line for line in trial.printed if "refused" in line]
        assert refused == [
            f"[onthefly] refused the program on tcp://127.0.0.1:{impostor.port}: the dashboard's welcome "
            "proof does not match the token: another program may be listening on the dashboard's port"
        ]


def test_a_replayed_dashboard_side_is_refused(link_env, listener, make_link):
    port = listener.getsockname()[1]
    token = "5c" * 32
    trial = make_link(port=port, token=token)
    # A real dashboard's side of a first connection, recorded.
    conn = accept(listener)
    d1 = new_nonce()
    conn.send(dashboard_hello(d1))
    _, t1, _, _ = parse_trainer_hello(decode(conn.read_line()))
    recorded = dashboard_proof(token, trainer_nonce=t1, dashboard_nonce=d1)
    conn.send(welcome(recorded))
    wait_until(lambda: trial.link.connected, what="the first connection")
    conn.close()
    # The same hello and welcome played again on the next connection.
    again = accept(listener)
    again.send(dashboard_hello(d1))
    _, t2, _, _ = parse_trainer_hello(decode(again.read_line()))
    assert t2 != t1
    again.send(welcome(recorded))
    again.send(Request(1, "status", {}))
    with pytest.raises(ConnectionClosed):
        again.read_line()  # closed, and the status request was not answered
    assert not trial.link.connected
    assert any("refused" in line for line in trial.printed)
    again.close()


def test_a_dashboard_of_another_version_gets_told_and_the_trainer_says_it_once(link_env, make_link):
    with DashboardServer(protocol_version=2) as newer:
        trial = make_link(port=newer.port)
        assert newer.next_failure() == "version: the training process speaks protocol 1, this dashboard speaks 2"
        assert newer.next_failure().startswith("version")  # it keeps trying
        assert trial.printed == [
            "[onthefly] dashboard speaks protocol 2, this onthefly speaks 1: "
            "update the OnTheFly extension or onthefly-ai"
        ]
        assert not trial.link.connected


def test_a_silent_dashboard_is_given_up_after_the_handshake_timeout(link_env, listener, make_link, monkeypatch):
    monkeypatch.setattr(client_module, "HANDSHAKE_TIMEOUT_S", 0.1)
    make_link(port=listener.getsockname()[1], token="5c" * 32)
    first = accept(listener)
    first.send(dashboard_hello(new_nonce()))
    decode(first.read_line())  # the trainer's hello; no welcome follows
    with pytest.raises(ConnectionClosed):
        first.read_line()
    second = accept(listener)  # and it tries again
    first.close()
    second.close()


def test_a_trainer_that_skips_the_handshake_is_dropped(dash):
    conn = raw_trainer(dash.port)
    read_hello(conn)
    conn.send(Request(1, "status", {}))
    assert dash.next_failure().startswith("bad-message")
    conn.close()


def test_a_malformed_token_file_is_reported_once_without_its_content_and_treated_as_none(link_env, make_link):
    with DashboardServer(write_token_file=False) as dash:
        path = token_path(dash.port)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dash.token[:-1] + "g")
        trial = make_link(port=dash.port)
        assert dash.next_failure().startswith("closed")
        assert dash.next_failure().startswith("closed")
        assert trial.printed == [
            "[onthefly] dashboard token is not 64 hex digits (got 64 characters): restart the dashboard "
            "to write a new one, or fix $ONTHEFLY_TOKEN"
        ]
