#!/usr/bin/env bash
# Sets up and runs every test of the VS Code extension (extension/) on a fresh
# machine: Debian's Chromium, npm ci, type checks, the build, the unit tests
# (node --test), the browser end-to-end test against a real training process,
# the packaged .vsix, and the end-to-end test in the real VS Code workbench
# (code-server). Exits non-zero on the first failure.
#
#   bash scripts/test-extension.sh
#
# ONTHEFLY_SKIP_VSCODE_E2E=1 leaves out the code-server test (it installs
# code-server and Node 24 from npm the first time: about 2 minutes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXT="$ROOT/extension"

step() { printf '\n== %s\n' "$*"; }

if [ ! -x /usr/bin/chromium ]; then
  step "installing Debian's chromium"
  apt-get update
  apt-get install -y chromium
fi

step "the Python environment (.venv) for the end-to-end tests"
bash "$ROOT/scripts/setup-env.sh"

cd "$EXT"
step "npm ci"
npm ci --no-audit --no-fund

step "type checks"
npm run typecheck

step "build"
npm run build

step "unit tests"
npm run test:unit

step "browser end-to-end test (a real training process, Chromium)"
npm run test:e2e

step "package the .vsix"
npm run package

if [ "${ONTHEFLY_SKIP_VSCODE_E2E:-0}" = "1" ]; then
  step "VS Code end-to-end test skipped (ONTHEFLY_SKIP_VSCODE_E2E=1)"
else
  step "VS Code end-to-end test (code-server)"
  bash test/vscode/setup.sh
  node --test test/vscode/vscode.e2e.mjs
fi

step "all extension tests passed"
