"""`onthefly export/import/rm/pin/unpin/report/serve` end to end, each run as a separate process."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from onthefly.store.lifecycle import StoreRoot
from tests.bundle.test_export import fill_session, tree
from tests.link.dashboard import dash, link_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(180)

ONTHEFLY = Path(sys.executable).with_name("onthefly")
COMMANDS = ("export", "import", "rm", "pin", "unpin", "report", "serve")


def onthefly(*args: str, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ONTHEFLY_HOME"}
    if home is not None:
        env["ONTHEFLY_HOME"] = str(home)
    return subprocess.run([str(ONTHEFLY), *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onthefly: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A store with one closed session, and the bundle `onthefly export` writes of it."""
    root = tmp_path_factory.mktemp("cli-bundles")
    session_id = fill_session(StoreRoot(root / "origin"))
    result = onthefly("export", "-o", str(root / "s.zip"), home=root / "origin")
    assert result.returncode == 0, result.stderr
    return root, session_id, root / "s.zip", result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = onthefly(command, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: onthefly {command}")


def test_export_writes_the_newest_session_and_says_where(origin):
    root, session_id, bundle, stdout = origin
    assert stdout.startswith(f"exported session {session_id} (1 run(s), 6 files") and str(bundle) in stdout
    with zipfile.ZipFile(bundle) as zf:
        assert json.loads(zf.read("manifest.json"))["session"]["id"] == session_id


def test_export_names_the_bundle_after_the_session_by_default(origin, tmp_path):
    root, session_id, _, _ = origin
    result = onthefly("export", session_id, home=root / "origin", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{session_id}.zip").is_file()


def test_import_pins_the_session_and_a_second_import_changes_nothing(origin, tmp_path):
    _, session_id, bundle, _ = origin
    home = tmp_path / "home"
    first = onthefly("import", str(bundle), home=home)
    assert first.returncode == 0, first.stderr
    assert f"session {session_id} (bundles, 1 run(s)) imported" in first.stdout and "pinned" in first.stdout
    before = tree(home)
    second = onthefly("import", str(bundle), "--json", home=home)
    assert json.loads(second.stdout)["already_there"] is True and tree(home) == before
    listed = onthefly("ls", home=home).stdout
    assert listed.startswith(f"{session_id}  bundles  [pinned]")
    rows = onthefly("sql", "SELECT origin FROM sessions", "--session", session_id, home=home).stdout
    assert rows.splitlines() == ['"origin"', '"imported"']  # CSV when piped


def test_sql_and_report_open_a_bundle_directly(origin, tmp_path):
    _, _, bundle, _ = origin
    home = tmp_path / "home"
    rows = onthefly("sql", "SELECT count(*) AS n FROM samples", "--session", str(bundle), home=home)
    assert rows.returncode == 0 and rows.stdout.splitlines() == ['"n"', "128"]
    text = onthefly("report", str(bundle), "--epoch", "0", "-k", "3", home=home)
    assert text.returncode == 0, text.stderr
    assert "epoch 0" in text.stdout and "count 64" in text.stdout and "hardest samples" in text.stdout
    assert "#" in text.stdout and "(3 rows)" in text.stdout


def test_a_hostile_bundle_fails_with_one_line_and_leaves_the_store_alone(origin, tmp_path):
    _, _, bundle, _ = origin
    home = tmp_path / "home"
    fill_session(StoreRoot(home), project="resident", epochs=1)
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(hostile, "w") as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))
        out.writestr("../../escape.parquet", b"x")
    before = tree(home)
    one_error_line(onthefly("import", str(hostile), home=home), "leaves the bundle folder", "fresh export")
    assert tree(home) == before and not (tmp_path.parent / "escape.parquet").exists()


def test_report_writes_a_self_contained_html_page(origin, tmp_path):
    root, _, _, _ = origin
    page = tmp_path / "report.html"
    result = onthefly("report", "--split", "train", "-o", str(page), home=root / "origin")
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<svg" in text and "<rect" in text
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_report_as_png_needs_matplotlib(origin, tmp_path):
    root, _, _, _ = origin
    result = onthefly("report", "-o", str(tmp_path / "report.png"), home=root / "origin")
    if importlib.util.find_spec("matplotlib") is None:
        one_error_line(result, "needs matplotlib", "report.html")
        assert not (tmp_path / "report.png").exists()
    else:
        assert result.returncode == 0 and (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_other_outputs_and_unknown_runs(origin, tmp_path):
    root, _, _, _ = origin
    one_error_line(onthefly("report", "-o", str(tmp_path / "r.pdf"), home=root / "origin"), ".html or .png")
    one_error_line(onthefly("report", "--run", "nope", home=root / "origin"), "no run 'nope'")


def test_pin_unpin_and_rm(tmp_path):
    home = tmp_path / "home"
    store = StoreRoot(home)
    keep, drop = fill_session(store, epochs=1), fill_session(store, project="other", epochs=1)
    assert onthefly("pin", keep, home=home).stdout == f"pinned session {keep}\n"
    assert store.is_pinned(keep)
    assert onthefly("unpin", keep, home=home).returncode == 0 and not store.is_pinned(keep)
    assert onthefly("rm", drop, home=home).stdout == f"removed session {drop}\n"
    assert [entry.id for entry in store.list_sessions()] == [keep]
    one_error_line(onthefly("rm", keep, "20000101-000000-abcdef", home=home), "no session '20000101-000000-abcdef'")
    assert [entry.id for entry in store.list_sessions()] == [keep], "nothing is removed when one id is wrong"
    one_error_line(onthefly("pin", "../x", home=home), "is not a session id")


def test_rm_refuses_a_live_session(tmp_path):
    home = tmp_path / "home"
    with StoreRoot(home).open_session("live", cleanup=False) as session:
        one_error_line(onthefly("rm", session.id, home=home), "is live")
        assert session.dir.is_dir()


def test_serve_hosts_a_bundle_for_the_dashboard_until_interrupted(origin, dash, tmp_path):
    _, session_id, bundle, _ = origin
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "ONTHEFLY_HOME"}
    env["ONTHEFLY_HOME"] = str(home)
    process = subprocess.Popen(
        [str(ONTHEFLY), "serve", str(bundle), "--port", str(dash.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        trainer = dash.accept(timeout=60)
        assert trainer.client["session"] == session_id
        answer = trainer.request("query", {"sql": "SELECT count(*) FROM samples"}, timeout=30)
        assert answer["rows"] == [[128]]
        assert StoreRoot(home).is_live(session_id)
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "serving session" in stderr and "stopped serving" in stderr
    assert not StoreRoot(home).is_live(session_id) and StoreRoot(home).is_pinned(session_id)


def test_serve_fails_with_one_line_when_there_is_nothing_to_serve(tmp_path):
    one_error_line(onthefly("serve", "--port", "9", home=tmp_path / "empty"), "no session in the store root")
