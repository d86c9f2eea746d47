import pytest


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Each test: its own store root, config folder and working directory; no dashboard is found."""
    home = tmp_path / "store"
    monkeypatch.setenv("ONTHEFLY_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ONTHEFLY_TOKEN", raising=False)
    monkeypatch.setenv("ONTHEFLY_DASHBOARD_PORT", "9")  # discard port: nothing listens
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(autouse=True)
def closed_sessions(monkeypatch):
    """Every session a test opens is closed when the test ends: its link thread and store do not outlive it."""
    from onthefly.session.recorder import Recorder

    opened = []
    init = Recorder.__init__

    def recorded(self, *args, **kwargs):
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(Recorder, "__init__", recorded)
    yield
    for session in opened:
        session.close()
