"""Per-sample rows held on the training thread and handed to the writer a few steps at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from onthefly.session.held import HeldBatch, Holding, merged


def batch(step: int, n: int = 3, *, split: str = "train", epoch: int = 0, scores: bool = True, run: str = "r"):
    ids = np.arange(step * n, step * n + n)
    loss = torch.arange(n, dtype=torch.float32) + step
    if scores:
        return HeldBatch(run, split, epoch, step, ids, loss, scores=torch.randn(n, 4), label=torch.tensor([1] * n))
    fields = {
        "label": np.full(n, 2),
        "pred": np.full(n, 2),
        "correct": np.ones(n, bool),
        "margin": np.full(n, 0.5, np.float32),
    }
    return HeldBatch(run, split, epoch, step, ids, loss, fields=fields)


def test_consecutive_batches_of_one_pass_become_one_call_with_their_rows_in_order():
    held = [batch(1), batch(2), batch(3)]
    ((run, split, epoch, columns),) = merged(held)
    assert (run, split, epoch) == ("r", "train", 0)
    assert columns["step"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert columns["sample_id"].tolist() == list(range(3, 12))
    assert columns["loss"].tolist() == [1, 2, 3, 2, 3, 4, 3, 4, 5]
    assert np.array_equal(columns["scores"], torch.cat([b.scores for b in held]).numpy())
    assert columns["label"].dtype == np.int64 and columns["label"].tolist() == [1] * 9


def test_a_change_of_pass_or_layout_starts_a_new_call_and_keeps_the_order():
    held = [batch(1), batch(2), batch(2, split="val", epoch=1, scores=False), batch(3), batch(4, run="other")]
    calls = merged(held)
    assert [(run, split, epoch, c["step"].tolist()[::3]) for run, split, epoch, c in calls] == [
        ("r", "train", 0, [1, 2]),
        ("r", "val", 1, [2]),
        ("r", "train", 0, [3]),
        ("other", "train", 0, [4]),
    ]
    fields = calls[1][3]
    assert sorted(fields) == ["correct", "label", "loss", "margin", "pred", "sample_id", "step"]
    assert fields["correct"].dtype == bool and len(fields["margin"]) == 3


def test_the_columns_are_copies_the_loop_may_overwrite_afterwards():
    b = batch(1)
    (_, _, _, columns) = merged([b])[0]
    b.loss.fill_(99.0)
    b.scores.fill_(7.0)
    assert columns["loss"].tolist() == [1, 2, 3] and not (columns["scores"] == 7.0).any()


def test_labels_are_copied_when_held_so_a_loader_reusing_its_buffer_cannot_change_them():
    target = torch.tensor([1, 2, 3])
    fields_label = np.array([4, 5, 6])
    with_scores = HeldBatch("r", "train", 0, 1, np.arange(3), torch.zeros(3), scores=torch.randn(3, 4), label=target)
    fields = {
        "label": fields_label,
        "pred": np.zeros(3, np.int64),
        "correct": np.zeros(3, bool),
        "margin": np.zeros(3, np.float32),
    }
    with_fields = HeldBatch("r", "val", 0, 1, np.arange(3), torch.zeros(3), fields=fields)
    target.fill_(0)  # the next batch lands in the same buffers
    fields_label.fill(0)
    calls = merged([with_scores, with_fields])
    assert calls[0][3]["label"].tolist() == [1, 2, 3] and calls[1][3]["label"].tolist() == [4, 5, 6]


def test_rows_are_handed_over_every_few_steps_and_after_a_while():
    calls = []
    rows = Holding(lambda held: calls.append([b.step for b in held]), steps=4, seconds=60)
    for step in range(1, 10):
        rows.add(batch(step, n=1))
    assert calls == [[1, 2, 3, 4], [5, 6, 7, 8]] and len(rows) == 1
    rows.hand_over()
    assert calls[-1] == [9] and len(rows) == 0
    slow = Holding(lambda held: calls.append([b.step for b in held]), steps=100, seconds=0.05)
    slow.add(batch(10, n=1))
    time.sleep(0.1)
    slow.add(batch(11, n=1))  # the first has waited past the time limit: both go now
    assert calls[-1] == [10, 11]


def test_a_hand_over_from_another_thread_is_serialised_with_the_loop():
    seen = []
    gate = threading.Event()

    def hand_over(held):
        seen.extend(b.step for b in held)
        if held[0].step == 1:
            gate.wait(5)  # the first hand-over is slow

    rows = Holding(hand_over, steps=2, seconds=60)
    rows.add(batch(1, n=1))
    other = threading.Thread(target=rows.hand_over)
    other.start()
    time.sleep(0.05)
    opened = threading.Timer(0.3, gate.set)
    opened.start()
    rows.add(batch(2, n=1))  # waits for the other thread's release to finish
    assert gate.is_set()
    rows.add(batch(3, n=1))
    other.join(5)
    rows.hand_over()
    assert seen == [1, 2, 3]


def test_a_batch_without_rows_is_merged_like_any_other():
    (_, _, _, columns) = merged([batch(1, n=0), batch(2, n=2)])[0]
    assert columns["step"].tolist() == [2, 2] and columns["scores"].shape == (2, 4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_labels_come_out_as_int64(dtype):
    b = HeldBatch(
        "r",
        "train",
        0,
        1,
        np.arange(2),
        torch.ones(2),
        scores=torch.zeros(2, 3),
        label=torch.tensor([0, 2], dtype=dtype),
    )
    assert merged([b])[0][3]["label"].dtype == np.int64
