"""The protocol module: encoding, decoding, validation, golden messages, and the docs kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from onthefly import protocol as P
from onthefly.errors import ConfigError, QueryError, StoreError, TrainingError
from onthefly.link.handshake import (
    dashboard_proof,
    parse_dashboard_hello,
    parse_trainer_hello,
    parse_welcome,
    proof_matches,
    trainer_proof,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
DOCS = ROOT / "docs" / "protocol.md"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def decode_fixture(name: str) -> P.Message:
    return P.decode(json.dumps(fixture(name)).encode("utf-8"))


# -- encode / decode -------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        P.Request(1, "status", {}),
        P.Request("a-1", "query", {"sql": "SELECT 1", "params": [1, "ü"]}),
        P.Notification("log", {"level": "info", "message": "line\nbreak \u2028 ok"}),
        P.Response(7, {"state": "paused"}),
        P.Response(8, None),
        P.ErrorResponse(None, P.PARSE_ERROR, "not JSON"),
        P.ErrorResponse(3, P.QUERY_FAILED, "refused", {"type": "QueryError"}),
    ],
)
def test_a_message_survives_encoding_on_one_line(message):
    line = P.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert P.decode(line[:-1]) == message


def test_non_finite_numbers_travel_as_null():
    line = P.encode(P.Notification("steps", {"step": [1, 2, 3], "loss": [float("nan"), 0.5, float("inf")]}))
    assert P.decode(line).params == {"step": [1, 2, 3], "loss": [None, 0.5, None]}


def test_numpy_values_and_paths_are_encoded_as_plain_json():
    result = {"mean": np.float32(0.5), "ids": np.arange(3), "path": Path("a/b"), "bad": np.array([np.nan])}
    assert P.decode(P.encode(P.Response(1, result))).result == {
        "mean": 0.5,
        "ids": [0, 1, 2],
        "path": "a/b",
        "bad": [None],
    }


def test_a_value_without_json_form_is_a_type_error():
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        P.encode(P.Response(1, object()))


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b"\xff\xfe", P.PARSE_ERROR, None),
        (b"{not json", P.PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","id":1,"result":NaN}', P.PARSE_ERROR, None),
        (b"[" * 100_000, P.PARSE_ERROR, None),
        (b'[{"jsonrpc":"2.0","method":"status","id":1}]', P.INVALID_REQUEST, None),
        (b'"status"', P.INVALID_REQUEST, None),
        (b'{"method":"status","id":4}', P.INVALID_REQUEST, 4),
        (b'{"jsonrpc":"1.0","method":"status","id":"x"}', P.INVALID_REQUEST, "x"),
        (b'{"jsonrpc":"2.0","method":5,"id":2}', P.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","method":"status","id":2.5}', P.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"status","id":true}', P.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"status","params":3,"id":2}', P.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2}', P.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2,"result":1,"error":{"code":1,"message":"x"}}', P.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2,"error":{"code":"x"}}', P.INVALID_REQUEST, 2),
    ],
)
def test_lines_that_break_the_protocol_get_the_right_code_and_id(line, code, rid):
    with pytest.raises(P.MessageError) as info:
        P.decode(line)
    assert (info.value.code, info.value.id) == (code, rid)


def test_a_request_without_params_has_empty_params_and_one_without_id_is_a_notification():
    assert P.decode(b'{"jsonrpc":"2.0","method":"status","id":9}') == P.Request(9, "status", {})
    assert P.decode(b'{"jsonrpc":"2.0","method":"x"}') == P.Notification("x", {})


# -- params ------------------------------------------------------------------------


def test_defaults_are_filled_and_null_counts_as_left_out():
    assert P.validate_params("query", {"sql": "SELECT 1", "limit": None}) == {
        "sql": "SELECT 1",
        "limit": 10000,
        "format": "rows",
    }
    assert P.validate_params("status", None) == {}


@pytest.mark.parametrize(
    ("method", "params", "words"),
    [
        ("query", {}, "missing parameter 'sql'"),
        ("query", {"sql": 5}, "'sql' must be string"),
        ("query", {"sql": "x", "limit": 0}, "'limit' must be at least 1"),
        ("query", {"sql": "x", "limit": True}, "'limit' must be integer"),
        ("query", {"sql": "x", "format": "csv"}, "'format' must be one of rows, arrow"),
        ("report", {"k": "ten"}, "'k' must be integer"),
        ("slice", {"name": "a", "q_min": 1.5}, "'q_min' must be at most 1"),
        ("slice", {"name": "a", "ids": [1, "2"]}, "'ids' must be integer[]"),
        ("slice", {"name": "a", "loss_min": float("nan")}, "'loss_min' must be number"),
        ("status", {"verbose": True}, "unexpected parameter 'verbose'; it takes no parameters"),
        ("status", [1], "params must be an object"),
    ],
)
def test_bad_params_are_refused_with_a_sentence_naming_the_parameter(method, params, words):
    with pytest.raises(P.MessageError) as info:
        P.validate_params(method, params)
    assert info.value.code == P.INVALID_PARAMS
    assert words in str(info.value)


def test_an_unknown_method_is_method_not_found_and_lists_the_methods():
    with pytest.raises(P.MessageError) as info:
        P.validate_params("fork", {})
    assert info.value.code == P.METHOD_NOT_FOUND
    assert "status, pause" in str(info.value)


def test_errors_of_onthefly_map_to_their_codes_and_others_to_internal_error():
    assert P.error_code_for(QueryError("x")) == P.QUERY_FAILED
    assert P.error_code_for(StoreError("x")) == P.STORE_FAILED
    assert P.error_code_for(ConfigError("x")) == P.BAD_ARGUMENT
    assert P.error_code_for(TrainingError("x")) == P.TRAINING_FAILED
    assert P.error_code_for(ValueError("x")) == P.INTERNAL_ERROR


# -- golden messages ------------------------------------------------------------------


def test_every_method_notification_and_error_code_has_a_golden_message():
    names = {p.stem for p in FIXTURES.glob("*.json")}
    expected = {f"request.{m}" for m in P.METHODS} | {f"response.{m}" for m in P.METHODS}
    expected |= {f"notification.{n}" for n in P.NOTIFICATIONS} | {f"error.{e}" for e in P.ERROR_CODES}
    expected |= {"handshake.example", "handshake.hello-dashboard", "handshake.hello-trainer", "handshake.welcome"}
    assert names == expected


@pytest.mark.parametrize("method", list(P.METHODS))
def test_golden_requests_and_responses_fit_the_method(method):
    request = decode_fixture(f"request.{method}")
    response = decode_fixture(f"response.{method}")
    assert isinstance(request, P.Request) and request.method == method
    P.validate_params(method, request.params)
    assert isinstance(response, P.Response) and response.id == request.id
    assert P.check_result(method, response.result) == []
    assert P.decode(P.encode(response)) == response


@pytest.mark.parametrize("name", list(P.NOTIFICATIONS))
def test_golden_notifications_fit_their_spec(name):
    message = decode_fixture(f"notification.{name}")
    assert isinstance(message, P.Notification) and message.method == name
    assert P.check_notification(name, message.params) == []


@pytest.mark.parametrize(("name", "code"), list(P.ERROR_CODES.items()))
def test_golden_errors_carry_their_code(name, code):
    message = decode_fixture(f"error.{name}")
    assert isinstance(message, P.ErrorResponse) and message.code == code and message.message


def test_the_checks_find_what_is_wrong():
    assert P.check_notification("steps", {"step": [1, 2], "loss": [0.1]}) == [
        "columns differ in length: {'step': 2, 'loss': 1}"
    ]
    assert P.check_notification("state", {"state": "asleep", "step": 1}) == [
        "'state' must be one of idle, running, paused, testing, finished, got 'asleep'",
        "missing 'epoch'",
    ]
    assert P.check_result("status", []) == ["expected an object, got list"]
    assert P.check_notification("gossip", {}) == ["unknown notification 'gossip'"]


def test_the_worked_handshake_example_holds():
    ex = fixture("handshake.example")
    token, d, t = ex["token"], ex["dashboard_nonce"], ex["trainer_nonce"]
    assert ex["trainer_proof"] == trainer_proof(token, dashboard_nonce=d, trainer_nonce=t)
    assert ex["dashboard_proof"] == dashboard_proof(token, trainer_nonce=t, dashboard_nonce=d)
    assert parse_dashboard_hello(decode_fixture("handshake.hello-dashboard")) == (1, d)
    version, nonce, proof, client = parse_trainer_hello(decode_fixture("handshake.hello-trainer"))
    assert (version, nonce) == (1, t) and proof_matches(ex["trainer_proof"], proof)
    assert set(client) == {"version", "pid", "session", "project", "run", "host"}
    assert proof_matches(ex["dashboard_proof"], parse_welcome(decode_fixture("handshake.welcome")))


# -- docs in step ----------------------------------------------------------------------


def test_docs_carry_the_current_protocol_hash():
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"^protocol-hash: ([0-9a-f]{64})$", text, re.M)
    assert found, "docs/protocol.md has no 'protocol-hash: <sha256>' line"
    assert found.group(1) == P.fingerprint(), (
        "onthefly/protocol.py changed: describe the change in docs/protocol.md and set its line to "
        f"'protocol-hash: {P.fingerprint()}'"
    )
    assert re.search(rf"^protocol-version: {P.PROTOCOL_VERSION}$", text, re.M)


def test_docs_name_every_method_notification_parameter_and_error_code():
    text = DOCS.read_text(encoding="utf-8")
    for method in P.METHODS.values():
        assert f"`{method.name}`" in text
        for param in method.params:
            assert f"`{param.name}`" in text, f"{method.name}: {param.name}"
    for name in P.NOTIFICATIONS:
        assert f"| `{name}` |" in text
    for name, code in P.ERROR_CODES.items():
        assert f"| {code} | {name} |" in text


def test_docs_worked_example_shows_the_fixture_proofs():
    text = DOCS.read_text(encoding="utf-8")
    ex = fixture("handshake.example")
    for key in ("token", "dashboard_nonce", "trainer_nonce", "trainer_proof", "dashboard_proof"):
        assert ex[key] in text, key


def test_the_fingerprint_moves_with_the_listing():
    before = P.fingerprint()
    spec = P.METHODS["report"]
    try:
        P.METHODS["report"] = P.MethodSpec("report", spec.params[:-1], spec.result, spec.training_thread)
        assert P.fingerprint() != before
    finally:
        P.METHODS["report"] = spec
    assert P.fingerprint() == before
