#!/usr/bin/env bash
# Sets up .venv (once) and runs the whole test suite: the VS Code extension's
# tests (unit, browser and code-server end to end; scripts/test-extension.sh),
# then the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
bash scripts/test-extension.sh
exec .venv/bin/python -m pytest -q "$@"
