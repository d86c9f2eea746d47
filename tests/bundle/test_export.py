"""Exporting a session: what the bundle holds, how it is laid out, and consistency while training."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from onthefly import Trainer
from onthefly.errors import BundleError, ConfigError, CorruptFileError
from onthefly.store.bundle.checks import SMALL_FILE
from onthefly.store.bundle.export import export_session, stage_session, write_bundle
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.checkpoints.checkpoints import load_checkpoint
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read.query import connect
from tests.trainer.fixtures import build, loaders

pytestmark = pytest.mark.timeout(120)


def fill_session(store: StoreRoot, *, project: str = "bundles", epochs: int = 2, rows: int = 64) -> str:
    """A closed session with one run, per-sample shards of ``epochs`` passes, steps and two checkpoints."""
    rng = np.random.default_rng(0)
    with store.open_session(project, cleanup=False) as session:
        run = session.catalog.add_run(name="baseline")
        writer = session.writer
        for epoch in range(epochs):
            ids = np.arange(rows)
            losses = rng.gamma(2.0, 0.5, rows).astype(np.float32)
            writer.log_samples(
                run.id, "train", epoch, epoch * 10 + 1, ids, losses, label=ids % 3, pred=(ids + epoch) % 3
            )
            writer.log_steps(run.id, {"step": [epoch * 10 + 1], "loss": [float(losses.mean())]})
            writer.end_pass(run.id, "train", epoch, epoch * 10 + 1).result()
            model = {"w": torch.full((8, 8), float(epoch)), "b": torch.zeros(8)}
            optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
            session.checkpoints.save(
                run_id=run.id, step=epoch * 10 + 1, epoch=epoch + 1, reason="epoch", model=model, optimizer=optimizer
            )
        session.catalog.set_run_status(run.id, "finished", ended=True)
        session_id = session.id
    return session_id


def tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size and mtime (0 for folders), to compare a store before and after.

    SQLite's ``-wal``/``-shm`` companions are left out: any read-only open of a
    catalog in WAL mode creates them, and they hold no data of their own.
    """
    if not root.exists():
        return []
    return sorted(
        (p.relative_to(root).as_posix(), *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)))
        for p in root.rglob("*")
        if not p.name.endswith(("-wal", "-shm"))
    )


