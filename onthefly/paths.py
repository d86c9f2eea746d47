"""Where OnTheFly keeps its files.

The store root is passed around explicitly; this module only answers the
default when a caller has none.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["default_home", "resolve_home", "config_dir"]

HOME_ENV = "ONTHEFLY_HOME"
DEFAULT_DIRNAME = ".onthefly"


def default_home() -> Path:
    """The store root: ``$ONTHEFLY_HOME`` if set, else ``./.onthefly``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / DEFAULT_DIRNAME).resolve()


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``home`` as an absolute path, or the default root when it is None."""
    if home is None:
        return default_home()
    return Path(home).expanduser().resolve()


def config_dir() -> Path:
    """``<config>/onthefly``: $XDG_CONFIG_HOME or ~/.config; %APPDATA% on Windows."""
    if sys.platform.startswith("win"):
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onthefly"
