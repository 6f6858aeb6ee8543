#!/usr/bin/env bash
# Installs what the interop tests (web/tests/interop.test.mjs, sdk-python.test.mjs, tests/interop/) need:
#   - .venv-interop/: a venv of Debian's /usr/bin/python3 with aiortc and LiveKit's Python SDKs
#     (tests/interop/requirements.txt)
#   - .venv-agents/: LiveKit Agents (tests/interop/requirements-agents.txt)
#   - Debian's GStreamer webrtcbin with its Python bindings (run with /usr/bin/python3, not the venv)
# Idempotent: when everything is present it only checks and exits within a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

SYS_PY=/usr/bin/python3
VENV=.venv-interop
REQ=tests/interop/requirements.txt
GST_PACKAGES=(gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-plugins-good
  gstreamer1.0-plugins-base gstreamer1.0-plugins-ugly gstreamer1.0-tools python3-gst-1.0
  gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-nice-0.1 python3-venv openssl)

# Debian packages: install only those not yet installed.
missing=()
for pkg in "${GST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== interop-deps: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A venv of Debian's Python with a requirements file, re-installed when the file changes.
ensure_venv() {
  local venv=$1 req=$2
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== interop-deps: creating $venv (pip install -r $req)"
    [ -x "$venv/bin/python" ] || "$SYS_PY" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
}

ensure_venv "$VENV" "$REQ"
# LiveKit Agents, in a venv of its own (it pins an older `livekit`).
AGENTS_VENV=.venv-agents
ensure_venv "$AGENTS_VENV" tests/interop/requirements-agents.txt
"$AGENTS_VENV/bin/python" -c 'from livekit.agents import AgentServer' \
  || { echo "interop-deps: livekit-agents does not import from $AGENTS_VENV" >&2; exit 1; }

# Check that both stacks import (fails loudly, never silently).
"$VENV/bin/python" -c 'import aiortc, av' \
  || { echo "interop-deps: aiortc does not import from $VENV" >&2; exit 1; }
"$VENV/bin/python" -c 'from livekit import api, rtc' \
  || { echo "interop-deps: LiveKit's Python SDK does not import from $VENV" >&2; exit 1; }
"$SYS_PY" - <<'PY' || { echo "interop-deps: GStreamer webrtcbin is not usable from $SYS_PY" >&2; exit 1; }
import gi
gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); gi.require_version('GstSdp', '1.0')
from gi.repository import Gst, GstWebRTC, GstSdp
Gst.init(None)
for name in ('webrtcbin', 'nicesrc', 'dtlsdec', 'videotestsrc', 'x264enc', 'rtph264pay', 'vp8enc', 'rtpvp8pay', 'opusenc', 'rtpopuspay'):
    assert Gst.ElementFactory.find(name), f'GStreamer element {name} is missing'
PY
echo "== interop-deps: ready ($VENV, GStreamer $("$SYS_PY" -c 'import gi; gi.require_version("Gst","1.0"); from gi.repository import Gst; Gst.init(None); print(Gst.version_string().split()[-1])'))"
