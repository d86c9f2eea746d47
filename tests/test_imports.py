"""Import rules that hold the package's shape: the store sits at the bottom, and store and cli modules form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import onthefly

PACKAGE = Path(onthefly.__file__).parent
# The protocol's payload shapes import nothing of onthefly: the store's read side builds a report with them.
BELOW_THE_STORE = {
    "onthefly.errors",
    "onthefly._version",
    "onthefly.paths",
    "onthefly.protocol",
    "onthefly.protocol.payloads",
}


def imports_of(folder: str) -> dict[str, set[str]]:
    """Module name -> the ``onthefly`` modules it imports (at any depth of its code), from the source."""
    found = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]  # what a relative import of level 1 starts from, for a module and an __init__ alike
        name = ".".join(parts if parts[-1] != "__init__" else package)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                imported |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        found[name] = {m for m in imported if m == "onthefly" or m.startswith("onthefly.")}
    return found


def modules_only(imported: set[str], known: set[str]) -> set[str]:
    return {m for m in imported if m in known}


def test_the_store_imports_nothing_of_onthefly_above_it():
    above = {
        (module, target)
        for module, targets in imports_of("store").items()
        for target in targets
        if not target.startswith("onthefly.store") and not any(target.startswith(b) for b in BELOW_THE_STORE)
    }
    assert above == set()


def test_store_and_cli_modules_import_each_other_without_a_cycle():
    graph = {**imports_of("store"), **imports_of("cli")}
    known = set(graph)
    edges = {m: modules_only(targets, known) - {m} for m, targets in graph.items()}
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(edges[module]):
            found = cycle_from(target, path + [module])
            if found:
                return found
        done.add(module)
        return None

    cycles = [c for c in (cycle_from(m, []) for m in sorted(edges)) if c]
    assert cycles == []
