"""Resuming from a bundle: bitwise equal to the uninterrupted run, with lineage kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from torch import nn

from onthefly import Trainer
from onthefly.errors import ConfigError
from onthefly.session.resume import bundle_reference, locate_checkpoint
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read.query import sql
from onthefly.store.read.reports import report
from tests.trainer.fixtures import assert_bitwise_equal, build, loaders

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHILD = Path(__file__).resolve().parents[1] / "trainer" / "resume_child.py"
EPOCHS = 3


def child_env(tmp_path: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONTHEFLY_TOKEN", "ONTHEFLY_HOME")}
    env.update(ONTHEFLY_HOME=str(home), XDG_CONFIG_HOME=str(tmp_path / "config"), ONTHEFLY_DASHBOARD_PORT="9")
    return env


def run_child(tmp_path: Path, home: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=240, env=child_env(tmp_path, home)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def train_two_epochs_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first two epochs in this process (as resume_child.py trains them), then the bundle."""
    monkeypatch.setenv("ONTHEFLY_HOME", str(tmp_path / "first"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    model, optimizer, scheduler = build()
    train, val, _ = loaders()
    trainer = Trainer(project="resume", max_epochs=2, val_every_n_epochs=1, connect_dashboard=False, progress=False)
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=train,
        val_loader=val,
        scheduler=scheduler,
    )
    bundle = tmp_path / "two-epochs.zip"
    assert trainer.session.export(path=str(bundle))["runs"] == 1
    trainer.close()
    return bundle


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Three epochs straight, and two epochs exported then resumed for one in a new process and store."""
    tmp_path = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as monkeypatch:
        bundle = train_two_epochs_and_export(tmp_path, monkeypatch)
    run_child(tmp_path, tmp_path / "straight", str(tmp_path / "straight.safetensors"), "--max-epochs", str(EPOCHS))
    run_child(
        tmp_path,
        tmp_path / "second",
        str(tmp_path / "resumed.safetensors"),
        "--max-epochs",
        str(EPOCHS),
        "--resume-from",
        str(bundle),
    )
    return tmp_path, bundle


def test_two_epochs_exported_and_resumed_elsewhere_match_three_straight_bitwise(resumed):
    tmp_path, _ = resumed
    assert_bitwise_equal(load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "resumed.safetensors"))


def test_the_resumed_run_is_a_child_of_the_imported_one(resumed):
    tmp_path, bundle = resumed
    (imported_run,) = read_manifest(bundle)["runs"]
    sessions = {entry.id: entry for entry in StoreRoot(tmp_path / "second").list_sessions()}
    imported = sessions.pop(read_manifest(bundle)["session"]["id"])
    assert imported.pinned, "the clean-up of the resuming session must keep the imported one"
    (new,) = sessions.values()
    with Catalog.open(imported.dir / "catalog.sqlite", readonly=True) as catalog:
        assert catalog.session().origin == "imported"
    child = [run for run in new.runs if run.id != imported_run["id"]]
    assert [run.parents for run in child] == [((imported_run["id"], "resumed_from"),)]
    assert any(run.id == imported_run["id"] for run in new.runs), "the parent's record is copied for lineage"


def test_an_imported_session_answers_reports_from_its_runs(resumed, tmp_path):
    _, bundle = resumed
    con = sql(bundle, home=tmp_path / "reader")
    result = report(con, split="val", k=3)
    con.close()
    assert result["epoch"] == 2 and result["count"] == 40 and len(result["hardest"]) == 3


def test_a_run_of_a_bundle_is_chosen_with_a_hash_suffix(resumed, tmp_path):
    _, bundle = resumed
    (run,) = read_manifest(bundle)["runs"]
    store = StoreRoot(tmp_path / "third")
    point = locate_checkpoint(f"{bundle}#{run['name']}", store=store)
    assert point.checkpoint_id == run["latest_checkpoint"]["id"] and point.run["id"] == run["id"]
    assert store.is_pinned(point.session_id)
    with pytest.raises(ConfigError, match="has no run 'nope'"):
        locate_checkpoint(f"{bundle}#nope", store=store)


def test_bundle_references_split_into_file_and_run():
    assert bundle_reference("a/b.zip") == ("a/b.zip", None)
    assert bundle_reference("a/b.ZIP#base#1") == ("a/b.ZIP", "base#1")
    assert bundle_reference("a/b.zip#") == ("a/b.zip", None)
    assert bundle_reference("20250101-000000-abcdef/run") is None
    assert bundle_reference("ck-0123") is None


def test_a_bundle_without_checkpoints_cannot_be_resumed(tmp_path):
    from onthefly.store.bundle.export import export_session

    store = StoreRoot(tmp_path / "s")
    with store.open_session("empty", cleanup=False) as session:
        session.catalog.add_run(name="nothing")
    export_session(None, store=store, path=tmp_path / "empty.zip")
    with pytest.raises(ConfigError, match="has a checkpoint"):
        locate_checkpoint(str(tmp_path / "empty.zip"), store=StoreRoot(tmp_path / "t"))
    assert import_bundle(tmp_path / "empty.zip", store=StoreRoot(tmp_path / "t")).pinned
