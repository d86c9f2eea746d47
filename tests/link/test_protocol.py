"""The protocol module: encoding, decoding, validation, golden messages, and the docs kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from onthefly.errors import ConfigError, QueryError, StoreError, TrainingError
from onthefly.link.handshake import (
    dashboard_proof,
    parse_dashboard_hello,
    parse_trainer_hello,
    parse_welcome,
    proof_matches,
    trainer_proof,
)
from onthefly.protocol import codec, spec

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
DOCS = ROOT / "docs" / "protocol.md"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def decode_fixture(name: str) -> codec.Message:
    return codec.decode(json.dumps(fixture(name)).encode("utf-8"))


# -- encode / decode -------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        codec.Request(1, "status", {}),
        codec.Request("a-1", "query", {"sql": "SELECT 1", "params": [1, "ü"]}),
        codec.Notification("log", {"level": "info", "message": "line\nbreak \u2028 ok"}),
        codec.Response(7, {"state": "paused"}),
        codec.Response(8, None),
        codec.ErrorResponse(None, spec.PARSE_ERROR, "not JSON"),
        codec.ErrorResponse(3, spec.QUERY_FAILED, "refused", {"type": "QueryError"}),
    ],
)
def test_a_message_survives_encoding_on_one_line(message):
    line = codec.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert codec.decode(line[:-1]) == message


def test_non_finite_numbers_travel_as_null():
    line = codec.encode(codec.Notification("steps", {"step": [1, 2, 3], "loss": [float("nan"), 0.5, float("inf")]}))
    assert codec.decode(line).params == {"step": [1, 2, 3], "loss": [None, 0.5, None]}


def test_numpy_values_and_paths_are_encoded_as_plain_json():
    result = {"mean": np.float32(0.5), "ids": np.arange(3), "path": Path("a/b"), "bad": np.array([np.nan])}
    assert codec.decode(codec.encode(codec.Response(1, result))).result == {
        "mean": 0.5,
        "ids": [0, 1, 2],
        "path": "a/b",
        "bad": [None],
    }


def test_a_value_without_json_form_is_a_type_error():
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        codec.encode(codec.Response(1, object()))


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b"\xff\xfe", spec.PARSE_ERROR, None),
        (b"{not json", spec.PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","id":1,"result":NaN}', spec.PARSE_ERROR, None),
        (b"[" * 100_000, spec.PARSE_ERROR, None),
        (b'[{"jsonrpc":"2.0","method":"status","id":1}]', spec.INVALID_REQUEST, None),
        (b'"status"', spec.INVALID_REQUEST, None),
        (b'{"method":"status","id":4}', spec.INVALID_REQUEST, 4),
        (b'{"jsonrpc":"1.0","method":"status","id":"x"}', spec.INVALID_REQUEST, "x"),
        (b'{"jsonrpc":"2.0","method":5,"id":2}', spec.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","method":"status","id":2.5}', spec.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"status","id":true}', spec.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"status","params":3,"id":2}', spec.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2}', spec.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2,"result":1,"error":{"code":1,"message":"x"}}', spec.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":2,"error":{"code":"x"}}', spec.INVALID_REQUEST, 2),
    ],
)
def test_lines_that_break_the_protocol_get_the_right_code_and_id(line, code, rid):
    with pytest.raises(codec.MessageError) as info:
        codec.decode(line)
    assert (info.value.code, info.value.id) == (code, rid)


def test_a_request_without_params_has_empty_params_and_one_without_id_is_a_notification():
    assert codec.decode(b'{"jsonrpc":"2.0","method":"status","id":9}') == codec.Request(9, "status", {})
    assert codec.decode(b'{"jsonrpc":"2.0","method":"x"}') == codec.Notification("x", {})


# -- params ------------------------------------------------------------------------


def test_defaults_are_filled_and_null_counts_as_left_out():
    assert codec.validate_params("query", {"sql": "SELECT 1", "limit": None}) == {
        "sql": "SELECT 1",
        "limit": 10000,
        "format": "rows",
    }
    assert codec.validate_params("status", None) == {}


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
    with pytest.raises(codec.MessageError) as info:
        codec.validate_params(method, params)
    assert info.value.code == spec.INVALID_PARAMS
    assert words in str(info.value)


def test_an_unknown_method_is_method_not_found_and_lists_the_methods():
    with pytest.raises(codec.MessageError) as info:
        codec.validate_params("fork", {})
    assert info.value.code == spec.METHOD_NOT_FOUND
    assert "status, pause" in str(info.value)


def test_errors_of_onthefly_map_to_their_codes_and_others_to_internal_error():
    assert codec.error_code_for(QueryError("x")) == spec.QUERY_FAILED
    assert codec.error_code_for(StoreError("x")) == spec.STORE_FAILED
    assert codec.error_code_for(ConfigError("x")) == spec.BAD_ARGUMENT
    assert codec.error_code_for(TrainingError("x")) == spec.TRAINING_FAILED
    assert codec.error_code_for(ValueError("x")) == spec.INTERNAL_ERROR


# -- golden messages ------------------------------------------------------------------


def test_every_method_notification_and_error_code_has_a_golden_message():
    names = {p.stem for p in FIXTURES.glob("*.json")}
    expected = {f"request.{m}" for m in spec.METHODS} | {f"response.{m}" for m in spec.METHODS}
    expected |= {f"notification.{n}" for n in spec.NOTIFICATIONS} | {f"error.{e}" for e in spec.ERROR_CODES}
    expected |= {"handshake.example", "handshake.hello-dashboard", "handshake.hello-trainer", "handshake.welcome"}
    assert names == expected


@pytest.mark.parametrize("method", list(spec.METHODS))
def test_golden_requests_and_responses_fit_the_method(method):
    request = decode_fixture(f"request.{method}")
    response = decode_fixture(f"response.{method}")
    assert isinstance(request, codec.Request) and request.method == method
    codec.validate_params(method, request.params)
    assert isinstance(response, codec.Response) and response.id == request.id
    assert codec.check_result(method, response.result) == []
    assert codec.decode(codec.encode(response)) == response


@pytest.mark.parametrize("name", list(spec.NOTIFICATIONS))
def test_golden_notifications_fit_their_spec(name):
    message = decode_fixture(f"notification.{name}")
    assert isinstance(message, codec.Notification) and message.method == name
    assert codec.check_notification(name, message.params) == []


@pytest.mark.parametrize(("name", "code"), list(spec.ERROR_CODES.items()))
def test_golden_errors_carry_their_code(name, code):
    message = decode_fixture(f"error.{name}")
    assert isinstance(message, codec.ErrorResponse) and message.code == code and message.message


def test_the_checks_find_what_is_wrong():
    assert codec.check_notification("steps", {"step": [1, 2], "loss": [0.1]}) == [
        "columns differ in length: {'step': 2, 'loss': 1}"
    ]
    assert codec.check_notification("state", {"state": "asleep", "step": 1}) == [
        "'state' must be one of idle, running, paused, testing, finished, got 'asleep'",
        "missing 'epoch'",
    ]
    assert codec.check_result("status", []) == ["expected an object, got list"]
    assert codec.check_notification("gossip", {}) == ["unknown notification 'gossip'"]


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
    assert found.group(1) == spec.fingerprint(), (
        "onthefly/protocol/spec.py changed: describe the change in docs/protocol.md and set its line to "
        f"'protocol-hash: {spec.fingerprint()}'"
    )
    assert re.search(rf"^protocol-version: {spec.PROTOCOL_VERSION}$", text, re.M)


def test_docs_name_every_method_notification_parameter_and_error_code():
    text = DOCS.read_text(encoding="utf-8")
    for method in spec.METHODS.values():
        assert f"`{method.name}`" in text
        for param in method.params:
            assert f"`{param.name}`" in text, f"{method.name}: {param.name}"
    for name in spec.NOTIFICATIONS:
        assert f"| `{name}` |" in text
    for name, code in spec.ERROR_CODES.items():
        assert f"| {code} | {name} |" in text


def test_docs_worked_example_shows_the_fixture_proofs():
    text = DOCS.read_text(encoding="utf-8")
    ex = fixture("handshake.example")
    for key in ("token", "dashboard_nonce", "trainer_nonce", "trainer_proof", "dashboard_proof"):
        assert ex[key] in text, key


def test_the_fingerprint_moves_with_the_listing():
    before = spec.fingerprint()
    report = spec.METHODS["report"]
    try:
        spec.METHODS["report"] = spec.MethodSpec("report", report.params[:-1], report.result, report.training_thread)
        assert spec.fingerprint() != before
    finally:
        spec.METHODS["report"] = report
    assert spec.fingerprint() == before
