"""Importing bundles: hostile ones are refused with the store unchanged; good ones land once, pinned."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sqlite3
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from onthefly.errors import BundleError, ConfigError
from onthefly.store.bundle.checks import Limits
from onthefly.store.bundle.export import export_session
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.lifecycle import StoreRoot
from onthefly.store.read.query import connect
from tests.bundle.test_export import fill_session, tree

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A bundle written by `export_session` from a session with shards and checkpoints."""
    folder = tmp_path_factory.mktemp("good")
    store = StoreRoot(folder / "origin")
    session_id = fill_session(store)
    export_session(session_id, store=store, path=folder / "good.zip")
    return folder / "good.zip"


@pytest.fixture
def target(tmp_path) -> StoreRoot:
    """The store imports go to, already holding a session of its own."""
    store = StoreRoot(tmp_path / "target")
    fill_session(store, project="resident", epochs=1)
    return store


def rewrite(
    source: Path,
    out: Path,
    *,
    replace: dict[str, bytes] | None = None,
    add: list[tuple[zipfile.ZipInfo | str, bytes]] = (),
    drop: tuple[str, ...] = (),
    manifest: Callable[[dict], None] | None = None,
    list_added: bool = True,
    refresh: bool = True,
) -> Path:
    """A copy of ``source`` with entries replaced, added or dropped.

    The manifest follows along (sizes and sha256 of replaced files, entries of
    added ones) unless ``refresh``/``list_added`` say otherwise, so each
    hostile bundle trips exactly the defence a test is about.
    """
    replace = dict(replace or {})
    with zipfile.ZipFile(source) as zf:
        data = {name: zf.read(name) for name in zf.namelist()}
    doc = json.loads(data.pop("manifest.json"))
    for name in drop:
        data.pop(name)
    data.update(replace)
    for entry in doc["files"]:
        if refresh and entry["path"] in replace:
            entry["bytes"] = len(replace[entry["path"]])
            entry["sha256"] = hashlib.sha256(replace[entry["path"]]).hexdigest()
    added_names = [info.filename if isinstance(info, zipfile.ZipInfo) else info for info, _ in add]
    if list_added:
        for (_, payload), name in zip(add, added_names):
            doc["files"].append(
                {
                    "path": name,
                    "kind": name.split("/")[0],
                    "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                }
            )
    if manifest is not None:
        manifest(doc)
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps(doc))
        for name, payload in data.items():
            zf.writestr(name, payload, compress_type=zipfile.ZIP_DEFLATED)
        for info, payload in add:
            zf.writestr(info, payload)
    return out


def member(bundle: Path, kind: str) -> str:
    return next(f["path"] for f in read_manifest(bundle)["files"] if f["kind"] == kind)


def refused(bundle: Path, store: StoreRoot, match: str) -> BundleError:
    before = tree(store.root)
    with pytest.raises(BundleError, match=match) as info:
        import_bundle(bundle, store=store)
    assert tree(store.root) == before, "a refused import changed the store"
    return info.value


class Boom:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    target = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


# -- hostile bundles ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../../escaped.parquet", r"leaves the bundle folder"),
        ("samples/../../escaped.parquet", r"leaves the bundle folder"),
        ("/tmp/absolute.parquet", r"absolute path"),
        ("C:/Windows/evil.parquet", r"drive letter"),
        ("samples\\..\\..\\evil.parquet", r"backslash"),
        ("samples/r/.hidden.parquet", r"not a plain file name"),
        ("notes.txt", r"outside the bundle layout"),
    ],
)
def test_entry_names_that_could_escape_or_do_not_belong_are_refused(good, target, tmp_path, name, match):
    hostile = rewrite(good, tmp_path / "hostile.zip", add=[(name, b"PAR1 nothing PAR1")])
    refused(hostile, target, match)
    assert not (tmp_path / "escaped.parquet").exists() and not Path("/tmp/absolute.parquet").exists()


def test_a_symbolic_link_entry_is_refused(good, target, tmp_path):
    hostile = rewrite(good, tmp_path / "link.zip", add=[(symlink_info("samples/r/link.parquet"), b"/etc/passwd")])
    refused(hostile, target, r"link\.parquet' is a symbolic link")


def test_a_zip_bomb_is_refused_before_extraction(good, target, tmp_path):
    bomb = zipfile.ZipInfo("samples/r/bomb.parquet")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    hostile = rewrite(good, tmp_path / "bomb.zip", add=[(bomb, bytes(64 << 20))])
    assert hostile.stat().st_size < 1 << 20
    refused(hostile, target, r"bomb\.parquet expands \d+ times")


def test_a_bundle_over_the_size_cap_is_refused(good, target):
    before = tree(target.root)
    with pytest.raises(BundleError, match="over the cap of 1000"):
        import_bundle(good, store=target, limits=Limits(max_total_bytes=1000))
    assert tree(target.root) == before


