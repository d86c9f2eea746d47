"""transformers-style models: spreading dict batches, reading outputs, per-sample loss from the logits.

Tiny models built from a config (random weights, nothing downloaded), dropout off
so the model's own loss and the values computed from its logits see the same forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onthefly.errors import ConfigError
from onthefly.session.model_io import (
    BatchForward,
    ModelOutputLoss,
    SpreadPlan,
    call_spread,
    forward_batch,
    forward_params,
    has_logits,
    output_parts,
    problem_type_of,
    sequence_per_sample,
    spread_plan,
    task_of,
    token_per_sample,
    token_weighted_mean,
)

transformers = pytest.importorskip("transformers")
from tests.session.tiny_models import tiny_bert, tiny_gpt2  # noqa: E402  (after the skip)

VOCAB, B, T = 50, 4, 7


def lm_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, VOCAB, (B, T), generator=generator)
    labels = input_ids.clone()
    labels[1, 4:] = -100  # padding
    labels[2, 0] = -100  # a prompt token
    labels[3, 1:] = -100  # only the first token kept: after the shift nothing is left
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(B, T, dtype=torch.long),
        "labels": labels,
        "idx": torch.arange(B),
    }


def hand_causal_lm(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per sequence, by hand: token t predicts label t + 1; mean over kept tokens."""
    values = []
    for row in range(logits.shape[0]):
        kept = [(t, int(labels[row, t + 1])) for t in range(logits.shape[1] - 1) if labels[row, t + 1] != -100]
        if not kept:
            values.append(float("nan"))
            continue
        losses = [float(F.cross_entropy(logits[row, t].double(), torch.tensor(y))) for t, y in kept]
        values.append(sum(losses) / len(losses))
    return values


# ----------------------------------------------------------------- the call
def test_forward_params_are_read_once_per_class_and_see_kwargs() -> None:
    model = tiny_gpt2()
    params = forward_params(model)
    assert {"input_ids", "attention_mask", "labels"} <= params.names
    assert params.var_keyword and not params.required
    assert forward_params(tiny_gpt2()) is params  # cached per class
    assert forward_params(nn.Linear(2, 2)).required == frozenset({"input"})
    assert forward_params(nn.DataParallel(model)) is params  # wrappers are looked through


def test_a_transformers_batch_is_spread_with_labels_and_without_ids() -> None:
    model = tiny_gpt2()
    batch = lm_batch()
    plan = spread_plan(model, batch)
    assert plan == SpreadPlan(inputs=("input_ids", "attention_mask"), label_key="labels", label_arg="labels")
    out = call_spread(model, batch, plan)
    assert out.logits.shape == (B, T, VOCAB) and out.loss is not None


def test_a_label_key_is_passed_as_labels_and_unnamed_keys_are_left_out() -> None:
    model = tiny_bert()
    batch = {
        "input_ids": torch.zeros(2, 3, dtype=torch.long),
        "label": torch.tensor([0, 1]),
        "text_length": torch.tensor([3, 3]),
        "sample_id": torch.tensor([5, 6]),
    }
    assert spread_plan(model, batch) == SpreadPlan(inputs=("input_ids",), label_key="label", label_arg="labels")


def test_batches_the_usual_path_fits_and_forwards_that_name_nothing_are_not_spread() -> None:
    class Named(nn.Module):
        def forward(self, x, y=None):
            return x

    assert spread_plan(Named(), {"x": torch.zeros(2), "y": torch.zeros(2)}) is None  # (inputs, target) already
    assert spread_plan(Named(), torch.zeros(2)) is None
    assert spread_plan(nn.Linear(2, 2), {"input_ids": torch.zeros(2)}) is None  # `input` required, not given
    assert spread_plan(Named(), {"tokens": torch.zeros(2), "labels": torch.zeros(2)}) is None  # names nothing


def test_a_kwargs_only_forward_gets_every_key_but_ids_and_labels() -> None:
    class Wrapper(nn.Module):
        def forward(self, **kwargs):
            return sorted(kwargs)

    batch = {"a": torch.zeros(2), "b": torch.zeros(2), "index": torch.arange(2), "labels": torch.zeros(2)}
    plan = spread_plan(Wrapper(), batch)
    assert plan == SpreadPlan(inputs=("a", "b"), label_key="labels", label_arg=None)
    assert call_spread(Wrapper(), batch, plan) == ["a", "b"]


def test_an_id_key_the_forward_names_is_passed() -> None:
    class WithIndex(nn.Module):
        def forward(self, tokens, index):
            return tokens

    plan = spread_plan(WithIndex(), {"tokens": torch.zeros(2), "index": torch.arange(2)})
    assert plan.inputs == ("tokens", "index")


