"""attach_lightning on each way a LightningModule computes its loss, end to end through trainer.fit.

Every test checks one row per sample per epoch and the recorded values against
a hand computation from the very output the training forward made (a forward
hook keeps it, and counts the forwards: OnTheFly adds none). Loaders do not
shuffle, so the rows of step s sorted by sample id are batch s in order.
"""

from __future__ import annotations

import pickle

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.demos.boring_classes import (
    BoringModel,
    DemoModel,
    ManualOptimBoringModel,
    RandomDataset,
)
from lightning.pytorch.demos.lstm import LightningLSTM, SequenceSampler
from lightning.pytorch.demos.transformer import LightningTransformer
from lit_models import trainer as make_trainer
from torch import nn
from torch.nn.functional import nll_loss as imported_nll_loss
from torch.utils.data import DataLoader, TensorDataset

from onthefly.lightning import attach_lightning

ORIGINAL = {"cross_entropy": F.cross_entropy, "nll_loss": F.nll_loss}  # a global alias would be intercepted too


def rows(otf, sql):
    return otf.session.query(sql)["rows"]


def per_epoch(otf):
    return rows(
        otf,
        "SELECT epoch, count(*), count(DISTINCT sample_id) FROM samples WHERE split = 'train' "
        "GROUP BY epoch ORDER BY epoch",
    )


def recorded(otf, step):
    got = rows(otf, f"SELECT sample_id, loss FROM samples WHERE split = 'train' AND step = {step} ORDER BY sample_id")
    nan = float("nan")  # a sample with no loss (every position ignored) reads back as NULL
    return torch.tensor([r[0] for r in got]), torch.tensor([nan if r[1] is None else r[1] for r in got])


class Outputs:
    """A forward hook keeping every training output of ``module`` (and counting the forwards)."""

    def __init__(self, module: nn.Module, pick=lambda out: out) -> None:
        self.kept: list[torch.Tensor] = []
        self.pick = pick
        module.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        if module.training:
            self.kept.append(self.pick(out).detach().clone())


def classification_data(n=40, features=6, classes=4):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


# ---------------------------------------------------------------------- a method of the class (BoringModel)
@pytest.mark.parametrize("cls", [BoringModel, ManualOptimBoringModel])
@pytest.mark.parametrize("given", [True, False])
def test_boring_models_loss_method_of_the_output_alone_gives_each_samples_mean_squared_error(cls, given):
    L.seed_everything(0, verbose=False)
    model = cls()
    outputs = Outputs(model.layer)
    train = DataLoader(RandomDataset(32, 48), batch_size=8)
    trainer = make_trainer(2, limit_val_batches=0)
    otf = attach_lightning(
        trainer=trainer, model=model, project="p", train_loader=train, loss_fn=model.loss if given else None
    )
    assert otf._loss_plan.strategy == "method"
    trainer.fit(model)
    assert per_epoch(otf) == [[0, 48, 48], [1, 48, 48]]
    assert len(outputs.kept) == 12  # one forward a batch: none added
    assert "loss" not in vars(model)  # the class' method is the module's loss again
    for step in (1, 8):
        ids, losses = recorded(otf, step)
        assert ids.tolist() == list(range(((step - 1) % 6) * 8, ((step - 1) % 6) * 8 + 8))
        expected = ((outputs.kept[step - 1] - 1.0) ** 2).mean(1)  # BoringModel.loss: mse against ones
        assert torch.allclose(losses, expected, rtol=1e-5, atol=1e-6)
    assert rows(otf, "SELECT count(*), count(loss) FROM steps") == [[12, 12]]


def test_boring_model_with_its_own_loaders_records_train_and_validation():
    model = BoringModel()  # train_dataloader / val_dataloader hooks of the module, batch size 1
    trainer = make_trainer(1, limit_train_batches=6, limit_val_batches=4)
    otf = attach_lightning(trainer=trainer, model=model, project="p")
    trainer.fit(model)
    assert rows(
        otf, "SELECT split, count(*), count(DISTINCT sample_id) FROM samples GROUP BY split ORDER BY split"
    ) == [["train", 6, 6], ["val", 4, 4]]


