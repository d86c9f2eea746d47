"""Requests from the dashboard: calls on the handle, their errors, and concurrency."""

from __future__ import annotations

import time

import pytest

from onthefly.errors import StoreError
from onthefly.link.client import MAX_PENDING, _answer_bytes, dispatch
from onthefly.protocol import codec, spec

from .dashboard import RpcError, dash, link_env, make_link, wait_until  # noqa: F401  (fixtures)
from .handle import CounterHandle


class Narrow:
    """A handle whose ``report`` lacks a protocol parameter, and whose ``test`` breaks."""

    def report(self, split: str = "train") -> dict:
        return {"split": split}

    def test(self, split: str = "test") -> dict:
        raise RuntimeError("expected all tensors to be on the same device")


# -- dispatch, without sockets ------------------------------------------------------


def test_a_request_calls_the_handle_with_validated_params_and_defaults():
    handle = CounterHandle()
    response = dispatch(handle, codec.Request(1, "report", {"epoch": 0}))
    assert isinstance(response, codec.Response)
    assert response.result["split"] == "train" and response.result["epoch"] == 0
    assert codec.check_result("report", response.result) == []


@pytest.mark.parametrize(
    ("handle", "request_", "code", "words"),
    [
        (CounterHandle(), codec.Request(1, "snapshot", {}), spec.METHOD_NOT_FOUND, "unknown method 'snapshot'"),
        (CounterHandle(), codec.Request(1, "__init__", {}), spec.METHOD_NOT_FOUND, "unknown method"),
        (CounterHandle(), codec.Request(1, "slice", {"name": "a"}), spec.METHOD_NOT_FOUND, "not offered"),
        (CounterHandle(), codec.Request(1, "query", {}), spec.INVALID_PARAMS, "missing parameter 'sql'"),
        (Narrow(), codec.Request(1, "report", {"k": 3}), spec.INVALID_PARAMS, "unexpected keyword argument 'k'"),
        (Narrow(), codec.Request(1, "test", {}), spec.INTERNAL_ERROR, "test failed: RuntimeError: expected all"),
        (CounterHandle(), codec.Request(1, "query", {"sql": "DROP TABLE runs"}), spec.QUERY_FAILED, "read-only"),
    ],
)
def test_failures_become_error_answers(handle, request_, code, words):
    response = dispatch(handle, request_)
    assert isinstance(response, codec.ErrorResponse) and response.id == 1
    assert response.code == code and words in response.message


def test_an_answer_that_cannot_be_sent_becomes_an_error_saying_why():
    request = codec.Request(4, "query", {"sql": "SELECT 1"})
    big = codec.Response(4, {"rows": ["x" * spec.MAX_LINE_BYTES], "truncated": False})
    too_large = codec.decode(_answer_bytes(request, big))
    assert too_large.code == spec.RESULT_TOO_LARGE and "ask for fewer rows" in too_large.message
    not_json = codec.decode(_answer_bytes(request, codec.Response(4, {"x": object()})))
    assert not_json.code == spec.INTERNAL_ERROR and "not JSON" in not_json.message


# -- over the socket -------------------------------------------------------------------


@pytest.fixture
def connected(dash, make_link):
    trial = make_link(port=dash.port)
    return trial, dash.accept()


def test_unknown_methods_and_bad_params_get_their_codes(connected):
    _, trainer = connected
    with pytest.raises(RpcError) as info:
        trainer.request("fork", {"run": "r1"})
    assert info.value.code == spec.METHOD_NOT_FOUND
    with pytest.raises(RpcError) as info:
        trainer.request("report", {"k": -1})
    assert info.value.code == spec.INVALID_PARAMS and "'k' must be at least 0" in info.value.message


def test_an_operation_error_reaches_the_dashboard_and_training_goes_on(connected):
    trial, trainer = connected
    trial.handle.failures["checkpoint"] = StoreError("no space left on device: free disk space and retry")
    trial.handle.failures["status"] = KeyError("boom")
    with pytest.raises(RpcError) as info:
        trainer.request("checkpoint")
    assert info.value.code == spec.STORE_FAILED
    assert info.value.message == "no space left on device: free disk space and retry"
    assert info.value.data == {"type": "StoreError"}
    with pytest.raises(RpcError) as info:
        trainer.request("status")
    assert info.value.code == spec.INTERNAL_ERROR and info.value.message == "status failed: KeyError: 'boom'"
    step = trial.handle.step
    wait_until(lambda: trial.handle.step > step + 5, what="training to go on")
    assert trainer.request("query", {"sql": "SELECT step"})["columns"] == ["step"]


def test_a_slow_request_does_not_hold_up_status(connected):
    trial, trainer = connected
    trial.handle.test_gate.clear()
    slow = trainer.send_request("test", {"split": "test"})
    for _ in range(3):
        assert trainer.request("status")["state"] == "running"
    with pytest.raises(AssertionError, match="no answer"):
        trainer.reply(slow, timeout=0.05)
    trial.handle.test_gate.set()
    assert trainer.reply(slow).result == {"split": "test", "loss": 0.25, "metrics": {"accuracy": 0.9}, "count": 10}


def test_pause_stops_the_steps_and_resume_restarts_them(connected):
    trial, trainer = connected
    assert trainer.request("pause")["state"] == "paused"
    assert trainer.wait_notification("state", where=lambda p: p["state"] == "paused")
    paused_at = trainer.request("status")["step"]
    time.sleep(0.05)  # about 50 steps at the handle's pace, were it running
    assert trainer.request("status")["step"] == paused_at
    assert trainer.request("resume")["state"] == "running"
    trainer.wait_notification("state", where=lambda p: p["state"] == "running" and p["step"] >= paused_at)
    wait_until(lambda: trainer.request("status")["step"] > paused_at + 5, what="steps after resume")


def test_stop_finishes_the_run_and_the_link_stays_up(connected):
    trial, trainer = connected
    assert trainer.request("stop")["state"] == "finished"
    wait_until(lambda: not trial.handle.alive, what="the loop to end")
    assert trainer.request("status")["state"] == "finished"


def test_requests_past_the_pending_limit_are_told_the_link_is_busy(connected):
    trial, trainer = connected
    trial.handle.test_gate.clear()
    ids = [trainer.send_request("test") for _ in range(MAX_PENDING + 1)]
    busy = trainer.reply(ids[-1])
    assert busy.code == spec.BUSY and f"{MAX_PENDING} requests are already waiting" in busy.message
    trial.handle.test_gate.set()
    assert all(isinstance(trainer.reply(i), codec.Response) for i in ids[:-1])
    assert trainer.request("status")["state"] == "running"