def test_forward_batch_spreads_transformers_batches_and_keeps_the_usual_path() -> None:
    model = tiny_bert().eval()
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "label": torch.tensor([0, 2])}
    step = forward_batch(model, batch)
    assert step.plan.label_arg == "labels" and step.target is batch["label"]
    assert step.inputs == {"input_ids": batch["input_ids"], "labels": batch["label"]}
    assert step.scores is step.output.logits and step.output.loss is not None
    assert step.loss_input(ModelOutputLoss(model)) is step.output
    assert step.loss_input(object()) is step.scores  # a user loss gets the logits
    plain = forward_batch(nn.Linear(2, 3), {"x": torch.zeros(4, 2), "y": torch.zeros(4)})
    assert plain.plan is None and plain.scores.shape == (4, 3) and plain.target.shape == (4,)
    assert plain.inputs.shape == (4, 2)
    with pytest.raises(ConfigError):
        forward_batch(nn.Linear(2, 3), {"features_only": torch.zeros(4, 2)})


def test_batch_forward_gives_what_forward_batch_gives_and_plans_once_per_structure(monkeypatch) -> None:
    from onthefly.session import model_io

    model = tiny_bert().eval()
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "label": torch.tensor([0, 2])}
    forward = BatchForward(model, ModelOutputLoss(model))
    inputs, scores, target, loss_input = forward(batch)
    step = forward_batch(model, batch)
    assert inputs.keys() == step.inputs.keys() and target is batch["label"]
    assert torch.equal(scores, step.scores) and loss_input.logits is scores  # ModelOutputLoss: the whole output
    planned = []
    monkeypatch.setattr(model_io, "spread_plan", lambda *a: planned.append(a) or step.plan)
    forward(batch)
    forward({"input_ids": batch["input_ids"], "label": batch["label"]})
    assert planned == []  # the same structure: the plan made on the first batch
    plain = BatchForward(nn.Linear(2, 3), object())
    inputs, scores, target, loss_input = plain((torch.zeros(4, 2), torch.zeros(4)))
    assert scores.shape == (4, 3) and loss_input is scores and inputs.shape == (4, 2) and target.shape == (4,)
    assert planned == []  # an (x, y) batch never plans
    monkeypatch.undo()
    with pytest.raises(ConfigError):
        plain({"features_only": torch.zeros(4, 2)})


# ----------------------------------------------------------------- outputs
def test_output_parts_reads_model_outputs_dicts_tuples_objects_and_tensors() -> None:
    logits, loss = torch.randn(2, 3), torch.tensor(0.5)
    out = transformers.modeling_outputs.SequenceClassifierOutput(loss=loss, logits=logits)
    assert output_parts(out) == (logits, loss)
    no_loss = transformers.modeling_outputs.SequenceClassifierOutput(logits=logits)
    assert output_parts(no_loss) == (logits, None)
    assert output_parts({"logits": logits, "loss": loss}) == (logits, loss)
    assert output_parts((loss, logits, torch.zeros(1))) == (logits, loss)
    assert output_parts((logits, torch.zeros(2))) == (logits, None)
    assert output_parts(logits) == (logits, None)

    class Out:
        def __init__(self):
            self.logits, self.loss = logits, None

    assert output_parts(Out()) == (logits, None)
    assert has_logits(out) and has_logits({"logits": logits}) and not has_logits(logits)
    with pytest.raises(ConfigError, match="cannot find the logits"):
        output_parts({"scores": logits})


