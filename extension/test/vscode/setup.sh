#!/usr/bin/env bash
# Installs what the VS Code end-to-end test needs: Debian's build libraries
# for code-server's native modules, Node 24 (from npm) and code-server.
# Idempotent; about 2 minutes the first time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
missing=()
for pkg in libkrb5-dev libsecret-1-dev libx11-dev libxkbfile-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
if [ ! -x "$here/node24/node_modules/.bin/node" ]; then
  (cd "$here/node24" && npm ci --no-audit --no-fund)
fi
if [ ! -f "$here/node_modules/code-server/out/node/entry.js" ]; then
  (cd "$here" && PATH="$here/node24/node_modules/.bin:$PATH" npm ci --no-audit --no-fund)
fi
