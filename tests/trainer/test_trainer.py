"""The Trainer end to end: the README's script, per-sample rows, non-finite
steps and the errors given before training starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onthefly
from onthefly import Trainer
from onthefly.errors import ConfigError, TrainingError
from tests.trainer.fixtures import build, loaders, weights

SEED_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "seed_minimal_script.py"


def test_the_readme_minimal_script_runs_unchanged_and_records_every_sample(tmp_path, isolated_store):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, str(SEED_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    con = onthefly.sql(home=isolated_store)
    counts = dict(con.execute("SELECT split, count(*) FROM samples GROUP BY split").fetchall())
    assert counts == {"train": 3 * 3072, "val": 3 * 768, "test": 256}
    # every training sample exactly once per epoch, ids from the base dataset
    per_epoch = con.execute(
        "SELECT epoch, count(DISTINCT sample_id), min(sample_id) >= 0, max(sample_id) < 4096 "
        "FROM samples WHERE split = 'train' GROUP BY epoch ORDER BY epoch"
    ).fetchall()
    assert per_epoch == [(e, 3072, True, True) for e in range(3)]
    assert con.execute("SELECT count(*) FROM tests").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM epochs WHERE split = 'train'").fetchone()[0] == 3
    assert con.execute("SELECT max(step) FROM steps").fetchone()[0] == 3 * 24


def test_per_sample_rows_equal_the_loss_computed_by_hand():
    torch.manual_seed(0)
    x = torch.randn(96, 5)
    y = torch.randint(0, 3, (96,))
    model = nn.Linear(5, 3)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights never move: rows are checkable
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
    trainer = Trainer(project="rows", max_epochs=2, connect_dashboard=False, progress=False)
    trainer.fit(model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=loader)
    rows = trainer.session.query(
        "SELECT epoch, sample_id, loss, label, pred, correct, margin FROM samples WHERE split = 'train' "
        "ORDER BY epoch, sample_id"
    )["rows"]
    trainer.close()
    assert len(rows) == 2 * 96
    with torch.no_grad():
        logits = x @ frozen["weight"].T + frozen["bias"]
        expected = nn.functional.cross_entropy(logits, y, reduction="none")
        probs = logits.softmax(-1).sort(-1, descending=True).values
    for _epoch, sid, loss, label, pred, correct, margin in rows:
        assert loss == pytest.approx(float(expected[sid]), rel=1e-5, abs=1e-6)
        assert label == int(y[sid]) and pred == int(logits[sid].argmax())
        assert correct == (label == pred)
        assert margin == pytest.approx(float(probs[sid, 0] - probs[sid, 1]), abs=1e-5)


class ReusedBuffers:
    """A collate that writes every batch into the same two tensors, as FFCV and DALI loaders do."""

    def __init__(self, batch_size: int, features: int):
        self.x = torch.empty(batch_size, features)
        self.y = torch.empty(batch_size, dtype=torch.int64)

    def __call__(self, items):
        n = len(items)
        torch.stack([x for x, _ in items], out=self.x[:n])
        self.y[:n] = torch.stack([y for _, y in items])
        return self.x[:n], self.y[:n]


def test_labels_stay_right_when_the_loader_reuses_its_batch_buffers():
    torch.manual_seed(0)
    x, y = torch.randn(96, 5), torch.randint(0, 3, (96,))
    model = nn.Linear(5, 3)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, collate_fn=ReusedBuffers(8, 5))
    trainer = Trainer(project="rows", max_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=loader,
    )
    rows = trainer.session.query("SELECT sample_id, label FROM samples ORDER BY sample_id")["rows"]
    trainer.close()
    assert [tuple(r) for r in rows] == [(i, int(y[i])) for i in range(96)]


class NaNAfter(nn.Module):
    """Cross-entropy that turns NaN for the steps listed in ``bad``."""

    def __init__(self, bad: set[int]):
        super().__init__()
        self.calls = 0
        self.bad = bad
        self.inner = nn.CrossEntropyLoss(reduction="none")

    def forward(self, out, y):
        value = self.inner(out, y)
        if not torch.is_grad_enabled():  # the first-batch check runs under no_grad: not a training call
            return value
        self.calls += 1
        if self.calls in self.bad:
            value = value * float("nan")
        return value


def test_a_nonfinite_step_is_skipped_and_leaves_the_model_unchanged():
    model, optimizer, _ = build()
    train_loader, _, _ = loaders()

    trainer = Trainer(project="nan", max_steps=4, connect_dashboard=False, progress=False)
    loss = NaNAfter(bad={2})
    trainer.fit(model=model, optimizer=optimizer, loss_fn=loss, train_loader=train_loader)
    events = trainer.session.query("SELECT kind, step FROM events WHERE kind = 'nonfinite'")["rows"]
    assert events == [["nonfinite", 2]]
    assert trainer.session.status()["step"] == 4  # the skipped batch did not count as a step
    nan_rows = trainer.session.query("SELECT count(*) FILTER (isnan(loss)) FROM samples")["rows"][0][0]
    assert nan_rows == 16
    trainer.close()


def test_five_nonfinite_steps_in_a_row_raise_naming_the_step_and_samples():
    model, optimizer, _ = build()
    train_loader, _, _ = loaders()
    start = weights(model)
    trainer = Trainer(project="nan", max_epochs=1, connect_dashboard=False, progress=False)
    with pytest.raises(TrainingError, match=r"5 steps in a row.*step 1.*samples \["):
        trainer.fit(
            model=model, optimizer=optimizer, loss_fn=NaNAfter(bad=set(range(1, 100))), train_loader=train_loader
        )
    for k, v in weights(model).items():
        assert torch.equal(v, start[k]), "a non-finite step changed the model"
    assert trainer.session.status()["state"] == "finished"
    trainer.close()


def test_a_loader_the_model_cannot_take_is_refused_before_training():
    model = nn.Linear(4, 2)
    loader = DataLoader(TensorDataset(torch.randn(8, 7), torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = Trainer(project="bad", max_epochs=1, connect_dashboard=False, progress=False)
    with pytest.raises(ConfigError, match=r"first batch of train_loader \(tensor \(4, 7\).*mat1 and mat2"):
        trainer.fit(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            train_loader=loader,
        )
    trainer.close()


def test_a_checkpoint_of_another_model_is_refused_with_the_keys():
    model, optimizer, _ = build()
    train_loader, _, _ = loaders()
    trainer = Trainer(project="a", max_steps=2, connect_dashboard=False, progress=False)
    trainer.fit(model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=train_loader)
    checkpoint = trainer.session.status()["checkpoint"]
    trainer.close()
    other = nn.Sequential(nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="does not match this model"):
        Trainer(project="b", max_steps=2, connect_dashboard=False, progress=False).fit(
            model=other,
            optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(),
            train_loader=train_loader,
            resume_from=checkpoint,
        )


def test_arguments_are_checked_when_the_trainer_is_built():
    with pytest.raises(ConfigError, match="set max_epochs or max_steps"):
        Trainer(project="x")
    with pytest.raises(ConfigError, match="val_every_n_epochs"):
        Trainer(project="x", max_epochs=1, val_every_n_epochs=-1)


def test_per_sample_gradient_norms_are_recorded_when_asked():
    model, optimizer, _ = build()
    train_loader, _, _ = loaders()
    trainer = Trainer(project="gn", max_steps=3, per_sample_grad_norm=True, connect_dashboard=False, progress=False)
    trainer.fit(model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), train_loader=train_loader)
    rows = trainer.session.query("SELECT count(*), count(grad_norm), min(grad_norm) FROM samples")["rows"][0]
    trainer.close()
    assert rows[0] == 48 and rows[1] == 48 and rows[2] > 0
