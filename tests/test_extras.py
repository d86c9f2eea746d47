"""The optional extras the README names exist, and the code uses them where present and says so where not."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pyarrow as pa
import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_explorer_and_metrics_extras_are_declared():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("pandas") for req in extras["explorer"])
    assert any(req.startswith("nvidia-ml-py") for req in extras["metrics"])
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "onthefly-ai[explorer]"' in readme and 'pip install "onthefly-ai[metrics]"' in readme


@pytest.fixture
def fresh_note(monkeypatch):
    from onthefly.session import metrics

    monkeypatch.setattr(metrics, "_gpu_note_given", False)
    return metrics


def test_gpu_metrics_without_nvidia_ml_py_say_so_in_one_line_once(fresh_note, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert fresh_note.gpu_probe(torch.device("cuda", 0)) is None
    assert fresh_note.gpu_probe(torch.device("cuda", 0)) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and 'pip install "onthefly-ai[metrics]"' in lines[0]
    assert fresh_note.gpu_probe(torch.device("cpu")) is None


def test_gpu_metrics_come_from_nvml_when_it_is_there(fresh_note, monkeypatch, capsys):
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: ("handle", index),
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=3 * 2**20),
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=42),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = fresh_note.gpu_probe(torch.device("cuda", 1))
    assert probe() == (3.0, 42.0) and capsys.readouterr().err == ""


def test_slice_exports_join_a_pandas_dataframe_of_per_sample_fields():
    pd = pytest.importorskip("pandas")
    from onthefly.store.read.exports import join_extra_columns

    rows = pa.table({"sample_id": [2, 1, 3], "loss": [0.5, 0.25, 1.0]})
    joined = join_extra_columns(rows, pd.DataFrame({"sample_id": [1, 2], "path": ["a.png", "b.png"]}, index=[7, 8]))
    assert joined.column_names == ["sample_id", "loss", "path"]
    assert joined["path"].to_pylist() == ["b.png", "a.png", None]
