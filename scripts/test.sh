#!/usr/bin/env bash
# Runs Switchboard's whole test suite on a fresh machine: installs what the browser tests
# need (Debian's Chromium, the npm packages in web/), builds, then runs the Rust tests
# (unit, protocol, store conformance against SQLite and the PostgreSQL at 127.0.0.1:5432,
# egress formats checked with ffmpeg) and the browser end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's Chromium for the browser tests; ffmpeg (ffprobe) reads what egress records.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
# The constrained-link tests shape links between network namespaces (tc from iproute2, nft).
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# coturn: the external TURN server web/tests/turn.test.mjs relays through.
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
# openssl makes the TURN-over-TLS tests' certificates; curl reads /metrics inside a namespace.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# OpenSSL's headers and pkg-config: the `openssl` crate (WHIP/WHEP peers' DTLS) builds on them.
for pkg in libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== installing npm packages (web/)"
(cd web && npm ci --no-fund --no-audit --loglevel=error)

echo "== installing the third-party peers (.venv-interop: aiortc, LiveKit's Python SDKs; GStreamer)"
bash scripts/interop-deps.sh

echo "== building"
cargo build --workspace --all-targets

echo "== Rust tests"
cargo test --workspace

echo "== fuzzing: every target for a few seconds from the kept corpus (docs/security.md)"
bash scripts/fuzz.sh "${SWITCHBOARD_FUZZ_SECONDS:-10}"

echo "== browser and SDK tests (web/)"
(cd web && npm test)
