"""The `onthefly` command end to end, run as a separate process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from onthefly._version import __version__
from onthefly.cli.main import sql_format
from onthefly.cli.tables import format_cell, render_table
from onthefly.errors import ConfigError
from onthefly.store.lifecycle import StoreRoot
from tests.store.shards import write_samples

pytestmark = pytest.mark.timeout(120)

ONTHEFLY = Path(sys.executable).with_name("onthefly")


def onthefly(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ONTHEFLY_HOME"}
    if home is not None:
        env["ONTHEFLY_HOME"] = str(home)
    return subprocess.run([str(ONTHEFLY), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store root with an older pinned session and a newer one holding 4 samples."""
    root = tmp_path_factory.mktemp("cli") / "home"
    store = StoreRoot(root)
    with store.open_session("old-project", cleanup=False) as old:
        old.catalog.add_run(name="first")
    store.pin(old.id)
    with store.open_session("mnist", cleanup=False) as new:
        run = new.catalog.add_run(name="baseline")
        new.catalog.add_run(name="tuned", kind="fork", parents=[(run.id, "fork_of")], status="paused")
        write_samples(new, run.id, epoch=0, sample_ids=np.arange(4), losses=[0.5, 2.0, 1.0, 3.0], step=np.arange(4))
    return root, old.id, new.id


def test_version_prints_the_package_version():
    result = onthefly("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"onthefly {__version__}"


def test_ls_lists_sessions_newest_first_with_flags_and_runs(home):
    root, old_id, new_id = home
    text = onthefly("ls", home=root)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{new_id}  mnist") and "[pinned]" not in lines[0]
    assert any("baseline" in line and "base" in line and "running" in line for line in lines)
    assert any("tuned" in line and "fork" in line and "paused" in line for line in lines)
    assert any(line.startswith(old_id) and "[pinned]" in line for line in lines)
    listed = json.loads(onthefly("--home", str(root), "ls", "--json").stdout)
    assert [s["id"] for s in listed] == [new_id, old_id]
    assert listed[1]["pinned"] is True and listed[0]["live"] is False
    tuned = next(r for r in listed[0]["runs"] if r["name"] == "tuned")
    assert tuned["kind"] == "fork" and tuned["parents"][0]["role"] == "fork_of"


def test_sql_prints_csv_when_piped_and_json_on_request(home):
    root, old_id, new_id = home
    piped = onthefly("sql", "SELECT sample_id, loss FROM samples ORDER BY loss DESC", home=root)
    assert piped.returncode == 0, piped.stderr
    table = pacsv.read_csv(io.BytesIO(piped.stdout.encode()))
    assert table.column("sample_id").to_pylist() == [3, 1, 2, 0]
    as_json = onthefly("sql", "SELECT name FROM runs ORDER BY name", "--format", "json", "--session", old_id, home=root)
    assert json.loads(as_json.stdout) == [{"name": "first"}]


def test_sql_renders_a_table_and_notes_truncation(home):
    root, _, _ = home
    result = onthefly("sql", "SELECT sample_id FROM samples ORDER BY 1", "--format", "table", "--limit", "2", home=root)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["sample_id", "---------", "        0", "        1", "(2 rows)"]
    assert "--limit 0" in result.stderr


def test_sql_writes_parquet_to_a_file_and_needs_one(home, tmp_path):
    root, _, _ = home
    target = tmp_path / "out.parquet"
    result = onthefly("sql", "SELECT * FROM samples", "-o", str(target), home=root)  # format from the suffix
    assert result.returncode == 0, result.stderr
    assert pq.read_table(target).column("loss").to_pylist() == [0.5, 2.0, 1.0, 3.0]
    refused = onthefly("sql", "SELECT 1", "--format", "parquet", home=root)
    assert refused.returncode == 1 and refused.stderr.startswith("onthefly: error: --format parquet")


def test_a_bad_query_exits_1_with_one_line_and_a_traceback_only_with_debug(home):
    root, _, _ = home
    bad = onthefly("sql", "DELETE FROM runs", home=root)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("onthefly: error: only SELECT")
    debug = onthefly("sql", "SELECT * FROM nowhere", "--debug", home=root)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("onthefly: error: the query failed")


def test_sql_without_any_session_says_so(tmp_path):
    result = onthefly("sql", "SELECT 1", home=tmp_path / "empty")
    assert result.returncode == 1 and "no session in the store root" in result.stderr


def test_the_format_follows_the_terminal_unless_asked():
    assert sql_format(None, None, tty=True) == "table"
    assert sql_format(None, None, tty=False) == "csv"
    assert sql_format("json", None, tty=True) == "json"
    assert sql_format(None, "x.json", tty=True) == "json"
    with pytest.raises(ConfigError, match="-o"):
        sql_format("parquet", None, tty=False)


def test_tables_align_numbers_right_and_escape_text():
    text = render_table(["name", "loss"], [["a\tb", 1.0], [None, 0.123456789]])
    assert text.splitlines() == ["name      loss", "----  --------", "a\\tb         1", "NULL  0.123457", "(2 rows)"]
    assert format_cell("x" * 50, max_width=10) == "x" * 9 + "…"
