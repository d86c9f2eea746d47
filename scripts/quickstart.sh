#!/usr/bin/env bash
# Sets up .venv (once) and runs the quickstart: a short training run on a
# built-in dataset, stored under ./.onthefly, then a query of what it recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m onthefly.demo "$@"
