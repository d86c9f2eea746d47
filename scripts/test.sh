#!/usr/bin/env bash
# Sets up .venv (once) and runs the whole test suite: lint (ruff check, ruff
# format --check) and the import contracts (import-linter, pyproject.toml), the
# VS Code extension's tests (unit, browser and code-server end to end;
# scripts/test-extension.sh), then the Python tests. Any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
echo "== lint (ruff) and import contracts (import-linter)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
bash scripts/test-extension.sh
exec .venv/bin/python -m pytest -q "$@"
