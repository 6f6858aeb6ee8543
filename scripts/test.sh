#!/usr/bin/env bash
# Runs Switchboard's whole test suite on a fresh machine: installs what the browser tests
# need (Debian's Chromium, the npm packages in web/), builds, then runs the Rust tests
# (unit, protocol, store conformance against SQLite and the PostgreSQL at 127.0.0.1:5432)
# and the browser end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian's Chromium for the browser tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== installing npm packages (web/)"
(cd web && npm ci --no-fund --no-audit --loglevel=error)

echo "== building"
cargo build --workspace --all-targets

echo "== Rust tests"
cargo test --workspace

echo "== browser and SDK tests (web/)"
(cd web && npm test)
