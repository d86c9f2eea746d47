import pytest


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every session test gets its own store root and config folder (no stray dashboard token)."""
    home = tmp_path / "store"
    monkeypatch.setenv("ONTHEFLY_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ONTHEFLY_TOKEN", raising=False)
    monkeypatch.setenv("ONTHEFLY_DASHBOARD_PORT", "9")  # discard port: nothing listens
    return home
