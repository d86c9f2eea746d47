"""Hostile and malformed input from the dashboard side never stops training, and the link recovers."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onthefly.errors import ProtocolError
from onthefly.link.framing import LineConnection
from onthefly.link.handshake import HandshakeError, trainer_handshake
from onthefly.protocol import codec, spec

from .dashboard import DashboardServer, TrainerConnection, dash, link_env, make_link, wait_until  # noqa: F401

HUGE = spec.MAX_LINE_BYTES + 1
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Messages shaped like the protocol's, with any values. pause and stop are left out:
# they change training on purpose.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0"]) | json_values,
        "id": st.integers() | st.text(max_size=6) | json_values,
        "method": st.sampled_from(["status", "test", "checkpoint", "query", "report", "slice", "hello", "welcome"])
        | json_values,
        "params": st.dictionaries(st.sampled_from(["sql", "k", "split", "epoch", "name", "limit"]), json_values)
        | json_values,
        "result": json_values,
        "error": json_values,
    },
)


def status(trainer: TrainerConnection) -> dict:
    answer = trainer.reply(trainer.send_request("status", id=f"probe-{uuid.uuid4()}"))
    assert isinstance(answer, codec.Response), answer
    return answer.result


class Session:
    """One training link and the connection the test dashboard holds to it."""

    def __init__(self, dash: DashboardServer, trial):
        self.dash, self.trial = dash, trial
        self.trainer = dash.accept()

    def probe(self) -> dict:
        """status on the current connection, or on the next one when the link dropped this one."""
        try:
            return status(self.trainer)
        except AssertionError:
            assert self.trainer.wait_closed(), "no answer, yet the connection is open"
            self.trainer = self.dash.accept()
            return status(self.trainer)


@pytest.fixture
def session(dash, make_link) -> Session:
    return Session(dash, make_link(port=dash.port))


def assert_training_goes_on(session: Session) -> None:
    handle = session.trial.handle
    step = handle.step
    wait_until(lambda: handle.step > step + 3, what="training to go on")
    assert handle.alive and session.trainer.bad_lines == []
    assert not [line for line in session.trial.printed if "link error" in line]


def test_random_bytes_get_error_answers_and_change_nothing(session):
    first = session.trainer

    @SETTINGS
    @given(st.binary(max_size=300))
    def send(data):
        session.trainer.send_raw(data + b"\n")
        assert status(session.trainer)["state"] == "running"

    send()
    assert session.trainer is first and not first.closed  # lines under the limit never close it
    assert first.unanswerable and {e.code for e in first.unanswerable} <= {spec.PARSE_ERROR, spec.INVALID_REQUEST}
    assert_training_goes_on(session)


def test_json_of_the_wrong_shape_gets_error_answers_and_changes_nothing(session):
    first = session.trainer

    @SETTINGS
    @given(shaped | json_values)
    def send(value):
        session.trainer.send_raw(json.dumps(value).encode("utf-8") + b"\n")
        assert status(session.trainer)["state"] in ("running", "testing")

    send()
    assert session.trainer is first and not first.closed
    assert {e.code for e in first.unanswerable} == {spec.INVALID_REQUEST}
    assert_training_goes_on(session)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"st\xffatus"}', spec.PARSE_ERROR),
        (b"\xc3\x28\xa0\xa1", spec.PARSE_ERROR),
        (b"{" * 50_000, spec.PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"status"}]', spec.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":null,"method":"status"}', spec.INVALID_REQUEST),
    ],
)
def test_malformed_lines_are_answered_with_their_code_and_a_null_id(session, line, code):
    session.trainer.send_raw(line + b"\n")
    wait_until(lambda: session.trainer.unanswerable, what="the error answer")
    assert [e.code for e in session.trainer.unanswerable] == [code]
    assert session.probe()["state"] == "running"


def test_a_line_over_16_mib_closes_the_connection_and_the_link_reconnects(session):
    first = session.trainer
    first.send_raw(b"a" * HUGE)  # no newline: the link must not wait for one
    assert first.wait_closed()
    assert session.probe()["state"] == "running"
    assert session.trainer is not first
    assert_training_goes_on(session)


@pytest.mark.parametrize(
    "greeting",
    [
        bytes(range(256)) + b"\n",
        b'{"jsonrpc":"2.0","method":"hello","params":{"protocol":1,"nonce":"\xff"}}\n',
        b'{"jsonrpc":"2.0","method":"hello","params":{"protocol":"1","nonce":5}}\n',
        b'{"jsonrpc":"2.0","method":"hello","params":{"protocol":1,"nonce":"ZZ"}}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"status"}\n',
        b'{"jsonrpc":"2.0","method":"welcome","params":{"proof":"00"}}\n',
        b"x" * HUGE,
    ],
    ids=["bytes", "utf8", "types", "nonce", "request", "welcome", "huge"],
)
def test_a_hostile_greeting_is_refused_and_the_real_dashboard_is_reached_afterwards(link_env, make_link, greeting):
    with DashboardServer(greeting=greeting) as dash:
        trial = make_link(port=dash.port)
        assert dash.next_failure().startswith("closed")  # the trainer hung up without answering
        dash.greeting = None
        trainer = dash.accept()
        assert status(trainer)["state"] == "running"
        assert trainer.bad_lines == [] and trial.handle.alive


@SETTINGS
@given(st.binary(max_size=200) | shaped.map(lambda v: json.dumps(v).encode()))
def test_the_trainer_side_of_the_handshake_refuses_anything_but_a_hello(data):
    a, b = socket.socketpair()
    try:
        conn = LineConnection(a)
        conn.settimeout(0.2)
        b.sendall(data.replace(b"\n", b" ") + b"\n")
        b.shutdown(socket.SHUT_WR)
        with pytest.raises((ProtocolError, OSError)) as info:
            trainer_handshake(conn, token="11" * 32, client={})
        if isinstance(info.value, HandshakeError):
            assert info.value.reason in ("bad-message", "version")
    finally:
        a.close()
        b.close()
