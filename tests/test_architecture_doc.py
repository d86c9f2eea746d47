"""docs/architecture.md's module table names every module of the package, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table_entries() -> set[str]:
    """Paths the table names: a row's first cell, later names in it relative to the first one's folder."""
    named: set[str] = set()
    for row in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        if not row.startswith("| `onthefly"):
            continue
        folder = None
        for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
            if name.startswith("onthefly/"):
                name = name.rstrip("/")
                folder = name.rsplit("/", 1)[0] if name.endswith(".py") else name
                named.add(name)
            elif folder and name.endswith(".py"):
                named.add(f"{folder}/{name}")
    return named


def test_every_module_of_the_package_is_in_the_architecture_table():
    named = table_entries()
    modules = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "onthefly").rglob("*.py") if p.name != "__init__.py"
    )
    unnamed = [m for m in modules if m not in named and not any(m.startswith(f"{n}/") for n in named)]
    assert unnamed == []


def test_the_architecture_table_names_no_module_that_is_gone():
    gone = [n for n in table_entries() if not (ROOT / n).exists()]
    assert gone == []
