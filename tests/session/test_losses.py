"""Per-sample losses from one output, the backward scalar, and classification fields."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onthefly.errors import ConfigError
from onthefly.session.classify import classification_fields, classification_kind
from onthefly.session.losses import PerSampleLoss, per_sample_grad_norm

B, C = 6, 4


def leaf(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def assert_matches_user_loss(loss_fn, output: torch.Tensor, target, *, method: str) -> torch.Tensor:
    """Backward scalar and its gradient equal the user's own; returns the per-sample values."""
    wrapped = PerSampleLoss(loss_fn)
    result = wrapped(output, target)
    assert wrapped.method == method
    expected = loss_fn(output, target)
    expected = expected["loss"] if isinstance(expected, dict) else expected
    expected = expected[0] if isinstance(expected, tuple) else expected
    expected = expected.mean() if expected.ndim else expected  # per-sample values: backward on their mean
    assert torch.allclose(result.loss, expected, rtol=1e-5, atol=1e-6)
    (ours,) = torch.autograd.grad(result.loss, output)
    (theirs,) = torch.autograd.grad(expected, output)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    assert result.per_sample.shape == (B,) and result.per_sample.dtype == torch.float32
    assert not result.per_sample.requires_grad
    return result.per_sample


def assert_close_with_nan(actual: torch.Tensor | np.ndarray, expected: list[float]) -> None:
    actual = torch.as_tensor(actual)
    expected_t = torch.tensor(expected, dtype=torch.float32)
    assert torch.allclose(actual, expected_t, rtol=1e-5, atol=1e-6, equal_nan=True), (actual, expected_t)


def test_cross_entropy_with_weight_ignore_index_and_label_smoothing_matches_the_formula() -> None:
    output, target = leaf(B, C), torch.tensor([0, 3, 1, 2, 3, 1])
    weight, smoothing = torch.tensor([0.5, 1.0, 2.0, 1.5]), 0.2
    loss_fn = nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=smoothing)
    per_sample = assert_matches_user_loss(loss_fn, output, target, method="unreduced")
    logp = torch.log_softmax(output.detach(), dim=1)
    expected = []
    for i in range(B):
        t = int(target[i])
        if t == 1:
            expected.append(math.nan)  # ignored sample: no loss
            continue
        nll = -weight[t] * logp[i, t]
        smooth = -sum(weight[c] * logp[i, c] for c in range(C))
        expected.append(float((1 - smoothing) * nll + smoothing / C * smooth))
    assert_close_with_nan(per_sample, expected)
    assert loss_fn.reduction == "mean"