# ---------------------------------------------------------------------- an inline functional call
class Inline(L.LightningModule):
    """``training_step`` calls a torch.nn.functional loss inline, in one of several spellings."""

    def __init__(self, spelling: str, **loss_kwargs) -> None:
        super().__init__()
        self.net = nn.Linear(6, 4)
        self.spelling = spelling
        self.loss_kwargs = loss_kwargs
        self.exact = []  # the value training_step got equals the plain function's, to the bit
        self.between = []  # at each epoch end (outside a batch) the function is the original and pickles

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        kwargs = self.loss_kwargs
        if self.spelling == "F":
            loss = F.cross_entropy(logits, y, **kwargs)
        elif self.spelling == "torch.nn.functional":
            loss = torch.nn.functional.cross_entropy(logits, y, **kwargs)
        elif self.spelling == "module":  # torch's loss module calls F.cross_entropy itself
            loss = nn.CrossEntropyLoss(**kwargs)(logits, y)
        else:
            raise AssertionError(self.spelling)
        self.exact.append(torch.equal(loss, ORIGINAL["cross_entropy"](logits, y, **kwargs)))
        return loss

    def on_train_epoch_end(self):
        self.between.append(F.cross_entropy is ORIGINAL["cross_entropy"] and bool(pickle.dumps(F.cross_entropy)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("spelling", ["F", "torch.nn.functional", "module"])
@pytest.mark.parametrize(
    "kwargs", [{}, {"weight": torch.tensor([1.0, 2.0, 0.5, 1.0]), "ignore_index": 2, "label_smoothing": 0.1}]
)
def test_an_inline_cross_entropy_is_recorded_per_sample_with_the_calls_own_arguments(spelling, kwargs):
    L.seed_everything(0, verbose=False)
    model = Inline(spelling, **kwargs)
    outputs = Outputs(model.net)
    x, y = classification_data()
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        loss_fn=F.cross_entropy,
        train_loader=DataLoader(TensorDataset(x, y), batch_size=8),
    )
    trainer.fit(model)
    assert (
        F.cross_entropy is ORIGINAL["cross_entropy"] and torch.nn.functional.cross_entropy is ORIGINAL["cross_entropy"]
    )
    assert per_epoch(otf) == [[0, 40, 40], [1, 40, 40]]
    assert len(outputs.kept) == 10 and all(model.exact) and model.between == [True, True]
    for step in (1, 4, 9):
        ids, losses = recorded(otf, step)
        expected = ORIGINAL["cross_entropy"](outputs.kept[step - 1], y[ids], reduction="none", **kwargs)
        if "ignore_index" in kwargs:
            expected[y[ids] == kwargs["ignore_index"]] = float("nan")  # an ignored sample has no loss
        assert torch.allclose(losses, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    preds = rows(otf, "SELECT pred FROM samples WHERE split = 'train' AND step = 1 ORDER BY sample_id")
    assert [p[0] for p in preds] == outputs.kept[0].argmax(1).tolist()


class ImportedName(L.LightningModule):
    """``from torch.nn.functional import nll_loss as imported_nll_loss``, called by that name."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 4), nn.LogSoftmax(dim=1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 1:
            return None  # Lightning skips this batch
        loss = imported_nll_loss(self.net(x), y)
        return {"loss": loss, "seen": batch_idx}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_name_imported_into_the_modules_globals_and_dict_or_none_returns(capsys):
    model = ImportedName()
    outputs = Outputs(model.net)
    x, y = classification_data()
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        loss_fn=F.nll_loss,
        train_loader=DataLoader(TensorDataset(x, y), batch_size=8),
    )
    trainer.fit(model)
    assert imported_nll_loss is ORIGINAL["nll_loss"] and F.nll_loss is ORIGINAL["nll_loss"]
    assert per_epoch(otf) == [[0, 32, 32], [1, 32, 32]]  # the skipped batch (ids 8..15) has no rows
    assert rows(otf, "SELECT count(*) FROM samples WHERE sample_id BETWEEN 8 AND 15") == [[0]]
    ids, losses = recorded(otf, 1)
    assert torch.allclose(losses, ORIGINAL["nll_loss"](outputs.kept[0], y[ids], reduction="none"), rtol=1e-5, atol=1e-6)
    assert rows(otf, "SELECT count(*) FROM steps") == [[10]]  # Lightning still counts the skipped batch's step
    assert "per-sample" not in capsys.readouterr().out


def test_the_functions_name_is_put_back_when_the_training_step_raises():
    class Failing(Inline):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    model = Failing("F")
    x, y = classification_data()
    trainer = make_trainer(1)
    attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        loss_fn=F.cross_entropy,
        train_loader=DataLoader(TensorDataset(x, y), batch_size=8),
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model)
    assert F.cross_entropy is ORIGINAL["cross_entropy"]


class AutoEncoder(L.LightningModule):
    """Self-supervised: plain tensor batches, the input is the target (``F.mse_loss(self(x), x)``)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 4), nn.Linear(4, 32))

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.net(batch), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_self_supervised_step_on_plain_tensor_batches_gives_each_samples_reconstruction_error():
    L.seed_everything(0, verbose=False)
    model = AutoEncoder()
    outputs = Outputs(model.net)
    data = RandomDataset(32, 24)
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer, model=model, project="p", loss_fn=F.mse_loss, train_loader=DataLoader(data, batch_size=8)
    )
    trainer.fit(model)
    assert per_epoch(otf) == [[0, 24, 24], [1, 24, 24]]
    for step in (1, 6):
        ids, losses = recorded(otf, step)
        expected = ((outputs.kept[step - 1] - data.data[ids]) ** 2).mean(1)
        assert torch.allclose(losses, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- manual optimization, two optimizers
class TinyGAN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(6, 6)
        self.discriminator = nn.Linear(6, 1)

    def training_step(self, batch, batch_idx):
        real, _ = batch
        g_opt, d_opt = self.optimizers()
        fake = self.generator(real)  # the batch itself seeds the generator: reproducible by hand
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)  # the one recorded
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        d_loss = (
            F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
            + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        ) / 2
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.log("d_loss", d_loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.generator.parameters(), lr=0.05), torch.optim.SGD(
            self.discriminator.parameters(), lr=0.05
        )


