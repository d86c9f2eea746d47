"""Fixtures shared by every test folder (folders add their own in their conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store root; ``$ONTHEFLY_HOME`` points at it, so nothing lands in the working tree."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ONTHEFLY_HOME", str(home))
    return home
