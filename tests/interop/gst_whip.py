"""WHIP publisher on GStreamer's webrtcbin (Debian's GStreamer 1.22), for web/tests/interop.test.mjs.

    /usr/bin/python3 gst_whip.py --url http://127.0.0.1:PORT --token JWT [--codec h264|vp8]
                                  [--no-audio] [--seconds N]

Runs with Debian's Python (python3-gst-1.0), not the aiortc venv. Steps: webrtcbin with a
send-only video (x264enc constrained-baseline H.264, or VP8) and Opus audio → create-offer →
set-local-description → wait for ICE gathering to complete (no trickle) → POST /whip →
set-remote-description with the answer → publish until stdin says "stop" or closes, or
`--seconds` pass → DELETE. Every step prints one JSON line on stdout; exit 0 on success.
"""

import argparse
import ctypes
import hashlib
import os
import json
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

T0 = time.monotonic()


def emit(event, **fields):
    print(json.dumps({"event": event, "t": round(time.monotonic() - T0, 3), **fields}), flush=True)


def http(method, url, token, body=None, content_type=None):
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def keep_alive(obj):
    """Adds the reference PyGObject takes away from webrtcbin's ICE agent.

    webrtcbin keeps its GstWebRTCNice agent with a floating reference; the first Python wrapper
    sinks it as its own, so without one more reference the agent is freed with the wrapper and
    webrtcbin crashes when it gathers.
    """
    if obj.__grefcount__ > 1:
        return
    capsule = ctypes.pythonapi.PyCapsule_GetPointer
    capsule.restype, capsule.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    gobject.g_object_ref.restype, gobject.g_object_ref.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    gobject.g_object_ref(capsule(obj.__gpointer__, None))


