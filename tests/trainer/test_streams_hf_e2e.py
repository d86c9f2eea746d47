"""End to end: the native Trainer on streams (IterableDataset, ids, progress without a total, mid-epoch
resume of stateful and stateless streams) and transformers-style models (dict batches spread into
``model(**batch)``, ``loss_fn=None``: the model's own loss, per-sample values from its logits)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from onthefly import Trainer

transformers = pytest.importorskip("transformers")
from tests.session.tiny_models import tiny_bert, tiny_gpt2  # noqa: E402  (after the skip)

StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader

N, FEATURES, CLASSES, BATCH = 30, 5, 3, 4  # 8 batches an epoch, the last one of 2


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(N, FEATURES, generator=generator), torch.randint(0, CLASSES, (N,), generator=generator)


class Stream(IterableDataset):
    """A generator-backed stream of dict samples; no __len__, no state."""

    def __init__(self, *, id_key: str | None = None) -> None:
        self.x, self.y = data()
        self.id_key = id_key

    def __iter__(self):
        for i in range(N):
            item = {"x": self.x[i], "y": self.y[i]}
            if self.id_key:
                item[self.id_key] = torch.tensor(1000 + i)
            yield item


def model_and_optimizer(lr: float = 0.0):
    torch.manual_seed(0)
    model = nn.Linear(FEATURES, CLASSES)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def train_rows(trainer) -> list[tuple]:
    return [
        tuple(r)
        for r in trainer.session.query(
            "SELECT epoch, sample_id, loss FROM samples WHERE split = 'train' ORDER BY epoch, sample_id"
        )["rows"]
    ]


def events(trainer) -> list[str]:
    return [r[0] for r in trainer.session.query("SELECT message FROM events")["rows"]]


def expected_losses(model_state) -> torch.Tensor:
    x, y = data()
    with torch.no_grad():
        return F.cross_entropy(x @ model_state["weight"].T + model_state["bias"], y, reduction="none")


# ----------------------------------------------------------------- streams
@pytest.mark.parametrize("id_key", [None, "sample_id", "idx"])
def test_an_iterable_dataset_trains_with_one_row_per_sample_per_epoch(id_key):
    model, optimizer = model_and_optimizer()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(project="stream", max_epochs=2, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(Stream(id_key=id_key), batch_size=BATCH),
    )
    rows = train_rows(trainer)
    trainer.close()
    offset = 1000 if id_key else 0  # positions in the epoch's stream without an id key
    assert [(e, s) for e, s, _ in rows] == [(e, offset + i) for e in range(2) for i in range(N)]
    losses = expected_losses(frozen)
    for _, sid, loss in rows:
        assert loss == pytest.approx(float(losses[sid - offset]), rel=1e-5, abs=1e-6)


def test_a_sample_ids_callable_names_the_samples():
    model, optimizer = model_and_optimizer()
    trainer = Trainer(project="stream", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(Stream(id_key="uid"), batch_size=BATCH),
        sample_ids=lambda batch: batch["uid"] * 2,
    )
    ids = [s for _, s, _ in train_rows(trainer)]
    trainer.close()
    assert ids == [2 * (1000 + i) for i in range(N)]


def test_progress_on_a_stream_counts_batches_without_a_total(capsys):
    model, optimizer = model_and_optimizer()
    trainer = Trainer(project="stream", max_epochs=1, connect_dashboard=False, progress=True)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(Stream(), batch_size=BATCH),
    )
    trainer.close()
    captured = capsys.readouterr()
    assert "train:8batch[" in (captured.out + captured.err).replace(" ", "")  # no total: "8batch [..]", no "8/8"


@pytest.mark.parametrize("stateful", [True, False])
def test_a_stream_resumed_mid_epoch_trains_exactly_the_remaining_batches_bitwise(stateful):
    def loader():
        return (StatefulDataLoader if stateful else DataLoader)(Stream(), batch_size=BATCH)

    model, optimizer = model_and_optimizer(lr=0.1)
    straight = Trainer(project="straight", max_epochs=2, connect_dashboard=False, progress=False)
    straight.fit(model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=loader())
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    straight.close()

    model, optimizer = model_and_optimizer(lr=0.1)
    first = Trainer(project="first", max_steps=11, connect_dashboard=False, progress=False)  # batch 3 of epoch 1
    first.fit(model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=loader())
    checkpoint = first.session.status()["checkpoint"]
    first.close()

    model, optimizer = model_and_optimizer(lr=0.1)
    resumed = Trainer(project="resumed", max_epochs=2, connect_dashboard=False, progress=False)
    resumed.fit(
        model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=loader(), resume_from=checkpoint
    )
    rows = train_rows(resumed)
    lines = [m for m in events(resumed) if m.startswith("resuming the stream")]
    resumed.close()
    assert [(e, s) for e, s, _ in rows] == [(1, i) for i in range(3 * BATCH, N)]  # the rest of epoch 1, once
    assert len(lines) == 1
    assert ("saved state" in lines[0]) == stateful
    assert ("reading and dropping the 3 batches" in lines[0]) == (not stateful)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key


# ----------------------------------------------------------------- transformers-style models
VOCAB, T = 50, 6


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int = 12, *, label_key: str = "labels", classify: bool = False) -> None:
        generator = torch.Generator().manual_seed(1)
        self.ids = torch.randint(1, VOCAB, (n, T), generator=generator)
        self.labels = torch.randint(0, 3, (n,), generator=generator) if classify else self.ids.clone()
        if not classify:
            self.labels[1, 3:] = -100
            self.labels[2, 1:] = -100  # nothing left after the shift: NaN
        self.label_key = label_key

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(T, dtype=torch.long),
            self.label_key: self.labels[i],
        }


def test_a_causal_lm_trains_from_dict_batches_with_one_row_per_sequence_as_computed_by_hand():
    model = tiny_gpt2()
    data = TokenData()
    with torch.no_grad():
        logits = model.eval()(input_ids=data.ids).logits
    expected = []
    for row in range(len(data)):
        kept = [t for t in range(T - 1) if data.labels[row, t + 1] != -100]
        expected.append(
            math.nan
            if not kept
            else float(torch.stack([F.cross_entropy(logits[row, t], data.labels[row, t + 1]) for t in kept]).mean())
        )
    trainer = Trainer(project="lm", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=None,
        train_loader=DataLoader(data, batch_size=4),
    )
    rows = train_rows(trainer)
    trainer.close()
    assert [s for _, s, _ in rows] == list(range(len(data)))
    for _, sid, loss in rows:
        if math.isnan(expected[sid]):
            assert loss is None or math.isnan(loss)
        else:
            assert loss == pytest.approx(expected[sid], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("label_key", ["labels", "label"])
def test_a_sequence_classifier_trains_with_its_own_loss_and_rows_per_example(label_key):
    model = tiny_bert()
    data = TokenData(classify=True, label_key=label_key)
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(input_ids=data.ids).logits, data.labels, reduction="none")
    trainer = Trainer(project="cls", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=None,
        train_loader=DataLoader(data, batch_size=4),
    )
    rows = trainer.session.query("SELECT sample_id, loss, label FROM samples ORDER BY sample_id")["rows"]
    trainer.close()
    assert len(rows) == len(data)
    for sid, loss, label in rows:
        assert loss == pytest.approx(float(expected[sid]), rel=1e-5, abs=1e-6)
        assert label == int(data.labels[sid])


def test_a_user_loss_on_a_model_output_gets_the_logits():
    model = tiny_bert()
    data = TokenData(classify=True)
    trainer = Trainer(project="cls", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=DataLoader(data, batch_size=4),
    )
    assert trainer.session.query("SELECT count(*) FROM samples")["rows"][0][0] == len(data)
    trainer.close()


def test_a_model_computing_its_own_loss_cannot_have_per_sample_grad_norms():
    from onthefly.errors import ConfigError

    model = tiny_bert()
    trainer = Trainer(project="cls", max_epochs=1, connect_dashboard=False, progress=False, per_sample_grad_norm=True)
    with pytest.raises(ConfigError, match="per_sample_grad_norm=True needs a loss_fn"):
        trainer.fit(
            model, torch.optim.SGD(model.parameters(), lr=0.0), None, DataLoader(TokenData(classify=True), batch_size=4)
        )
    trainer.close()