# ----------------------------------------------------------------- per-sample values
def test_token_per_sample_matches_a_hand_computation_with_shift_and_ignored_tokens() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(B, T, VOCAB, generator=generator)
    labels = lm_batch()["labels"]
    values, tokens = token_per_sample(logits, labels)
    expected = hand_causal_lm(logits, labels)
    assert tokens.tolist() == [T - 1, 3, T - 1, 0]
    assert torch.isnan(values[3]) and values.dtype == torch.float32
    torch.testing.assert_close(
        values[:3].double(), torch.tensor(expected[:3], dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
    unshifted, counts = token_per_sample(logits, labels, shift=False)
    assert counts.tolist() == [T, 4, T - 1, 1]
    direct = F.cross_entropy(logits[3, 0], labels[3, 0])
    torch.testing.assert_close(unshifted[3], direct)


def test_gpt2_per_sequence_values_weighted_by_tokens_equal_its_own_loss() -> None:
    model = tiny_gpt2().eval()
    batch = lm_batch()
    out = call_spread(model, batch, spread_plan(model, batch))
    loss = ModelOutputLoss(model)
    result = loss(out, batch["labels"], batch_size=B)
    assert loss.task == "causal_lm" and loss.method == "model_output"
    assert result.loss is out.loss  # the model's own loss is backpropagated
    expected = hand_causal_lm(out.logits.detach(), batch["labels"])
    torch.testing.assert_close(
        result.per_sample[:3].double(), torch.tensor(expected[:3], dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
    assert torch.isnan(result.per_sample[3])
    torch.testing.assert_close(
        token_weighted_mean(result.per_sample, loss.tokens), out.loss.detach(), rtol=1e-6, atol=1e-7
    )
    loss.check(out, batch["labels"], batch_size=B)  # consistent: no error
    result.loss.backward()
    assert model.lm_head.weight.grad is not None


def test_without_labels_in_the_call_the_reduced_loss_equals_transformers_and_has_gradients() -> None:
    model = tiny_gpt2().eval()
    batch = lm_batch()
    with_labels = model(input_ids=batch["input_ids"], labels=batch["labels"])
    without = model(input_ids=batch["input_ids"])
    result = ModelOutputLoss(model)(without, batch["labels"])
    torch.testing.assert_close(result.loss.detach(), with_labels.loss.detach(), rtol=1e-6, atol=1e-7)
    assert result.loss.requires_grad


@pytest.mark.parametrize(
    "num_labels, problem, labels",
    [
        (3, "single_label_classification", torch.tensor([0, 2, 1, 2])),
        (1, "regression", torch.tensor([0.5, -1.0, 2.0, 0.0])),
        (3, "multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])),
    ],
)
def test_bert_classifier_rows_match_a_hand_computation_and_average_to_its_loss(num_labels, problem, labels) -> None:
    model = tiny_bert(num_labels).eval()
    batch = {
        "input_ids": torch.randint(1, VOCAB, (B, 5), generator=torch.Generator().manual_seed(3)),
        "attention_mask": torch.ones(B, 5, dtype=torch.long),
        "labels": labels,
    }
    out = call_spread(model, batch, spread_plan(model, batch))
    assert model.config.problem_type == problem == problem_type_of(out.logits, labels)
    loss = ModelOutputLoss(model)
    result = loss(out, labels, batch_size=B)
    assert loss.task == "sequence" and result.loss is out.loss
    logits = out.logits.detach()
    if problem == "single_label_classification":
        hand = [float(F.cross_entropy(logits[i], labels[i])) for i in range(B)]
    elif problem == "regression":
        hand = [float((logits[i, 0] - labels[i]) ** 2) for i in range(B)]
    else:
        hand = [float(F.binary_cross_entropy_with_logits(logits[i], labels[i])) for i in range(B)]
    torch.testing.assert_close(result.per_sample, torch.tensor(hand), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.per_sample.mean(), out.loss.detach(), rtol=1e-6, atol=1e-7)
    loss.check(out, labels, batch_size=B)
    without = ModelOutputLoss(model)(model(input_ids=batch["input_ids"]), labels)
    torch.testing.assert_close(without.loss.detach(), out.loss.detach(), rtol=1e-6, atol=1e-7)


def test_a_model_loss_that_is_not_the_plain_one_is_reported_at_the_check() -> None:
    logits, labels = torch.randn(B, 3), torch.tensor([0, 1, 2, 0])
    plain = F.cross_entropy(logits, labels)
    smoothed = {"logits": logits, "loss": plain + 0.25}

    class Classifier(nn.Module):
        pass

    loss = ModelOutputLoss(Classifier())
    loss.check({"logits": logits, "loss": plain}, labels)
    with pytest.raises(ConfigError, match="the model's own loss is"):
        loss.check(smoothed, labels)


def test_task_of_reads_loss_type_class_names_and_shapes() -> None:
    assert task_of(tiny_gpt2(), torch.zeros(2, 3, VOCAB), torch.zeros(2, 3, dtype=torch.long)) == "causal_lm"
    assert task_of(tiny_bert(), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)) == "sequence"
    assert task_of(nn.Linear(1, 1), torch.zeros(2, 3), torch.zeros(2)) == "sequence"
    assert task_of(nn.Linear(1, 1), torch.zeros(2, 3, 5), torch.zeros(2, 3)) == "token"
    assert task_of(nn.Linear(1, 1), torch.zeros(2, 3, 5), torch.zeros(4)) is None
    masked = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    assert task_of(masked, torch.zeros(2, 3, VOCAB), torch.zeros(2, 3, dtype=torch.long)) == "token"


def test_missing_labels_unknown_tasks_and_problem_types_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs the batch's labels"):
        ModelOutputLoss(tiny_bert())({"logits": torch.zeros(2, 3)}, None)
    with pytest.raises(ConfigError, match="cannot tell how"):
        ModelOutputLoss(nn.Linear(1, 1))({"logits": torch.zeros(2, 3, 4)}, torch.zeros(5))
    with pytest.raises(ConfigError, match="problem_type"):
        sequence_per_sample(torch.zeros(2, 3), torch.zeros(2), problem_type="ranking")