def test_a_file_that_does_not_match_its_sha256_is_refused(good, target, tmp_path):
    shard = member(good, "samples")
    with zipfile.ZipFile(good) as zf:
        data = bytearray(zf.read(shard))
    data[len(data) // 2] ^= 0xFF  # a valid zip entry (its CRC is recomputed), but not the manifest's bytes
    hostile = rewrite(good, tmp_path / "flip.zip", replace={shard: bytes(data)}, refresh=False)
    refused(hostile, target, r"does not match its sha256")


def test_a_pickle_disguised_as_a_checkpoint_is_refused_unread(good, target, tmp_path):
    marker = tmp_path / "unpickled"
    Boom.target = str(marker)
    payload = pickle.dumps(Boom())
    checkpoint = member(good, "checkpoints")
    hostile = rewrite(good, tmp_path / "pickle.zip", replace={checkpoint: payload})  # manifest updated to match
    refused(hostile, target, r"is not a valid safetensors file")
    assert not marker.exists()


def test_a_torch_save_file_disguised_as_a_checkpoint_is_refused(good, target, tmp_path):
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    checkpoint = member(good, "checkpoints")
    hostile = rewrite(good, tmp_path / "torch.zip", replace={checkpoint: buffer.getvalue()})
    refused(hostile, target, r"is not a valid safetensors file")


def test_a_bundle_of_a_future_format_is_refused_with_the_upgrade_command(good, target, tmp_path):
    hostile = rewrite(good, tmp_path / "future.zip", manifest=lambda m: m.update(format_version=2))
    error = refused(hostile, target, r"format version 2, newer than this OnTheFly reads")
    assert "pip install -U onthefly-ai" in str(error)


def test_a_catalog_from_a_newer_onthefly_is_refused(good, target, tmp_path):
    with zipfile.ZipFile(good) as zf:
        (tmp_path / "c.sqlite").write_bytes(zf.read("catalog.sqlite"))
    con = sqlite3.connect(tmp_path / "c.sqlite")
    with con:
        con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.close()
    hostile = rewrite(good, tmp_path / "newer.zip", replace={"catalog.sqlite": (tmp_path / "c.sqlite").read_bytes()})
    refused(hostile, target, r"newer OnTheFly \(schema 9999")


@pytest.mark.parametrize("listed", [True, False], ids=["listed-in-manifest", "unlisted"])
def test_an_unknown_extra_file_is_refused(good, target, tmp_path, listed):
    with zipfile.ZipFile(good) as zf:
        extra = ("samples/x/extra.parquet", zf.read(member(good, "samples")))  # a real shard, listed nowhere
    hostile = rewrite(good, tmp_path / "extra.zip", add=[extra], list_added=listed)
    refused(hostile, target, "which catalog.sqlite does not list" if listed else "which its manifest does not list")


def test_a_missing_file_is_refused(good, target, tmp_path):
    hostile = rewrite(good, tmp_path / "missing.zip", drop=(member(good, "steps"),))
    refused(hostile, target, "which its manifest lists")


def test_a_catalog_without_a_schema_version_is_refused(good, target, tmp_path):
    with zipfile.ZipFile(good) as zf:
        (tmp_path / "v.sqlite").write_bytes(zf.read("catalog.sqlite"))
    con = sqlite3.connect(tmp_path / "v.sqlite")
    with con:
        con.execute("DELETE FROM alembic_version")
    con.close()
    catalog = (tmp_path / "v.sqlite").read_bytes()
    hostile = rewrite(good, tmp_path / "unversioned.zip", replace={"catalog.sqlite": catalog})
    refused(hostile, target, "holds no OnTheFly catalog schema")


def test_a_catalog_carrying_a_trigger_is_refused(good, target, tmp_path):
    with zipfile.ZipFile(good) as zf:
        (tmp_path / "t.sqlite").write_bytes(zf.read("catalog.sqlite"))
    con = sqlite3.connect(tmp_path / "t.sqlite")
    with con:
        con.execute("CREATE TRIGGER wipe AFTER UPDATE ON sessions BEGIN DELETE FROM runs; END")
    con.close()
    hostile = rewrite(good, tmp_path / "trigger.zip", replace={"catalog.sqlite": (tmp_path / "t.sqlite").read_bytes()})
    refused(hostile, target, r"holds a trigger \('wipe'\)")


def test_duplicate_entries_and_a_missing_manifest_are_refused(good, target, tmp_path):
    with zipfile.ZipFile(good) as zf:
        data = {name: zf.read(name) for name in zf.namelist()}
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for name, payload in data.items():
            zf.writestr(name, payload)
        zf.writestr("catalog.sqlite", b"not the catalog")
    refused(twice, target, "appears twice")
    headless = rewrite(good, tmp_path / "headless.zip")
    with zipfile.ZipFile(headless) as zf:
        rest = {name: zf.read(name) for name in zf.namelist() if name != "manifest.json"}
    with zipfile.ZipFile(headless, "w") as zf:
        for name, payload in rest.items():
            zf.writestr(name, payload)
    refused(headless, target, "holds no manifest.json")


def test_files_that_are_not_zips_are_refused(target, tmp_path):
    (tmp_path / "x.zip").write_bytes(b"just text")
    refused(tmp_path / "x.zip", target, "not a readable zip file")
    with pytest.raises(ConfigError, match="does not exist"):
        import_bundle(tmp_path / "nowhere.zip", store=target)


def test_a_refused_import_into_a_new_root_leaves_no_root_behind(good, tmp_path):
    store = StoreRoot(tmp_path / "fresh")
    changed = {member(good, "samples"): b"PAR1 changed PAR1"}
    hostile = rewrite(good, tmp_path / "flip.zip", replace=changed, refresh=False)
    with pytest.raises(BundleError):
        import_bundle(hostile, store=store)
    assert not store.root.exists()


# -- good bundles ------------------------------------------------------------------


def test_an_import_lands_pinned_marked_imported_and_readable(good, target):
    manifest = read_manifest(good)
    entry = import_bundle(good, store=target)
    assert entry.id == manifest["session"]["id"] and entry.pinned and entry.project == "bundles"
    assert [run.id for run in entry.runs] == [run["id"] for run in manifest["runs"]]
    with Catalog.open(entry.dir / "catalog.sqlite", readonly=True) as catalog:
        assert catalog.session().origin == "imported"
        assert catalog.runs()[0].kind == "base"  # runs keep their kind and id
    con = connect(entry.dir)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (128,)
    con.close()
    assert not (target.root / ".staging").exists()
    assert len(target.list_sessions()) == 2


def test_importing_twice_adds_nothing(good, target):
    first = import_bundle(good, store=target)
    before = tree(target.root)
    second = import_bundle(good, store=target)
    assert second.id == first.id and tree(target.root) == before
    assert [s.id for s in target.list_sessions()].count(first.id) == 1


def test_a_session_already_there_is_returned_and_pinned(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    export_session(session_id, store=store, path=tmp_path / "own.zip")
    assert not store.is_pinned(session_id)
    entry = import_bundle(tmp_path / "own.zip", store=store)
    assert entry.id == session_id and entry.pinned
    with Catalog.open(entry.dir / "catalog.sqlite", readonly=True) as catalog:
        assert catalog.session().origin == "new"  # the original stays as it was


def test_a_later_export_of_a_session_already_there_is_refused_with_a_remedy(tmp_path):
    origin = StoreRoot(tmp_path / "origin")
    session_id = fill_session(origin)
    export_session(session_id, store=origin, path=tmp_path / "early.zip")
    with origin.open_session("bundles", session_id=session_id, cleanup=False) as session:
        session.catalog.add_run(name="second")
    export_session(session_id, store=origin, path=tmp_path / "late.zip")
    target = StoreRoot(tmp_path / "target")
    import_bundle(tmp_path / "early.zip", store=target)
    before = tree(target.root)
    with pytest.raises(BundleError, match=rf"onthefly rm {session_id}"):
        import_bundle(tmp_path / "late.zip", store=target)
    assert tree(target.root) == before


def test_a_run_whose_data_another_session_holds_keeps_one_copy(good, target, tmp_path):
    imported = import_bundle(good, store=target)
    run_id = imported.runs[0].id
    # Another session holding the same run's data: a copy of the bundle under another session id.
    other_id = "20000101-000000-abcdef"

    def retag(doc: dict) -> None:
        doc["session"]["id"] = other_id

    with zipfile.ZipFile(good) as zf:
        (tmp_path / "c.sqlite").write_bytes(zf.read("catalog.sqlite"))
    con = sqlite3.connect(tmp_path / "c.sqlite")
    with con:
        con.execute("PRAGMA foreign_keys=OFF")
        con.execute("UPDATE sessions SET id = ?", (other_id,))
        con.execute("UPDATE runs SET session_id = ?", (other_id,))
    con.close()
    copy = rewrite(
        good, tmp_path / "copy.zip", replace={"catalog.sqlite": (tmp_path / "c.sqlite").read_bytes()}, manifest=retag
    )
    entry = import_bundle(copy, store=target)
    assert entry.id == other_id and [run.id for run in entry.runs] == [run_id]
    with Catalog.open(entry.dir / "catalog.sqlite", readonly=True) as catalog:
        assert catalog.active_shards() == [] and catalog.checkpoints() == []
    assert not (entry.dir / "samples").exists() or not any((entry.dir / "samples").rglob("*.parquet"))
