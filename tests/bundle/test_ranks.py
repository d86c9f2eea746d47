"""Bundles of multi-process sessions carry every rank's catalog and shards (``ranks/<r>/``)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from onthefly.distributed import RankFiles
from onthefly.errors import BundleError
from onthefly.store.bundle.export import export_session
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read.query import connect
from tests.bundle.test_export import fill_session, tree
from tests.bundle.test_import import rewrite

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two_ranks(tmp_path):
    """A session whose rank 1 recorded 32 samples of epoch 0 in ranks/1/, exported."""
    store = StoreRoot(tmp_path / "origin")
    session_id = fill_session(store, epochs=1)
    folder = store.session_dir(session_id)
    run = store.list_sessions()[0].runs[0]
    rank = RankFiles(folder, session_id=session_id, project="bundles", rank=1)
    rank.add_run(run.id, run.name)
    rank.writer.log_samples(run.id, "train", 0, 1, np.arange(64, 96), np.full(32, 0.5, np.float32))
    rank.writer.end_pass(run.id, "train", 0, 1).result()
    rank.close()
    export_session(session_id, store=store, path=tmp_path / "ranks.zip")
    return tmp_path / "ranks.zip", session_id


def test_every_rank_travels_and_reads_back(two_ranks, tmp_path):
    bundle, session_id = two_ranks
    files = read_manifest(bundle)["files"]
    ranked = sorted(f["path"] for f in files if f.get("rank") == 1)
    assert ranked[0] == "ranks/1/catalog.sqlite" and ranked[1].startswith("ranks/1/samples/")
    entry = import_bundle(bundle, store=StoreRoot(tmp_path / "target"))
    con = connect(entry.dir)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (64 + 32,)
    con.close()


def test_rank_files_without_their_catalog_are_refused(two_ranks, tmp_path):
    bundle, _ = two_ranks
    target = StoreRoot(tmp_path / "target")

    def unlist(doc: dict) -> None:
        doc["files"] = [f for f in doc["files"] if f["path"] != "ranks/1/catalog.sqlite"]

    orphaned = rewrite(bundle, tmp_path / "orphan.zip", drop=("ranks/1/catalog.sqlite",), manifest=unlist)
    before = tree(target.root)
    with pytest.raises(BundleError, match="files of rank 1 without ranks/1/catalog.sqlite"):
        import_bundle(orphaned, store=target)
    assert tree(target.root) == before


def test_checkpoints_and_stray_folders_under_ranks_are_refused(two_ranks, tmp_path):
    bundle, _ = two_ranks
    with zipfile.ZipFile(bundle) as zf:
        checkpoint = next(n for n in zf.namelist() if n.startswith("checkpoints/"))
        payload = zf.read(checkpoint)
    for name, reason in (
        ("ranks/1/checkpoints/r/ck.safetensors", "outside the bundle layout"),
        ("ranks/0/samples/r/train/a.parquet", "not in a rank folder"),
        ("ranks/x/catalog.sqlite", "not in a rank folder"),
    ):
        hostile = rewrite(bundle, tmp_path / "stray.zip", add=[(name, payload)])
        with pytest.raises(BundleError, match=reason):
            import_bundle(hostile, store=StoreRoot(tmp_path / "target"))
        hostile.unlink()
