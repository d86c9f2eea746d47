"""The example notebook runs top to bottom (its code cells, in order, in one namespace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"


def test_the_example_notebook_runs_and_reads_its_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    cells = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"notebook cell {i + 1}", "exec"), namespace)
    assert namespace["bundle"]["runs"] == 2
    assert sorted(namespace["df"]["run_id"].unique()) == sorted([namespace["slow"], namespace["fast"]])
    assert namespace["con"].sql("SELECT origin FROM sessions").fetchall() == [("imported",)]
