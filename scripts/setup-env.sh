#!/usr/bin/env bash
# Creates .venv (once) and installs OnTheFly with its test tools into it.
# torch is installed first as the CPU build, so the plain `torch>=2.2`
# requirement in pyproject.toml is already satisfied and no CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.onthefly-installed
want="$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip >/dev/null
if ! "$VPY" -c "import torch" 2>/dev/null; then
  # A CPU build: torch==2.13.0 is on this kind of machine's disk; elsewhere
  # PyTorch's CPU index serves the same wheel.
  "$VPY" -m pip install -q "torch==2.13.0" 2>/dev/null \
    || "$VPY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
"$VPY" -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