@pytest.fixture
def exported(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    result = export_session(session_id, store=store, path=tmp_path / "s.zip")
    return store, session_id, tmp_path / "s.zip", result


def test_the_bundle_lists_every_file_with_its_size_and_sha256(exported):
    store, session_id, bundle, result = exported
    folder = store.session_dir(session_id)
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = set(zf.namelist()) - {"manifest.json"}
        assert names == {f["path"] for f in manifest["files"]}
        for entry in manifest["files"]:
            data = zf.read(entry["path"])
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
            if entry["kind"] != "catalog":  # same relative path and bytes as in the session folder
                assert (folder / entry["path"]).read_bytes() == data
    kinds = sorted(f["kind"] for f in manifest["files"])
    assert kinds == ["catalog", "checkpoints", "checkpoints", "samples", "samples", "steps"]
    assert manifest["format"] == "onthefly.bundle" and manifest["format_version"] == 1
    assert manifest["session"]["id"] == session_id and manifest["session"]["project"] == "bundles"
    (run,) = manifest["runs"]
    assert run["name"] == "baseline" and run["latest_checkpoint"]["step"] == 11
    assert "optimizer" in run["latest_checkpoint"]["holds"]
    assert result == {"path": str(bundle), "bytes": bundle.stat().st_size, "session": session_id, "runs": 1, "files": 6}


def test_files_that_do_not_shrink_are_stored_and_the_catalog_deflated(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store, epochs=1, rows=300_000)  # a shard of zstd pages, past SMALL_FILE
    with store.open_session("bundles", session_id=session_id, cleanup=False) as session:
        run_id = session.catalog.runs()[0].id
        noise = {"w": torch.randn(640, 640, generator=torch.Generator().manual_seed(0))}
        session.checkpoints.save(run_id=run_id, step=99, epoch=1, reason="manual", model=noise)
    export_session(session_id, store=store, path=tmp_path / "s.zip")
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        infos = {info.filename: info for info in zf.infolist()}
    large = {name: info for name, info in infos.items() if info.file_size > SMALL_FILE}
    methods = {name.split("/")[0]: info.compress_type for name, info in large.items()}
    assert methods == {"samples": zipfile.ZIP_STORED, "checkpoints": zipfile.ZIP_STORED}
    assert infos["catalog.sqlite"].compress_type == zipfile.ZIP_DEFLATED
    assert infos["catalog.sqlite"].compress_size < infos["catalog.sqlite"].file_size / 4


def test_the_extracted_bundle_reads_with_sqlite3_and_pyarrow_alone(exported, tmp_path):
    _, _, bundle, _ = exported
    out = tmp_path / "plain"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(out)
    con = sqlite3.connect(out / "catalog.sqlite")
    shards = con.execute("SELECT path, rows FROM shards WHERE kind = 'samples' AND state = 'active'").fetchall()
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()
    assert sum(pq.read_table(out / path).num_rows for path, _ in shards) == sum(rows for _, rows in shards) == 128


def test_export_leaves_no_staging_behind_and_the_session_unchanged(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    before = tree(store.root)
    export_session(None, store=store, path=tmp_path / "newest.zip")
    assert tree(store.root) == before
    assert read_manifest(tmp_path / "newest.zip")["session"]["id"] == session_id


def test_retired_shards_stay_out_of_the_bundle_and_its_catalog(tmp_path):
    store = StoreRoot(tmp_path / "store")
    with store.open_session("p", cleanup=False) as session:
        run = session.catalog.add_run(name="r")
        for step in range(3):  # three parts of one pass, compacted into one file at end_pass
            session.writer.log_samples(run.id, "train", 0, step, np.arange(4) + 4 * step, np.ones(4))
            session.writer.flush()
        session.writer.end_pass(run.id, "train", 0, 3).result()
        retired = session.catalog.retired_shards(older_than=time.time() + 1)
        session_id = session.id
    assert len(retired) == 3
    export_session(session_id, store=store, path=tmp_path / "r.zip")
    with zipfile.ZipFile(tmp_path / "r.zip") as zf:
        names = zf.namelist()
        (tmp_path / "c.sqlite").write_bytes(zf.read("catalog.sqlite"))
    assert not any(s.path in names for s in retired)
    con = sqlite3.connect(tmp_path / "c.sqlite")
    assert con.execute("SELECT count(*), min(state) FROM shards").fetchone() == (1, "active")
    con.close()


def test_a_checkpoint_damaged_on_disk_travels_with_its_recorded_sha256_and_is_caught_on_import(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    folder = store.session_dir(session_id)
    with Catalog.open(folder / "catalog.sqlite", readonly=True) as catalog:
        info = catalog.checkpoints()[0]
    victim = folder / info.path
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(data))
    export_session(session_id, store=store, path=tmp_path / "damaged.zip")
    listed = {f["path"]: f["sha256"] for f in read_manifest(tmp_path / "damaged.zip")["files"]}
    assert listed[info.path] == info.sha256  # the hash recorded at save time, not the damaged bytes'
    target = StoreRoot(tmp_path / "target")
    with pytest.raises(BundleError, match="does not match its sha256"):
        import_bundle(tmp_path / "damaged.zip", store=target)
    assert not target.root.exists()


def test_a_checkpoint_cut_short_on_disk_stops_the_export(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    folder = store.session_dir(session_id)
    with Catalog.open(folder / "catalog.sqlite", readonly=True) as catalog:
        victim = folder / catalog.checkpoints()[0].path
    victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(CorruptFileError, match="the catalog recorded"):
        export_session(session_id, store=store, path=tmp_path / "short.zip")
    assert not (tmp_path / "short.zip").exists() and not (store.root / ".staging").exists()


def test_a_path_that_is_not_a_zip_is_refused_before_any_work(tmp_path):
    store = StoreRoot(tmp_path / "store")
    fill_session(store)
    with pytest.raises(ConfigError, match=r"does not end with \.zip"):
        export_session(None, store=store, path=tmp_path / "s.tar")
    with pytest.raises(ConfigError, match="does not exist"):
        export_session(None, store=store, path=tmp_path / "missing" / "s.zip")
    assert not (store.root / ".staging").exists()


def test_a_staged_snapshot_survives_the_session_changing_afterwards(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    folder = store.session_dir(session_id)
    snapshot = stage_session(folder, root=store.root)
    with store.open_session("bundles", session_id=session_id, cleanup=False) as session:
        session.catalog.add_run(name="later")  # after the snapshot: not in the bundle
    result = write_bundle(snapshot, path=tmp_path / "snap.zip")
    assert [r["name"] for r in read_manifest(tmp_path / "snap.zip")["runs"]] == ["baseline"]
    assert result["runs"] == 1 and not snapshot.dir.exists()


def test_export_while_training_gives_a_consistent_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("ONTHEFLY_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    model, optimizer, scheduler = build()
    train_loader, val_loader, _ = loaders(n=400)
    trainer = Trainer(project="live", max_epochs=4, val_every_n_epochs=1, connect_dashboard=False, progress=False)
    results: dict = {}

    def export_mid_run() -> None:
        deadline = time.monotonic() + 60
        while trainer.session.status()["step"] < 22 and time.monotonic() < deadline:
            time.sleep(0.002)
        try:
            results["export"] = trainer.session.export(path=str(tmp_path / "live.zip"))
            results["step"] = trainer.session.status()["step"]
        except BaseException as exc:  # handed to the test thread
            results["error"] = exc

    worker = threading.Thread(target=export_mid_run)
    worker.start()
    trainer.fit(
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        train_loader=train_loader,
        val_loader=val_loader,
        scheduler=scheduler,
    )
    worker.join(60)
    trainer.close()
    assert "error" not in results, results.get("error")
    bundle = tmp_path / "live.zip"
    manifest = read_manifest(bundle)
    (run,) = manifest["runs"]
    assert run["status"] == "running" and run["latest_checkpoint"]["step"] >= 22
    assert {"model", "optimizer", "rng", "sampler"} <= set(run["latest_checkpoint"]["holds"])
    # Importing checks every file against the manifest and the catalog against the files.
    entry = import_bundle(bundle, store=StoreRoot(tmp_path / "elsewhere"))
    con = connect(entry.dir)
    train_rows = con.execute("SELECT count(*) FROM samples WHERE split = 'train'").fetchone()[0]
    newest = "SELECT reason FROM checkpoints ORDER BY step DESC, created_at DESC LIMIT 1"
    exported_reason = con.execute(newest).fetchone()
    con.close()
    assert train_rows >= 22 * 16 and exported_reason == ("export",)
    with Catalog.open(entry.dir / "catalog.sqlite", readonly=True) as catalog:
        latest = catalog.latest_checkpoint(run["id"])
    state = load_checkpoint(entry.dir / latest.path, sha256=latest.sha256)
    assert state.optimizer is not None and state.sampler["step"] == latest.step
