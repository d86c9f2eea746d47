"""Session folders: creation, locks, pins and the clean-up that must touch nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onthefly.errors import ConfigError, MissingFileError, StoreError
from onthefly.store.catalog.catalog import Catalog
from onthefly.store.lifecycle import SESSION_ID_RE, SessionFiles, StoreRoot, new_session_id, removable


def _old_session(store: StoreRoot, session_id: str, project: str = "old") -> Path:
    """A finished session: opened, given a run, closed (so not live)."""
    with store.open_session(project, session_id=session_id, cleanup=False) as session:
        session.catalog.add_run(name="r")
        (session.dir / "samples").mkdir()
        (session.dir / "samples" / "part.parquet").write_bytes(b"x")
    return store.sessions_dir / session_id


_HOLDER = textwrap.dedent(
    """
    import sys
    from onthefly.store.lifecycle import StoreRoot

    session = StoreRoot(sys.argv[1]).open_session("held", session_id=sys.argv[2], cleanup=False)
    print("open", flush=True)
    sys.stdin.readline()
    session.close()
    """
)


@pytest.fixture
def store(tmp_home: Path) -> StoreRoot:
    return StoreRoot(tmp_home)


# --- ids and the pure decision ------------------------------------------------


def test_new_session_ids_have_the_documented_shape_and_sort_by_time() -> None:
    before = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    first = new_session_id()
    after = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    assert SESSION_ID_RE.match(first)
    assert before <= first[:15] <= after  # UTC creation time first, so ids sort by time
    assert len({new_session_id() for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("name", "marker", "live", "pinned", "keep", "expected"),
    [
        ("20250101-000000-abcdef", True, False, False, (), (True, "an earlier session")),
        ("20250101-000000-abcdef", True, True, False, (), (False, "live")),
        ("20250101-000000-abcdef", True, False, True, (), (False, "pinned")),
        ("20250101-000000-abcdef", True, False, False, ("20250101-000000-abcdef",), (False, "kept")),
        ("20250101-000000-abcdef", False, False, False, (), (False, "no SESSION marker")),
        ("my-experiment", True, False, False, (), (False, "not a session id")),
        ("20250101-000000-ABCDEF", True, False, False, (), (False, "not a session id")),
    ],
)
def test_removable_decides_from_name_marker_lock_pin_and_keep(name, marker, live, pinned, keep, expected) -> None:
    assert removable(name, has_marker=marker, live=live, pinned=pinned, keep=keep) == expected


# --- opening and closing ------------------------------------------------------


def test_open_session_creates_a_locked_marked_folder_with_a_catalog(store: StoreRoot, tmp_home: Path) -> None:
    session = store.open_session("mnist", meta={"argv": ["train.py"]})
    try:
        assert isinstance(session, SessionFiles)
        assert session.dir == tmp_home / "sessions" / session.id and SESSION_ID_RE.match(session.id)
        marker = json.loads((session.dir / "SESSION").read_text())
        assert marker["id"] == session.id and marker["project"] == "mnist" and marker["created_at"] > 0
        assert store.is_live(session.id)  # held by this very process
        info = session.catalog.session()
        assert (info.id, info.project, info.meta) == (session.id, "mnist", {"argv": ["train.py"]})
    finally:
        session.close()
    session.close()  # idempotent
    assert not store.is_live(session.id)
    with pytest.raises(StoreError, match="is closed"):
        session.catalog.runs()


def test_a_session_reopens_by_id_but_not_twice_at_once(store: StoreRoot) -> None:
    with store.open_session("p") as first:
        run = first.catalog.add_run(name="a")
        with pytest.raises(StoreError, match="is open in another process"):
            store.open_session("p", session_id=first.id)
    with store.open_session("p", session_id=first.id) as again:
        assert [r.id for r in again.catalog.runs()] == [run.id]


def test_store_defaults_to_onthefly_home(tmp_home: Path) -> None:
    assert StoreRoot().root == tmp_home.resolve()
    assert StoreRoot().sessions_dir == tmp_home.resolve() / "sessions"


def test_open_session_refuses_an_id_folder_that_is_not_a_session(store: StoreRoot) -> None:
    stranger = store.sessions_dir / "20250101-000000-abcdef"
    stranger.mkdir(parents=True)
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="is not a session"):
        store.open_session("p", session_id=stranger.name)
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]
    with pytest.raises(ConfigError, match="project must be a non-empty string"):
        store.open_session("")


# --- looking up sessions ------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "a\\b"])
def test_session_dir_refuses_names_that_leave_the_sessions_folder(store: StoreRoot, bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a session id"):
        store.session_dir(bad)


def test_session_dir_lists_what_exists_when_the_id_is_unknown(store: StoreRoot) -> None:
    old = _old_session(store, "20250101-000000-000001")
    with pytest.raises(MissingFileError, match=rf"no session '20990101-000000-000000'.*existing sessions: {old.name}"):
        store.session_dir("20990101-000000-000000")
    assert store.session_dir(old.name) == old


def test_list_sessions_is_newest_first_and_survives_a_broken_catalog(store: StoreRoot) -> None:
    a = _old_session(store, "20250101-000000-00000a", project="a")
    b = _old_session(store, "20250101-000000-00000b", project="b")
    (b / "catalog.sqlite").write_bytes(b"garbage" * 100)
    for suffix in ("-wal", "-shm"):
        (b / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    with store.open_session("c", cleanup=False) as c:
        entries = store.list_sessions()
        assert [e.id for e in entries] == [c.id, b.name, a.name]
        assert entries[0].live and not entries[1].live
        assert entries[1].error and "not a readable SQLite database" in entries[1].error
        assert entries[2].error is None and [r.name for r in entries[2].runs] == ["r"]
        assert entries[2].project == "a" and entries[1].project == "b"
        assert store.newest().id == c.id
    assert StoreRoot(store.root / "nowhere").list_sessions() == []
    assert StoreRoot(store.root / "nowhere").newest() is None


# --- pins and removal ---------------------------------------------------------


def test_pin_and_unpin(store: StoreRoot) -> None:
    old = _old_session(store, "20250101-000000-000001")
    store.pin(old.name)
    assert store.is_pinned(old.name) and (old / "PINNED").is_file()
    assert store.cleanup() == []
    store.unpin(old.name)
    store.unpin(old.name)
    assert not store.is_pinned(old.name)
    assert store.cleanup() == [old.name]
    assert not old.exists()


def test_remove_refuses_a_live_session(store: StoreRoot) -> None:
    with store.open_session("p") as live:
        with pytest.raises(StoreError, match="is live .* stop its process first"):
            store.remove(live.id)
        assert live.dir.is_dir()
        live.catalog.add_run(name="still writable")


# --- the clean-up -------------------------------------------------------------


@pytest.mark.slow
def test_a_new_session_removes_old_ones_and_keeps_live_pinned_and_foreign_things(
    store: StoreRoot, tmp_home: Path
) -> None:
    old = [_old_session(store, f"20250101-00000{i}-00000{i}") for i in range(2)]
    pinned = _old_session(store, "20250102-000000-0000aa")
    store.pin(pinned.name)
    sessions = store.sessions_dir
    not_an_id = sessions / "keep-me"
    not_an_id.mkdir()
    (not_an_id / "SESSION").write_text("{}")  # a marker, but the name is not a session id
    no_marker = sessions / "20250103-000000-0000bb"
    no_marker.mkdir()
    (no_marker / "data.bin").write_bytes(b"1")
    stray_file = sessions / "20250104-000000-0000cc"
    stray_file.write_text("a file, not a folder")
    outside = tmp_home.parent / "outside.txt"
    outside.write_text("not ours")
    beside = tmp_home / "notes.txt"
    beside.write_text("not ours either")

    live_id = "20250105-000000-0000dd"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_home), live_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open", holder.stderr.read()
        assert store.is_live(live_id)
        with store.open_session("new") as new:
            remaining = sorted(p.name for p in sessions.iterdir())
        assert remaining == sorted([new.id, pinned.name, not_an_id.name, no_marker.name, stray_file.name, live_id])
        assert not any(p.exists() for p in old)
        assert (pinned / "samples" / "part.parquet").is_file()
        assert (no_marker / "data.bin").read_bytes() == b"1"
        assert stray_file.read_text() == "a file, not a folder"
        assert outside.read_text() == "not ours" and beside.read_text() == "not ours either"
        assert (sessions / live_id / "catalog.sqlite").is_file()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0, holder.stderr.read()
    # Once its process has ended, the formerly live session goes at the next clean-up.
    assert store.cleanup(keep={new.id}) == [live_id]


def test_a_symlinked_session_is_unlinked_and_its_target_left_alone(store: StoreRoot, tmp_path: Path) -> None:
    target = _old_session(StoreRoot(tmp_path / "elsewhere"), "20250101-000000-00000e")
    store.sessions_dir.mkdir(parents=True)
    link = store.sessions_dir / target.name
    link.symlink_to(target, target_is_directory=True)
    assert [e.id for e in store.list_sessions()] == [target.name]
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    assert store.cleanup() == [target.name]
    assert not link.exists() and not link.is_symlink()
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    with Catalog.open(target / "catalog.sqlite", readonly=True) as catalog:
        assert [r.name for r in catalog.runs()] == ["r"]


def test_symlinks_inside_a_session_are_not_followed(store: StoreRoot, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    old = _old_session(store, "20250101-000000-00000f")
    (old / "link").symlink_to(precious, target_is_directory=True)
    assert store.cleanup() == [old.name]
    assert (precious / "data.txt").read_text() == "keep"


def test_cleanup_without_a_sessions_folder_does_nothing(store: StoreRoot) -> None:
    assert store.cleanup() == []
    assert not store.sessions_dir.exists()


def test_close_flushes_the_writer_before_closing_the_catalog(store: StoreRoot) -> None:
    import numpy as np

    session = store.open_session("p", cleanup=False)
    run = session.catalog.add_run(name="r")
    writer = session.writer
    assert session.writer is writer  # made once
    writer.log_samples(run.id, "train", 0, 1, np.arange(4), np.ones(4, dtype=np.float32))
    session.close()
    with pytest.raises(StoreError, match="closed"):
        writer.log_samples(run.id, "train", 0, 2, np.arange(4), np.ones(4, dtype=np.float32))
    with pytest.raises(StoreError, match="is closed"):
        _ = session.writer
    with Catalog.open(session.dir / "catalog.sqlite", readonly=True) as catalog:
        assert sum(s.rows for s in catalog.active_shards("samples")) == 4