def test_cross_entropy_per_sample_is_minus_log_softmax_of_the_target() -> None:
    output, target = leaf(B, C, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    per_sample = assert_matches_user_loss(nn.CrossEntropyLoss(), output, target, method="unreduced")
    expected = []
    for i in range(B):
        row = output.detach()[i]
        expected.append(float(torch.logsumexp(row, 0) - row[target[i]]))
    assert_close_with_nan(per_sample, expected)


def test_mse_per_sample_is_the_mean_squared_error_of_each_row() -> None:
    output, target = leaf(B, 3, seed=2), torch.randn(B, 3)
    per_sample = assert_matches_user_loss(nn.MSELoss(), output, target, method="unreduced")
    o = output.detach()
    expected = [sum(float(o[i, j] - target[i, j]) ** 2 for j in range(3)) / 3 for i in range(B)]
    assert_close_with_nan(per_sample, expected)
    sum_per_sample = assert_matches_user_loss(nn.MSELoss(reduction="sum"), output, target, method="unreduced")
    assert_close_with_nan(sum_per_sample, expected)  # per-sample is a mean whatever the reduction


def test_bce_with_logits_and_pos_weight_matches_the_formula() -> None:
    output, target = leaf(B, 2, seed=3), torch.randint(0, 2, (B, 2), generator=torch.Generator().manual_seed(0)).float()
    pos_weight = torch.tensor([3.0, 0.5])
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    per_sample = assert_matches_user_loss(loss_fn, output, target, method="unreduced")
    expected = []
    for i in range(B):
        terms = []
        for j in range(2):
            p = 1 / (1 + math.exp(-float(output.detach()[i, j])))
            y = float(target[i, j])
            terms.append(-(float(pos_weight[j]) * y * math.log(p) + (1 - y) * math.log(1 - p)))
        expected.append(sum(terms) / 2)
    assert_close_with_nan(per_sample, expected)


def sequence_reference(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> list[float]:
    """Mean cross-entropy over each sequence's non-ignored steps; NaN when all are ignored."""
    values = []
    for i in range(logits.shape[0]):
        steps = [
            float(torch.logsumexp(logits[i, t], 0) - logits[i, t, target[i, t]])
            for t in range(logits.shape[1])
            if int(target[i, t]) != ignore
        ]
        values.append(sum(steps) / len(steps) if steps else math.nan)
    return values


def sequence_data() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randint(0, C, (B, 5), generator=torch.Generator().manual_seed(1))
    target[0, 1:] = -100
    target[2, :] = -100  # every step ignored
    target[4, 3] = -100
    return leaf(B, 5, C, seed=4), target


def test_a_sequence_cross_entropy_module_masks_ignored_steps() -> None:
    logits, target = sequence_data()
    output = logits.transpose(1, 2)  # [B, C, T], the layout CrossEntropyLoss takes
    wrapped = PerSampleLoss(nn.CrossEntropyLoss())
    result = wrapped(output, target)
    expected_loss = F.cross_entropy(output, target)
    assert wrapped.method == "unreduced"
    assert torch.allclose(result.loss, expected_loss)
    assert torch.allclose(torch.autograd.grad(result.loss, logits)[0], torch.autograd.grad(expected_loss, logits)[0])
    assert_close_with_nan(result.per_sample, sequence_reference(logits.detach(), target, -100))


def test_a_sequence_callable_returning_a_scalar_gets_per_sample_values_by_vmap() -> None:
    logits, target = sequence_data()

    def flat_loss(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), tgt.reshape(-1), ignore_index=-100)

    per_sample = assert_matches_user_loss(flat_loss, logits, target, method="vmap")
    assert_close_with_nan(per_sample, sequence_reference(logits.detach(), target, -100))


def test_kl_div_batchmean_gives_each_samples_divergence() -> None:
    log_q = torch.log_softmax(leaf(B, C, seed=5), dim=1)
    p = torch.softmax(torch.randn(B, C), dim=1)
    wrapped = PerSampleLoss(nn.KLDivLoss(reduction="batchmean"))
    result = wrapped(log_q, p)
    assert torch.allclose(result.loss, F.kl_div(log_q, p, reduction="batchmean"))
    q = log_q.detach()
    expected = [sum(float(p[i, c] * (p[i, c].log() - q[i, c])) for c in range(C)) for i in range(B)]
    assert_close_with_nan(result.per_sample, expected)
    assert torch.allclose(result.per_sample.mean(), result.loss.detach())


def test_nll_loss_with_weights_and_sum_reduction_matches() -> None:
    log_p = torch.log_softmax(leaf(B, C, seed=6), dim=1)
    target = torch.tensor([1, 1, 0, 3, 2, 2])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    for reduction in ("mean", "sum"):
        loss_fn = nn.NLLLoss(weight=weight, reduction=reduction)
        result = PerSampleLoss(loss_fn)(log_p, target)
        assert torch.allclose(result.loss, loss_fn(log_p, target))
        expected = [-float(weight[target[i]] * log_p.detach()[i, target[i]]) for i in range(B)]
        assert_close_with_nan(result.per_sample, expected)


def test_a_callable_returning_per_sample_values_is_averaged_for_backward() -> None:
    output, target = leaf(B, 3, seed=7), torch.randn(B, 3)
    per_row = assert_matches_user_loss(lambda o, t: ((o - t) ** 2).sum(1), output, target, method="direct")
    assert_close_with_nan(per_row, ((output.detach() - target) ** 2).sum(1).tolist())
    wrapped = PerSampleLoss(lambda o, t: (o - t) ** 2)  # [B, 3]: averaged over the non-batch dims
    result = wrapped(output, target)
    assert torch.allclose(result.loss, ((output - target) ** 2).mean())
    assert_close_with_nan(result.per_sample, ((output.detach() - target) ** 2).mean(1).tolist())


def test_a_scalar_callable_gets_per_sample_values_by_vmap() -> None:
    output, target = leaf(B, C, seed=8), torch.tensor([0, 1, 2, 3, 2, 1])
    per_sample = assert_matches_user_loss(lambda o, t: F.cross_entropy(o, t), output, target, method="vmap")
    assert_close_with_nan(per_sample, F.cross_entropy(output.detach(), target, reduction="none").tolist())


def test_a_scalar_callable_that_vmap_cannot_trace_falls_back_to_a_loop() -> None:
    calls = []

    def scalar_with_item(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(o.sum().item()))  # .item() cannot run under vmap
        return F.mse_loss(o, t)

    output, target = leaf(B, 2, seed=9), torch.randn(B, 2)
    per_sample = assert_matches_user_loss(scalar_with_item, output, target, method="loop")
    assert_close_with_nan(per_sample, ((output.detach() - target) ** 2).mean(1).tolist())


def test_dict_and_tuple_losses_give_the_loss_and_extras() -> None:
    output, target = leaf(B, C, seed=10), torch.tensor([0, 1, 2, 3, 0, 0])

    def as_dict(o, t):
        return {"loss": F.cross_entropy(o, t), "acc": (o.argmax(1) == t).float().mean(), "note": "x"}

    wrapped = PerSampleLoss(as_dict)
    result = wrapped(output, target)
    assert set(result.extras) == {"acc"} and not result.extras["acc"].requires_grad
    assert torch.allclose(result.loss, F.cross_entropy(output, target))
    assert_close_with_nan(result.per_sample, F.cross_entropy(output.detach(), target, reduction="none").tolist())
    per_tuple = assert_matches_user_loss(
        lambda o, t: (F.cross_entropy(o, t, reduction="none"), torch.tensor(1.0)), output, target, method="direct"
    )
    assert_close_with_nan(per_tuple, F.cross_entropy(output.detach(), target, reduction="none").tolist())
    Out = namedtuple("Out", ["total", "aux"])
    named = PerSampleLoss(lambda o, t: Out(F.cross_entropy(o, t), 2.5))(output, target)
    assert named.extras["aux"].item() == 2.5


def test_a_dict_without_loss_is_refused_naming_its_keys() -> None:
    wrapped = PerSampleLoss(lambda o, t: {"ce": F.cross_entropy(o, t), "acc": torch.tensor(1.0)})
    with pytest.raises(ConfigError, match=r"\['acc', 'ce'\]"):
        wrapped.check(torch.randn(B, C), torch.zeros(B, dtype=torch.long))


def test_check_refuses_a_loss_that_cannot_take_the_output() -> None:
    wrapped = PerSampleLoss(nn.CrossEntropyLoss())
    with pytest.raises(ConfigError, match=r"Tensor\[6, 5, 4\] float32.*transpose"):
        wrapped.check(torch.randn(B, 5, C), torch.zeros(B, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match="CrossEntropyLoss cannot take"):
        wrapped.check(torch.randn(B, C), torch.zeros(B + 1, dtype=torch.long))
    assert wrapped.loss_fn.reduction == "mean"  # restored after the failing call


def test_check_refuses_a_loss_of_the_wrong_shape() -> None:
    wrapped = PerSampleLoss(lambda o, t: (o - t).pow(2).reshape(-1))
    with pytest.raises(ConfigError, match="one value per sample"):
        wrapped.check(torch.randn(B, 2), torch.randn(B, 2))


class DoubledMean(nn.Module):
    """A custom loss with a reduction attribute but its own rule for "mean"."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        values = (o - t).abs()
        return values if self.reduction == "none" else 2 * values.mean()


def test_check_falls_back_to_the_users_scalar_when_a_custom_reduction_differs() -> None:
    output, target = leaf(B, 2, seed=11), torch.randn(B, 2)
    wrapped = PerSampleLoss(DoubledMean())
    wrapped.check(output, target)
    result = wrapped(output, target)
    assert wrapped.method == "vmap"
    assert torch.allclose(result.loss, 2 * (output - target).abs().mean())
    assert_close_with_nan(result.per_sample, (2 * (output.detach() - target).abs().mean(1)).tolist())


class IgnoresReduction(nn.Module):
    reduction = "mean"

    def forward(self, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(o, t)


def test_a_module_that_ignores_reduction_none_is_treated_as_a_scalar_callable() -> None:
    output, target = leaf(B, 3, seed=12), torch.randn(B, 3)
    per_sample = assert_matches_user_loss(IgnoresReduction(), output, target, method="vmap")
    assert_close_with_nan(per_sample, (output.detach() - target).abs().mean(1).tolist())


def test_per_sample_grad_norm_equals_one_backward_per_sample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 2))
    model[0].bias.requires_grad_(False)
    x, y = torch.randn(B, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    loss_fn = nn.CrossEntropyLoss()
    norms = per_sample_grad_norm(model, loss_fn, x, y, chunk_size=4)
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    expected = []
    for i in range(B):
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), trainable)
        expected.append(float(torch.sqrt(sum((g**2).sum() for g in grads))))
    assert_close_with_nan(norms, expected)


def test_classification_fields_for_multiclass_logits_match_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 4.0, 1.5], [0.5, 0.2, 0.1]])
    target = torch.tensor([0, 1, 1, 2])
    fields = classification_fields(logits, target)
    assert fields["label"].tolist() == [0, 1, 1, 2]
    assert fields["pred"].tolist() == [0, 2, 1, 0]
    assert fields["correct"].tolist() == [True, False, True, False]
    expected = []
    for row in logits.tolist():
        probs = sorted((math.exp(v) / sum(math.exp(u) for u in row) for v in row), reverse=True)
        expected.append(probs[0] - probs[1])
    assert_close_with_nan(fields["margin"], expected)
    assert fields["margin"].dtype == np.float32 and fields["correct"].dtype == np.bool_
    assert fields["label"].dtype == fields["pred"].dtype == np.int64


def test_classification_margins_of_extreme_and_non_finite_logits() -> None:
    logits = torch.tensor([[1000.0, -1000.0, 0.0], [5.0, 5.0, 5.0], [float("nan"), 0.0, 1.0]])
    fields = classification_fields(logits, torch.tensor([0, 1, 2]))
    margin = fields["margin"].tolist()
    assert margin[0] == 1.0 and margin[1] == 0.0 and math.isnan(margin[2])


def test_classification_fields_for_binary_logits_use_a_sigmoid() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.3], [-0.2]])
    target = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    fields = classification_fields(logits, target)
    assert fields["pred"].tolist() == [1, 0, 1, 0]
    assert fields["correct"].tolist() == [True, False, False, True]
    expected = [abs(2 / (1 + math.exp(-v)) - 1) for v in [2.0, -1.0, 0.3, -0.2]]
    assert_close_with_nan(fields["margin"], expected)
    probs = classification_fields(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 1.0]), kind="binary", probabilities=True)
    assert probs["pred"].tolist() == [1, 0]
    assert_close_with_nan(probs["margin"], [0.8, 0.6])


@pytest.mark.parametrize(
    ("output", "target"),
    [
        (torch.randn(4), torch.tensor([0.5, 1.0, 2.0, 0.0])),  # regression
        (torch.randn(4, 3), torch.softmax(torch.randn(4, 3), 1)),  # soft targets
        (torch.randn(4, 5, 3), torch.zeros(4, 5, dtype=torch.long)),  # sequences
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long)),  # one class
    ],
    ids=["regression", "soft-targets", "sequence", "one-column-int-target"],
)
def test_other_outputs_get_no_classification_fields(output: torch.Tensor, target: torch.Tensor) -> None:
    assert classification_kind(output, target) is None
    assert classification_fields(output, target) is None


def test_a_kind_that_does_not_fit_the_shapes_is_refused() -> None:
    with pytest.raises(ConfigError, match="multiclass"):
        classification_fields(torch.randn(4), torch.zeros(4, dtype=torch.long), kind="multiclass")


def test_the_modules_reduction_is_restored_when_the_unreduced_call_raises() -> None:
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    wrapped = PerSampleLoss(loss_fn)
    with pytest.raises((ValueError, RuntimeError)):
        wrapped(torch.randn(B, C), torch.zeros(B + 2, dtype=torch.long), batch_size=B)
    assert loss_fn.reduction == "sum"


def test_the_host_and_device_margin_paths_agree() -> None:
    from onthefly.session.classify import _top_two, _top_two_on_device

    scores = torch.randn(257, 7) * 4
    scores[3] = torch.tensor([2.0, 2.0, -1.0, 0.0, 0.0, 0.0, 0.0])  # a tie: margin 0
    pred_host, margin_host = _top_two(scores)
    pred_dev, margin_dev = _top_two_on_device(scores)
    assert margin_host.dtype == margin_dev.dtype == np.float32
    np.testing.assert_allclose(margin_host, margin_dev, rtol=1e-5, atol=1e-6)
    distinct = margin_dev > 1e-6
    assert (pred_host[distinct] == pred_dev[distinct]).all() and margin_host[3] == 0.0
    assert _top_two(torch.empty(0, 3))[0].shape == (0,)


def test_cpu_scores_with_few_classes_go_to_the_writer_which_derives_the_same_fields() -> None:
    from onthefly.session.classify import DEFERRED_MAX_CLASSES, scores_deferred
    from onthefly.store.shards.scores import fields_from_scores

    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    assert scores_deferred(logits, target, kind="multiclass")
    direct = classification_fields(logits, target)
    derived = fields_from_scores(logits.detach().numpy(), target.numpy())
    for name in ("pred", "correct", "margin"):
        assert direct[name].tolist() == derived[name].tolist()
    wide = torch.randn(3, DEFERRED_MAX_CLASSES + 1)
    assert not scores_deferred(wide, torch.tensor([0, 1, 2]), kind="multiclass")  # computed where they are
    assert not scores_deferred(torch.randn(3), torch.tensor([0.0, 1.0, 1.0]), kind="binary")
    assert not scores_deferred(logits, target, kind=None)
