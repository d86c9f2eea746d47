"""`serve`: a finished or imported session answers the test dashboard, read-only but for slices."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from onthefly.errors import StoreError
from onthefly.protocol import codec, spec
from onthefly.serve import ServedHandle, open_served, serve
from onthefly.store.bundle.export import export_session
from onthefly.store.bundle.import_ import import_bundle, read_manifest
from onthefly.store.lifecycle import StoreRoot
from tests.bundle.test_export import fill_session
from tests.link.dashboard import RpcError, dash, link_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(dash, tmp_path, monkeypatch):
    """An imported session served to the test dashboard from a thread; stopped after the test."""
    monkeypatch.chdir(tmp_path)
    origin = StoreRoot(tmp_path / "origin")
    export_session(fill_session(origin), store=origin, path=tmp_path / "s.zip")
    store = StoreRoot(tmp_path / "store")
    stop = threading.Event()
    printed: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(tmp_path / "s.zip", store=store, port=dash.port, until=stop, printer=printed.append)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    trainer = dash.accept()
    yield trainer, store, read_manifest(tmp_path / "s.zip"), printed
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and errors == []


def test_a_served_session_says_who_it_is(served):
    trainer, store, manifest, printed = served
    session_id = manifest["session"]["id"]
    assert trainer.client["session"] == session_id and trainer.client["served"] is True
    status = trainer.request("status")
    assert codec.check_result("status", status) == []
    assert status["state"] == "finished" and status["origin"] == "imported"
    assert status["run"] == manifest["runs"][0]["id"] and status["step"] == 11
    snapshot_runs = trainer.wait_notification("run").params
    assert snapshot_runs["id"] == manifest["runs"][0]["id"]
    assert store.is_live(session_id), "serving holds the session's lock"
    # The link may connect before serve() prints its line: wait for the line, not for a time.
    deadline = time.monotonic() + 30
    while not any(session_id in line for line in printed) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(session_id in line for line in printed)


def test_queries_reports_and_slices_answer(served, tmp_path):
    trainer, store, _, _ = served
    rows = trainer.request("query", {"sql": "SELECT count(*) AS n FROM samples WHERE epoch = 1"})
    assert rows["rows"] == [[64]]
    rep = trainer.request("report", {"k": 2})
    assert codec.check_result("report", rep) == [] and rep["epoch"] == 1 and len(rep["hardest"]) == 2
    picked = trainer.request("slice", {"name": "hard", "q_min": 0.9})
    assert codec.check_result("slice", picked) == [] and picked["count"] > 0
    written = trainer.request("export_slice", {"name": "hard", "path": "hard.csv"})
    assert Path(written["path"]) == tmp_path / "hard.csv" and written["rows"] == picked["count"]
    again = trainer.request("query", {"sql": "SELECT name, count FROM slices"})
    assert again["rows"] == [["hard", picked["count"]]]


@pytest.mark.parametrize("method", ["pause", "resume", "stop", "checkpoint"])
def test_training_controls_are_refused_with_a_reason(served, method):
    trainer, _, _, _ = served
    with pytest.raises(RpcError) as info:
        trainer.request(method)
    assert info.value.code == spec.OPERATION_FAILED and "is not training" in info.value.message


def test_a_test_request_explains_why_a_served_session_cannot_test(served):
    trainer, _, manifest, _ = served
    with pytest.raises(RpcError) as info:
        trainer.request("test", {"split": "test"})
    message = info.value.message
    assert "model's code" in message and f"resume_from='{manifest['session']['id']}/" in message


def test_serving_ends_by_releasing_the_lock(dash, tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(session_id,), kwargs={"store": store, "port": dash.port, "until": stop, "printer": print}
    )
    thread.start()
    dash.accept()
    assert store.is_live(session_id)
    stop.set()
    thread.join(10)
    assert not store.is_live(session_id)


def test_a_live_session_is_served_by_its_own_process(tmp_path):
    store = StoreRoot(tmp_path / "store")
    with store.open_session("live", cleanup=False) as session:
        with pytest.raises(StoreError, match="is live"):
            open_served(session.id, store=store)


def test_a_served_session_exports_itself(tmp_path):
    store = StoreRoot(tmp_path / "store")
    session_id = fill_session(store)
    with ServedHandle(store.session_dir(session_id), store=store) as handle:
        result = handle.export(path=str(tmp_path / "again.zip"))
    entry = import_bundle(tmp_path / "again.zip", store=StoreRoot(tmp_path / "other"))
    assert result["session"] == entry.id == session_id