def ecdsa_certificate():
    """A fresh self-signed P-256 certificate and key (PEM) and its SHA-256 fingerprint."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=gst-whip", "-days", "2", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        with open(cert) as f:
            cert_pem = f.read()
        with open(key) as f:
            key_pem = f.read()
    der = ssl.PEM_cert_to_DER_cert(cert_pem)
    digest = hashlib.sha256(der).hexdigest().upper()
    return cert_pem + key_pem, ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


VIDEO = {
    # Constrained baseline (profile-level-id 42e01f), what browsers decode in hardware and software.
    "h264": ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 "
             "! video/x-h264,profile=constrained-baseline "
             "! rtph264pay config-interval=-1 aggregate-mode=zero-latency "
             "! application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
             "packetization-mode=(string)1"),
    "vp8": ("vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=600000 "
            "! rtpvp8pay picture-id-mode=15-bit "
            "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"),
}
AUDIO = ("audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample "
         "! opusenc ! rtpopuspay ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,"
         "clock-rate=48000 ! webrtc.")


class Publisher:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.failure = None
        self.resource = None
        desc = (f"webrtcbin name=webrtc bundle-policy=max-bundle "
                f"videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
                f"! videoconvert ! queue ! {VIDEO[args.codec]} ! webrtc. ")
        if not args.no_audio:
            desc += AUDIO
        self.pipe = Gst.parse_launch(desc)
        self.webrtc = self.pipe.get_by_name("webrtc")
        # Only 127.0.0.1: libnice skips loopback by default and everything here stays on it.
        ice = self.webrtc.get_property("ice-agent")
        keep_alive(ice)
        ice.emit("add-local-ip-address", "127.0.0.1")
        for i in range(2 if not args.no_audio else 1):
            self.webrtc.emit("get-transceiver", i).set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.offer_ready = False
        self.pem, self.fingerprint = ecdsa_certificate() if args.cert == "ecdsa" else (None, None)
        self.posted = False
        self.was_connected = False

    def fail(self, message):
        if self.failure is None:
            self.failure = message
        self.loop.quit()

    def on_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        self.fail(f"GStreamer error: {err.message} ({dbg})")

    def on_negotiation_needed(self, _element):
        # Off webrtcbin's thread: waiting on its promises there would deadlock.
        GLib.idle_add(self.make_offer)

    def create_offer(self):
        promise = Gst.Promise.new()
        self.webrtc.emit("create-offer", None, promise)
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            raise RuntimeError(f"create-offer failed: {reply}")
        # The description lives in the reply: keep both as long as the offer is used.
        self.keep = (promise, reply)
        return offer

    def make_offer(self):
        try:
            offer = self.create_offer()
            if self.pem:
                # The DTLS transports exist once an offer was made: give them our certificate
                # and make the offer again, now with its fingerprint.
                for transport in self.transports():
                    transport.set_property("certificate", self.pem)
                # dtlsdec makes a new DTLS connection for the new certificate but connects the
                # handler that accepts the peer's certificate only when going NULL → READY.
                for dec in self.elements("dtlsdec"):
                    dec.set_state(Gst.State.NULL)
                    dec.sync_state_with_parent()
                offer = self.create_offer()
            self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        except Exception as e:  # noqa: BLE001
            self.fail(f"{type(e).__name__}: {e}")
            return False
        self.offer_ready = True
        self.maybe_post()
        return False

    def elements(self, factory):
        found = []
        it = self.webrtc.iterate_recurse()
        while True:
            res, elem = it.next()
            if res != Gst.IteratorResult.OK:
                return found
            if elem.get_factory() and elem.get_factory().get_name() == factory:
                found.append(elem)

    def transports(self):
        seen = []
        i = 0
        while True:
            transceiver = self.webrtc.emit("get-transceiver", i)
            if transceiver is None:
                return seen
            transport = transceiver.get_property("sender").get_property("transport")
            if transport is not None and transport not in seen:
                seen.append(transport)
            i += 1

    def on_gathering(self, _element, _pspec):
        state = self.webrtc.get_property("ice-gathering-state")
        emit("ice-gathering", state=state.value_nick)
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.maybe_post)

    def on_connection_state(self, _element, _pspec):
        state = self.webrtc.get_property("connection-state")
        emit("connection-state", state=state.value_nick)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            GLib.idle_add(self.connected)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(self.fail, "peer connection failed")

    def maybe_post(self):
        """POSTs the offer once it is set and ICE gathering is complete (no trickle)."""
        if self.posted or not self.offer_ready:
            return False
        if self.webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return False
        self.posted = True
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        if self.fingerprint:
            # GStreamer 1.22 computes the fingerprint of a certificate it was given wrongly; the
            # server checks the one of the certificate DTLS presents.
            offer = re.sub(r"a=fingerprint:\S+ \S+", f"a=fingerprint:sha-256 {self.fingerprint}", offer)
        emit("offer", candidates=re.findall(r"a=candidate:.*", offer),
             codecs=sorted(set(re.findall(r"a=rtpmap:\d+ ([A-Za-z0-9]+)/", offer))))
        status, headers, body = http("POST", f"{self.args.url}/whip", self.args.token, offer, "application/sdp")
        if status != 201:
            self.fail(f"POST /whip → {status}: {body}")
            return False
        location = headers.get("Location")
        self.resource = location if location.startswith("http") else self.args.url + location
        emit("created", location=location, etag=headers.get("ETag"),
             codecs=sorted(set(re.findall(r"a=rtpmap:\d+ ([A-Za-z0-9]+)/", body))))
        ok, sdp = GstSdp.SDPMessage.new_from_text(body)
        if ok != GstSdp.SDPResult.OK:
            self.fail(f"the answer does not parse as SDP: {body!r}")
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        GLib.timeout_add_seconds(15, self.connect_deadline)
        return False

    def connect_deadline(self):
        if self.webrtc.get_property("connection-state") != GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.fail(f"not connected within 15s (state "
                      f"{self.webrtc.get_property('connection-state').value_nick})")
        return False

    def connected(self):
        self.was_connected = True
        emit("connected")
        return False

    def watch_stdin(self):
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        GLib.idle_add(self.loop.quit)

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        threading.Thread(target=self.watch_stdin, daemon=True).start()
        GLib.timeout_add(int(self.args.seconds * 1000), self.loop.quit)
        try:
            self.loop.run()
        finally:
            if self.resource:
                status, _, body = http("DELETE", self.resource, self.args.token)
                emit("deleted", status=status)
                if status != 200 and self.failure is None:
                    self.failure = f"DELETE → {status}: {body}"
            self.pipe.set_state(Gst.State.NULL)
        if self.failure is None and not self.was_connected:
            self.failure = "never connected"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--codec", choices=sorted(VIDEO), default="h264")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--cert", choices=["rsa", "ecdsa"], default="rsa",
                   help="DTLS certificate: GStreamer's own RSA one, or a P-256 one made with openssl")
    p.add_argument("--seconds", type=float, default=30)
    args = p.parse_args()
    Gst.init(None)
    if args.codec == "h264" and not Gst.ElementFactory.find("x264enc"):
        emit("error", message="x264enc is missing (gstreamer1.0-plugins-ugly)")
        sys.exit(1)
    pub = Publisher(args)
    pub.run()
    if pub.failure:
        emit("error", message=pub.failure)
        sys.exit(1)
    emit("done")


if __name__ == "__main__":
    main()