def test_manual_optimization_with_two_optimizers_records_the_first_loss_of_the_step():
    model = TinyGAN()
    outputs = Outputs(model.discriminator)
    x, y = classification_data()
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        loss_fn=F.binary_cross_entropy_with_logits,
        train_loader=DataLoader(TensorDataset(x, y), batch_size=8),
    )
    trainer.fit(model)
    assert per_epoch(otf) == [[0, 40, 40], [1, 40, 40]]
    assert len(outputs.kept) == 30  # three discriminator forwards a batch, as written
    for batch in (0, 3):  # two optimizer steps a batch: a batch's rows carry the step of its first one
        ids, losses = recorded(otf, 2 * batch + 1)
        assert ids.tolist() == list(range(8 * batch, 8 * batch + 8))
        first = outputs.kept[3 * batch]  # the discriminator's forward on the fakes, the first of three
        expected = F.binary_cross_entropy_with_logits(first, torch.ones(8, 1), reduction="none").flatten()
        assert torch.allclose(losses, expected, rtol=1e-5, atol=1e-6)
    assert rows(otf, "SELECT count(*), count(d_loss) FROM steps") == [[10, 10]]


# ---------------------------------------------------------------------- sequence models, per token
VOCAB, BATCH, TOKENS = 23, 4, 6


