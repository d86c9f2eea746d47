"""The wheel ships every subpackage and the Alembic migrations."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_onthefly_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "onthefly").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_the_migrations_ship_inside_the_package():
    versions = importlib.import_module("onthefly._migrations.versions")
    scripts = sorted(p.name for p in Path(versions.__file__).parent.glob("0*.py"))
    assert scripts and scripts[0].startswith("0001")
