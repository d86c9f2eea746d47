"""The dashboard token file: written private and whole, read back, overridden, removed."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from onthefly.errors import ConfigError
from onthefly.link.token import read_token, remove_token, token_key, token_path, write_token
from onthefly.protocol.spec import TOKEN_ENV

from .dashboard import link_env  # noqa: F401  (fixture)


def test_the_token_lands_in_the_config_folder_named_after_the_port(link_env):
    token = write_token(50001)
    path = link_env / "dashboard-50001.token"
    assert token_path(50001) == path
    assert path.read_text() == token + "\n"
    assert len(token) == 64 and int(token, 16) >= 0
    assert read_token(50001) == token


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX file modes do not apply on Windows")
def test_the_token_file_is_readable_by_its_owner_only(link_env):
    write_token(50002)
    assert stat.S_IMODE(os.stat(link_env / "dashboard-50002.token").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(link_env).st_mode) == 0o700


def test_each_dashboard_start_writes_a_new_token_and_leaves_no_temporary_file(link_env):
    first, second = write_token(50003), write_token(50003)
    assert first != second
    assert read_token(50003) == second
    assert [p.name for p in link_env.iterdir()] == ["dashboard-50003.token"]


def test_no_file_means_no_token(link_env):
    assert read_token(50004) is None


def test_the_environment_variable_overrides_the_file(link_env, monkeypatch):
    write_token(50005)
    monkeypatch.setenv(TOKEN_ENV, "AB" * 32)
    assert read_token(50005) == "ab" * 32


@pytest.mark.parametrize("content", ["", "abc", "zz" * 32, "ab" * 33])
def test_a_malformed_token_is_a_config_error_saying_what_to_do(link_env, content):
    link_env.mkdir(parents=True)
    (link_env / "dashboard-50006.token").write_text(content)
    with pytest.raises(ConfigError, match=r"not 64 hex digits \(got \d+ characters\): restart the dashboard"):
        read_token(50006)


def test_the_key_is_the_tokens_raw_bytes():
    assert token_key("00" * 31 + "ff") == bytes(31) + b"\xff"


def test_a_stopping_dashboard_removes_only_its_own_token(link_env):
    old = write_token(50007)
    new = write_token(50007)
    assert remove_token(50007, token=old) is False
    assert read_token(50007) == new
    assert remove_token(50007, token=new) is True
    assert read_token(50007) is None
    assert remove_token(50007, token=new) is False