def token_data(n=12, ignored=False):
    g = torch.Generator().manual_seed(7)
    inputs = torch.randint(0, VOCAB, (n, TOKENS), generator=g)
    target = torch.randint(0, VOCAB, (n, TOKENS), generator=g)
    if ignored:
        target[0, :2] = -100  # ignore_index of nll_loss: left out of sample 0's mean
        target[5, :] = -100  # every token ignored: sample 5 has no loss (NaN)
    return inputs, target


class QuietLSTM(LightningLSTM):
    def prepare_data(self):  # the demo downloads WikiText2; these tests feed random tokens
        pass


class QuietTransformer(LightningTransformer):
    def prepare_data(self):
        pass


@pytest.mark.parametrize("demo", ["lstm", "lstm-sequence-sampler", "transformer"])
def test_lightnings_language_model_demos_get_each_sequences_mean_token_loss(demo):
    L.seed_everything(0, verbose=False)
    if demo.startswith("lstm"):
        model = QuietLSTM(vocab_size=VOCAB)
        outputs = Outputs(model.model, pick=lambda out: out[0])  # (log-probs, hidden)
    else:
        model = QuietTransformer(vocab_size=VOCAB)
        outputs = Outputs(model.model)
    inputs, target = token_data(ignored=demo != "transformer")  # the transformer embeds its targets: no -100
    data = TensorDataset(inputs, target)
    if demo == "lstm-sequence-sampler":  # the demo's own batch sampler: batch i is samples i, i+3, i+6, i+9
        loader = DataLoader(data, batch_sampler=SequenceSampler(data, batch_size=BATCH))
    else:
        loader = DataLoader(data, batch_size=BATCH)
    trainer = make_trainer(2)
    otf = attach_lightning(trainer=trainer, model=model, project="p", loss_fn=F.nll_loss, train_loader=loader)
    trainer.fit(model)
    assert per_epoch(otf) == [[0, 12, 12], [1, 12, 12]]
    assert len(outputs.kept) == 6
    for step in (1, 2, 5):
        ids, losses = recorded(otf, step)
        if demo == "lstm-sequence-sampler":
            assert ids.tolist() == [(step - 1) % 3 + 3 * i for i in range(BATCH)]
        out = outputs.kept[step - 1]
        assert out.shape == (BATCH * TOKENS, VOCAB)
        per_token = ORIGINAL["nll_loss"](out, target[ids].view(-1), reduction="none").view(BATCH, TOKENS)
        kept = target[ids] != -100
        expected = (per_token * kept).sum(1) / kept.sum(1)
        assert torch.allclose(losses, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    if demo != "transformer":
        ignored = rows(
            otf,
            "SELECT sample_id, loss IS NULL OR isnan(loss) FROM samples WHERE split = 'train' "
            "AND epoch = 0 AND sample_id IN (0, 5) ORDER BY sample_id",
        )
        assert ignored == [[0, False], [5, True]]


def test_a_held_nll_loss_module_gives_the_same_per_sequence_mean():
    class Held(QuietLSTM):
        def __init__(self):
            super().__init__(vocab_size=VOCAB)
            self.criterion = nn.NLLLoss()

        def training_step(self, batch, batch_idx):
            input, target = batch
            output, _ = self.model(input, self.model.init_hidden(input.size(0)))
            return self.criterion(output, target.view(-1))

    L.seed_everything(0, verbose=False)
    model = Held()
    outputs = Outputs(model.model, pick=lambda out: out[0])
    inputs, target = token_data(ignored=True)
    trainer = make_trainer(1)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        train_loader=DataLoader(TensorDataset(inputs, target), batch_size=BATCH),
    )
    assert otf._loss_plan.strategy == "attribute"
    trainer.fit(model)
    ids, losses = recorded(otf, 1)
    per_token = ORIGINAL["nll_loss"](outputs.kept[0], target[ids].view(-1), reduction="none").view(BATCH, TOKENS)
    kept = target[ids] != -100
    assert torch.allclose(losses, (per_token * kept).sum(1) / kept.sum(1), rtol=1e-5, atol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------- no per-sample values: the fit goes on
def _warnings(capsys):
    text = capsys.readouterr()
    return [line for line in (text.out + text.err).splitlines() if "per-sample" in line]


def test_a_module_with_no_loss_to_capture_fits_with_one_warning_and_everything_else_works(capsys, tmp_path):
    import threading
    import time

    class Summed(DemoModel):  # Lightning's DemoModel: training_step returns x.sum()
        def test_step(self, batch, batch_idx):
            self.log("test_sum", self(batch).sum())

    model = Summed()
    train = DataLoader(RandomDataset(32, 40), batch_size=8)
    test = DataLoader(RandomDataset(32, 16), batch_size=8)
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer, model=model, project="p", train_loader=train, test_loader=test, do_test_after=True
    )
    assert otf._loss_plan.strategy == "none"
    seen = {}

    def drive(session):
        while session.status()["step"] < 2:
            time.sleep(0.005)
        seen["paused"] = session.pause()["state"]
        seen["checkpoint"] = session.checkpoint()["reason"]
        seen["test"] = session.test()["split"]
        seen["export"] = session.export(path=str(tmp_path / "s.zip"))["bytes"]
        seen["resumed"] = session.resume()["state"]

    driver = threading.Thread(target=drive, args=(otf.session,))
    driver.start()
    trainer.fit(model)
    driver.join(timeout=60)
    assert (
        seen
        == {"paused": "paused", "checkpoint": "manual", "test": "test", "export": seen["export"], "resumed": "running"}
        and seen["export"] > 0
    )
    lines = _warnings(capsys)
    assert len(lines) == 1 and "loss_fn=" in lines[0] and "docs/lightning.md" in lines[0]
    assert rows(otf, "SELECT count(*) FROM samples WHERE split = 'train'") == [[0]]
    assert rows(otf, "SELECT count(*), count(loss) FROM steps") == [[10, 10]]
    reasons = rows(otf, "SELECT reason FROM checkpoints ORDER BY step, reason")
    assert sorted(r[0] for r in reasons) == ["epoch", "epoch", "export", "final", "manual"]
    assert rows(otf, "SELECT status FROM runs") == [["finished"]]


