"""Which capture strategy applies, the per-sample arithmetic and the functional interceptor, without a Trainer."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.demos.boring_classes import BoringModel, DemoModel
from torch import nn
from torch.nn.functional import cross_entropy as imported_cross_entropy

from onthefly.lightning.capture import LossCapture, functional_sites, plan_capture
from onthefly.lightning.loss import sample_layout
from onthefly.session.losses import (
    class_index_kept,
    per_sample_values,
    tokens_per_sample,
)

KEPT = {"cross_entropy": F.cross_entropy}  # in a dict: a global bound to the function is intercepted too
ORIGINAL = KEPT["cross_entropy"]


class Held(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 2)
        self.criterion = nn.CrossEntropyLoss()


def own_loss(output, target):
    return (output - target).abs().mean()


def test_plan_capture_picks_each_strategy():
    held = Held()
    assert plan_capture(held, None).strategy == "attribute" and plan_capture(held, None).name == "criterion"
    assert plan_capture(held, held.criterion).owner is held
    boring = BoringModel()
    for given in (None, boring.loss):
        plan = plan_capture(boring, given)
        assert (plan.strategy, plan.name, plan.owner) == ("method", "loss", boring)
    assert plan_capture(held, F.nll_loss).strategy == "functional"
    assert plan_capture(held, own_loss).strategy == "functional"  # a global of this module (Held's)
    for model, given, words in [
        (DemoModel(), None, "found no loss"),
        (held, nn.CrossEntropyLoss(), "self.loss = loss_fn"),
        (held, lambda o, t: o.sum(), "neither in torch.nn.functional"),
        (held, BoringModel().loss, "not an attribute"),
    ]:
        plan = plan_capture(model, given)
        assert plan.strategy == "none" and words in plan.reason and "loss_fn=" in plan.reason


def test_lightnings_own_methods_are_not_taken_for_a_loss():
    class NoLoss(nn.Module):
        pass

    assert plan_capture(NoLoss(), None).strategy == "none"


def test_functional_sites_are_torch_nn_functional_and_the_user_modules_globals():
    sites = functional_sites(Held(), F.cross_entropy)
    names = {(space.get("__name__"), name) for space, name in sites}
    assert ("torch.nn.functional", "cross_entropy") in names
    assert (__name__, "imported_cross_entropy") in names and (__name__, "ORIGINAL") in names  # any global alias
    assert not any(space.get("__name__", "").startswith("lightning.pytorch.core") for space, _ in sites)


def test_sample_layout_and_tokens_per_sample():
    tokens = torch.zeros(12, dtype=torch.long)
    assert sample_layout(4, 4, None) == 1 and sample_layout(12, 4, tokens) == 3
    assert sample_layout(12, 4, torch.zeros(12)) is None  # float targets are not tokens
    assert sample_layout(12, 4, torch.zeros(3, 4, dtype=torch.long)) == 3
    assert sample_layout(10, 4, torch.zeros(10, dtype=torch.long)) is None
    assert tokens_per_sample(0, 4) is None and tokens_per_sample(8, 0) is None


def test_per_sample_values_mean_over_kept_tokens_and_sum_for_batchmean():
    values = torch.tensor([1.0, 3.0, 5.0, 0.0, 0.0, 0.0])
    kept = torch.tensor([True, True, False, False, False, False])
    got = per_sample_values(values, 2, kept=kept)
    assert got[0] == 2.0 and torch.isnan(got[1])
    assert per_sample_values(values, 3).tolist() == [2.0, 2.5, 0.0]
    assert per_sample_values(torch.ones(2, 3), 2, total=True).tolist() == [3.0, 3.0]
    with pytest.raises(ValueError):
        per_sample_values(torch.ones(5), 2)
    assert class_index_kept(torch.zeros(3), -100, torch.Size([3])) is None
    assert class_index_kept(torch.tensor([1, 2]), -100, torch.Size([3])) is None


class Batch:
    """A stand-in for the callback: one batch of ids to claim, and the rows it got."""

    def __init__(self, ids):
        self.ids = np.asarray(ids)
        self.claimed = False
        self.rows = []
        self.warnings = []

    def claim(self, fits=None):
        if self.claimed or (fits is not None and not fits(len(self.ids))):
            return None
        self.claimed = True
        return self.ids

    def record(self, ids, per_sample, output, target):
        self.rows.append((ids, per_sample))


def capture_for(model, loss_fn, batch):
    return LossCapture(
        plan_capture(model, loss_fn), model, claim=batch.claim, record=batch.record, warn=batch.warnings.append
    )


def test_the_interceptor_records_the_first_fitting_call_on_its_own_thread_and_is_removed_after():
    batch = Batch([10, 11, 12, 13])
    capture = capture_for(Held(), F.cross_entropy, batch)
    logits, y = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 2, 1, 1])
    others = []
    with capture.in_place():
        assert F.cross_entropy is KEPT["cross_entropy"]  # outside a batch, the names are the original's
        capture.step_start()
        assert F.cross_entropy is not KEPT["cross_entropy"] and imported_cross_entropy is not KEPT["cross_entropy"]
        other = threading.Thread(target=lambda: others.append(F.cross_entropy(logits.detach(), y)))
        other.start()
        other.join()
        assert batch.rows == [] and not batch.claimed  # another thread's call passes straight through
        assert F.cross_entropy(torch.randn(3, 3), y[:3]) is not None and not batch.claimed  # not this batch's size
        value = imported_cross_entropy(logits, y, label_smoothing=0.2)
        again = F.cross_entropy(logits, y)  # the second call of the step is not recorded twice
        capture.step_end()
        assert F.cross_entropy is KEPT["cross_entropy"]
        pickle.dumps(F.cross_entropy)  # between batches the function pickles by name again
    assert F.cross_entropy is KEPT["cross_entropy"] and globals()["imported_cross_entropy"] is KEPT["cross_entropy"]
    assert torch.equal(value, KEPT["cross_entropy"](logits, y, label_smoothing=0.2)) and value.requires_grad
    assert torch.equal(again, KEPT["cross_entropy"](logits, y))
    ((ids, per_sample),) = batch.rows
    assert ids.tolist() == [10, 11, 12, 13]
    assert torch.allclose(per_sample, KEPT["cross_entropy"](logits, y, reduction="none", label_smoothing=0.2))


def test_the_interceptor_is_removed_when_the_block_raises_and_two_threads_share_it():
    first, second = Batch([0, 1]), Batch([0, 1])
    a, b = capture_for(Held(), F.cross_entropy, first), capture_for(Held(), F.cross_entropy, second)
    with pytest.raises(RuntimeError), a.in_place():
        a.step_start()
        raise RuntimeError("the step failed")
    assert F.cross_entropy is KEPT["cross_entropy"]

    ready, done = threading.Event(), threading.Event()

    def other_fit():
        with b.in_place():
            b.step_start()
            ready.set()
            done.wait(10)
            F.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]))

    thread = threading.Thread(target=other_fit)
    thread.start()
    ready.wait(10)
    with a.in_place():
        a.step_start()
        F.cross_entropy(torch.randn(2, 3), torch.tensor([1, 1]))
    assert F.cross_entropy is not KEPT["cross_entropy"]  # the other fit still records
    done.set()
    thread.join()
    assert F.cross_entropy is KEPT["cross_entropy"]
    assert len(first.rows) == 1 and len(second.rows) == 1


def test_a_loss_without_per_sample_values_warns_once_and_hands_back_the_users_value():
    def weird(output, target):
        return (output - target).sum(0)  # neither a scalar nor one value per sample

    globals()["weird"] = weird
    try:
        batch = Batch([0, 1, 2, 3])
        capture = capture_for(Held(), weird, batch)
        out, y = torch.randn(4, 3), torch.randn(4, 3)
        with capture.in_place():
            capture.step_start()
            got = globals()["weird"](out, y)
        assert torch.equal(got, weird(out, y)) and batch.rows == []
        assert len(batch.warnings) == 1 and "the fit goes on" in batch.warnings[0]
    finally:
        del globals()["weird"]


def test_the_method_recorder_shadows_the_method_and_records_a_loss_of_the_output_alone():
    model = BoringModel()
    batch = Batch([4, 5, 6])
    capture = capture_for(model, model.loss, batch)
    out = torch.randn(3, 2, requires_grad=True)
    with capture.in_place():
        assert "loss" in vars(model)
        value = model.loss(out)
    assert "loss" not in vars(model)
    assert torch.allclose(value, F.mse_loss(out, torch.ones_like(out))) and value.requires_grad
    ((_, per_sample),) = batch.rows
    assert torch.allclose(per_sample, ((out.detach() - 1) ** 2).mean(1))


def test_the_method_recorder_takes_the_target_by_its_keyword_too():
    model = BoringModel()
    batch = Batch([0, 1])
    capture = capture_for(model, model.loss, batch)
    out, labels = torch.randn(2, 2), torch.zeros(2, 2)
    with capture.in_place():
        value = model.loss(out, labels=labels)
    assert torch.allclose(value, F.mse_loss(out, labels))
    ((_, per_sample),) = batch.rows
    assert torch.allclose(per_sample, (out**2).mean(1))


def test_a_function_of_the_output_alone_is_recorded_per_sample():
    def energy(z):
        return z.pow(2).mean()

    globals()["energy"] = energy
    try:
        batch = Batch([3, 4, 5])
        capture = capture_for(Held(), energy, batch)
        z = torch.randn(3, 4)
        with capture.in_place():
            capture.step_start()
            value = globals()["energy"](z)
        assert torch.equal(value, energy(z))
        ((_, per_sample),) = batch.rows
        assert torch.allclose(per_sample, z.pow(2).mean(1))
    finally:
        del globals()["energy"]
