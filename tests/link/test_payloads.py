"""Each record's wire shape: the serializers of onthefly.protocol.payloads against the spec and the golden messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

from onthefly.protocol import codec, payloads
from onthefly.store.records import CheckpointInfo, EpochSummary

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "protocol"


def golden(name: str) -> dict:
    message = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return message.get("params", message.get("result"))


def summary(**change) -> EpochSummary:
    fields = dict(
        run_id="r-base",
        split="train",
        epoch=3,
        step=1200,
        count=60000,
        mean=0.41,
        min=None,
        max=None,
        p10=0.01,
        p50=0.12,
        p90=1.1,
        p99=4.75,
        hist_edges=[0.0, 2.5, 5.0, 7.5],
        hist_counts=[58000, 1900, 100],
    )
    return EpochSummary(**{**fields, **change})


def test_an_epoch_summary_is_shaped_as_the_golden_notification():
    payload = payloads.epoch_summary(summary())
    assert codec.check_notification("epoch", payload) == []
    assert {k: v for k, v in payload.items() if v is not None} == golden("notification.epoch")


def test_a_report_is_the_same_summary_with_its_hardest_samples():
    hardest = golden("response.report")["hardest"]
    result = payloads.report(summary(min=0.0, max=7.3, metrics={"accuracy": 0.9}), hardest)
    assert codec.check_result("report", result) == []
    assert result == golden("response.report")
    notified = payloads.epoch_summary(summary())
    assert {k: notified[k] for k in ("quantiles", "hist", "count", "mean")} == {
        k: result[k] for k in ("quantiles", "hist", "count", "mean")
    }


def test_numbers_json_cannot_hold_become_null():
    payload = payloads.epoch_summary(summary(mean=math.nan, p99=math.inf, hist_edges=[0.0, math.nan], hist_counts=[3]))
    assert payload["mean"] is None and payload["quantiles"]["p99"] is None
    assert payload["hist"] == {"edges": [0.0, None], "counts": [3]}
    tested = payloads.test_result(run="r", split="test", step=1, epoch=0, loss=math.nan, metrics={}, count=4)
    assert tested["loss"] is None and codec.check_notification("test", tested) == []


def test_a_pass_without_finite_losses_has_an_empty_histogram():
    payload = payloads.epoch_summary(summary(count=0, mean=None, hist_edges=[], hist_counts=[]))
    assert payload["hist"] == {"edges": [], "counts": []}


def test_a_test_result_and_a_checkpoint_are_shaped_as_the_golden_messages():
    tested = payloads.test_result(
        run="r-base", split="test", step=1200, epoch=3, loss=0.3125, metrics={"accuracy": 0.912}, count=10000
    )
    assert tested == golden("notification.test")
    info = CheckpointInfo(
        id="c-000012",
        run_id="r-base",
        step=1200,
        epoch=3,
        reason="manual",
        path="checkpoints/r-base/c-000012.safetensors",
        bytes=10,
        sha256="0" * 64,
        holds=("model",),
        created_at=0.0,
    )
    saved = payloads.checkpoint(info)
    assert codec.check_notification("checkpoint", saved) == []
    assert {k: saved[k] for k in golden("notification.checkpoint")} == golden("notification.checkpoint")
    assert saved["reason"] == "manual" and saved["bytes"] == 10