def test_a_loss_the_step_never_calls_gives_one_warning_at_the_first_batch(capsys):
    model = DemoModel()
    trainer = make_trainer(2)
    otf = attach_lightning(
        trainer=trainer,
        model=model,
        project="p",
        loss_fn=F.mse_loss,
        train_loader=DataLoader(RandomDataset(32, 40), batch_size=8),
    )
    assert otf._loss_plan.strategy == "functional"
    trainer.fit(model)
    lines = _warnings(capsys)
    assert len(lines) == 1 and "did not call" in lines[0]
    events = rows(otf, "SELECT level, kind FROM events WHERE message LIKE '%per-sample%'")
    assert events == [["warning", "loss"]]
    assert rows(otf, "SELECT count(*) FROM steps") == [[10]]
    assert F.mse_loss.__name__ == "mse_loss" and not hasattr(F.mse_loss, "__onthefly_original__")


def test_a_loss_module_the_model_does_not_hold_warns_instead_of_stopping_the_script(capsys):
    from lit_models import TinyClassifier, loaders

    model = TinyClassifier()
    trainer = make_trainer(1)
    otf = attach_lightning(
        trainer=trainer, model=model, project="p", loss_fn=nn.CrossEntropyLoss(), train_loader=loaders()[0]
    )
    trainer.fit(model)
    lines = _warnings(capsys)
    assert len(lines) == 1 and "self.loss = loss_fn" in lines[0]
    assert rows(otf, "SELECT count(*) FROM samples") == [[0]] and rows(otf, "SELECT count(*) FROM steps") == [[8]]
