"""The link's life: dashboards that come and go, ports, closing."""

from __future__ import annotations

import pytest

from onthefly.errors import ConfigError
from onthefly.link import DashboardLink
from onthefly.link.client import next_delay, resolve_port
from onthefly.protocol.spec import DEFAULT_PORT, PORT_ENV

from .dashboard import DashboardServer, dash, link_env, make_link, wait_until  # noqa: F401  (fixtures)
from .handle import CounterHandle


def test_a_dashboard_killed_mid_run_and_a_new_one_on_the_same_port_gets_the_snapshot(link_env, make_link):
    first = DashboardServer()
    trial = make_link(port=first.port)
    trainer = first.accept()
    trial.handle.test_gate.clear()
    trainer.send_request("test")  # answered to nobody: the dashboard dies first
    wait_until(lambda: trainer.notifications("steps"), what="steps before the kill")
    first.close()
    wait_until(lambda: not trial.link.connected, what="the link to notice")
    trial.handle.test_gate.set()
    before = trial.handle.step
    wait_until(lambda: trial.handle.step > before + 10, what="training while no dashboard listens")

    with DashboardServer(port=first.port) as second:  # a new token, on the same port
        assert second.token != first.token
        trainer = second.accept()
        state = trainer.wait_notification("state")
        run = trainer.wait_notification("run")
        assert state.params["step"] > before and run.params == {
            "id": "r1",
            "name": "base",
            "kind": "base",
            "status": "running",
            "parents": [],
        }
        assert trainer.request("status")["step"] >= state.params["step"]
        later = trainer.wait_notification("steps", where=lambda p: p["step"][0] > state.params["step"])
        assert later.params["step"] == sorted(later.params["step"])
    connected = f"[onthefly] dashboard connected on tcp://127.0.0.1:{first.port}"
    assert trial.printed.count(connected) == 2
    assert "[onthefly] dashboard disconnected; training goes on" in trial.printed
    assert not [line for line in trial.printed if "link error" in line]


def test_the_port_comes_from_the_argument_then_the_environment_then_the_default(link_env, monkeypatch):
    assert resolve_port(None) == DEFAULT_PORT
    monkeypatch.setenv(PORT_ENV, "50123")
    assert resolve_port(None) == 50123
    assert resolve_port(50124) == 50124
    monkeypatch.setenv(PORT_ENV, "dashboard")
    with pytest.raises(ConfigError, match="ONTHEFLY_DASHBOARD_PORT is 'dashboard', not a port number"):
        resolve_port(None)
    with pytest.raises(ConfigError, match="not between 1 and 65535"):
        resolve_port(70000)


def test_the_environment_port_is_where_the_link_connects(link_env, monkeypatch):
    with DashboardServer() as dash:
        monkeypatch.setenv(PORT_ENV, str(dash.port))
        link = DashboardLink(CounterHandle(), client_info={"session": "s"}, printer=lambda _: None)
        link.start()
        try:
            assert dash.accept().request("status")["state"] == "running"
        finally:
            link.close()


def test_retries_back_off_to_two_seconds():
    delays = [0.0]
    for _ in range(8):
        delays.append(next_delay(delays[-1]))
    assert delays[1:] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_bad_arguments_are_refused_before_anything_starts(link_env):
    with pytest.raises(ConfigError, match="not 64 hex digits"):
        DashboardLink(CounterHandle(), client_info={}, token="secret")
    with pytest.raises(ConfigError, match="client_info must be a dict"):
        DashboardLink(CounterHandle(), client_info=None)


def test_close_stops_every_thread_whether_connected_or_still_trying(dash, make_link):
    connected = make_link(port=dash.port)
    dash.accept()
    trying = make_link(port=1)  # nothing listens there
    wait_until(lambda: connected.link.connected, what="link.connected")
    mine = [*connected.link._threads.values(), *trying.link._threads.values()]  # other tests' links may live on
    assert len(mine) == 2 * len(connected.link._threads) and all(t.name.startswith("onthefly-link-") for t in mine)
    connected.link.close()
    trying.link.close()
    wait_until(lambda: not [t for t in mine if t.is_alive()], what="the link threads to end")
    with pytest.raises(ConfigError, match="closed: create a new one"):
        trying.link.start()


def test_a_printer_that_fails_does_not_stop_the_link(dash, link_env):
    def printer(_line: str) -> None:
        raise OSError("stdout is closed")

    with DashboardLink(CounterHandle(), port=dash.port, client_info={"session": "s"}, printer=printer) as link:
        assert dash.accept().request("status")["state"] == "running"
        wait_until(lambda: link.connected, what="link.connected")
