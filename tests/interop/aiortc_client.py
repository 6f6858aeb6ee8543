"""WHIP publisher and WHEP player on aiortc, for web/tests/interop.test.mjs.

    python aiortc_client.py whip --url http://127.0.0.1:PORT --token JWT [--seconds N] [--video-only]
    python aiortc_client.py whep --url http://127.0.0.1:PORT --token JWT [--frames 30] [--participant ID]
    python aiortc_client.py whip-patch --url ... --token JWT   (publish, then trickle and restart ICE)

Every step prints one JSON line on stdout ({"event": ...}); the test reads them. The process
exits 0 when its goal was reached and 1 (with {"event": "error"}) otherwise. It never leaves a
session behind: the resource is DELETEd on the way out, whatever happened.
"""

import argparse
import array
import asyncio
import fractions
import json
import math
import re
import sys
import threading
import time
import urllib.error
import urllib.request

import aioice.ice
from av import AudioFrame, VideoFrame
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

# aioice skips loopback interfaces; everything here runs on 127.0.0.1 only (docs/TESTING.md).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

T0 = time.monotonic()


def emit(event, **fields):
    fields = {"event": event, "t": round(time.monotonic() - T0, 3), **fields}
    print(json.dumps(fields), flush=True)


class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)


def http(method, url, token, body=None, content_type=None, extra=None):
    """One blocking HTTP request (run in a thread); returns status, headers and text."""
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    headers.update(extra or {})
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return HttpResult(resp.status, resp.headers, resp.read().decode())
    except urllib.error.HTTPError as e:
        return HttpResult(e.code, e.headers, e.read().decode())


async def ahttp(*args, **kwargs):
    return await asyncio.to_thread(http, *args, **kwargs)


class MovingBars(VideoStreamTrack):
    """A synthetic 320x240 camera at 30 fps: moving colour bars, so every frame differs."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        w, h = 320, 240
        frame = VideoFrame(w, h, "rgb24")
        plane = frame.planes[0]
        shift = (self.n * 4) % w
        blue = (self.n * 3) % 256
        px = bytearray()
        for x in range(w):
            v = (((x + shift) // 40) * 37) % 256
            px += bytes((v, 255 - v, blue))
        row = bytes(px) + bytes(plane.line_size - 3 * w)
        plane.update(row * h)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz sine at 48 kHz in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = 0
        self.start = None

    async def recv(self):
        rate, n = 48000, 960
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.samples / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * (self.samples + i) / rate))
                                for i in range(n)))
        frame = AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = rate
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, rate)
        self.samples += n
        return frame


def resource_url(base, location):
    if location.startswith("http://") or location.startswith("https://"):
        return location
    return base.rstrip("/") + location


async def wait_connected(pc, timeout):
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise RuntimeError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not connected within {timeout}s (state {pc.connectionState}, "
                               f"ice {pc.iceConnectionState})")
        await asyncio.sleep(0.05)


async def post_offer(pc, endpoint, token):
    """createOffer → (aiortc gathers all candidates in setLocalDescription) → POST → answer."""
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    resp = await ahttp("POST", endpoint, token, offer, "application/sdp")
    if resp.status != 201:
        raise RuntimeError(f"POST {endpoint} → {resp.status}: {resp.body}")
    ctype = resp.header("Content-Type") or ""
    if not ctype.startswith("application/sdp"):
        raise RuntimeError(f"POST {endpoint}: answer has Content-Type {ctype!r}")
    location = resp.header("Location")
    if not location:
        raise RuntimeError(f"POST {endpoint}: 201 without Location")
    emit("created", location=location, etag=resp.header("ETag"),
         codecs=sorted(set(re.findall(r"a=rtpmap:\d+ ([A-Za-z0-9]+)/", resp.body))))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=resp.body, type="answer"))
    return resource_url(endpoint.split("?")[0].rsplit("/", 1)[0], location), resp.header("ETag"), offer


async def delete(url, token):
    resp = await ahttp("DELETE", url, token)
    emit("deleted", status=resp.status)
    return resp.status


def video_codec(name):
    """Restricts the video transceiver to one codec family (vp8 or h264)."""
    from aiortc.rtcrtpsender import RTCRtpSender
    caps = RTCRtpSender.getCapabilities("video")
    return [c for c in caps.codecs if c.mimeType.lower() in (f"video/{name}", "video/rtx")]


async def publish(args):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    url = None
    try:
        video = pc.addTransceiver(MovingBars(), direction="sendonly")
        video.setCodecPreferences(video_codec(args.codec))
        if not args.video_only:
            pc.addTransceiver(Tone(), direction="sendonly")
        url, etag, offer = await post_offer(pc, f"{args.url}/whip", args.token)
        await wait_connected(pc, 15)
        emit("connected")
        if args.patch:
            await trickle_and_restart(pc, url, args.token, etag, offer)
        # Keep publishing until told to stop (stdin closes or says "stop") or time runs out.
        await wait_for_stop(args.seconds)
        stats = await pc.getStats()
        sent = {s.kind: s.packetsSent for s in stats.values() if s.type == "outbound-rtp"}
        emit("sent", packets=sent)
        status = await delete(url, args.token)
        url = None
        if status != 200:
            raise RuntimeError(f"DELETE → {status}")
    finally:
        if url:
            await delete(url, args.token)
        await pc.close()


async def wait_for_stop(seconds):
    """Returns when stdin says "stop" or closes, or after `seconds`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def stun_check(conn, nominate):
    """One connectivity check on each nominated pair with the agent's current credentials."""
    from aioice import stun
    ok = True
    for pair in conn._nominated.values():
        try:
            await pair.protocol.request(conn.build_request(pair, nominate=nominate), pair.remote_addr,
                                        integrity_key=conn.remote_password.encode("utf8"),
                                        retransmissions=2)
        except stun.TransactionError as e:
            emit("check-failed", error=repr(e))
            ok = False
    return ok and bool(conn._nominated)


async def trickle_and_restart(pc, url, token, etag, offer):
    """aiortc does not trickle; send what a trickling client would, over real HTTP."""
    ufrag = re.search(r"a=ice-ufrag:(\S+)", offer).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", offer).group(1)
    mid = re.search(r"a=mid:(\S+)", offer).group(1)
    # A trickled candidate (an extra host candidate of ours) with the current credentials.
    frag = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            f"a=mid:{mid}\r\na=candidate:9 1 udp 2130706431 127.0.0.1 9 typ host\r\n")
    resp = await ahttp("PATCH", url, token, frag, "application/trickle-ice-sdpfrag",
                       {"If-Match": etag} if etag else None)
    emit("trickled", status=resp.status, etag=resp.header("ETag"), body=resp.body)
    if resp.status != 204:
        raise RuntimeError(f"trickle PATCH → {resp.status}: {resp.body}")
    # An ICE restart: new credentials of ours; the answer carries the server's new ones.
    new_ufrag, new_pwd = "rst" + ufrag[:5], "restartpassword0123456789abcdef"
    frag = (f"a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            f"a=mid:{mid}\r\n")
    resp = await ahttp("PATCH", url, token, frag, "application/trickle-ice-sdpfrag",
                       {"If-Match": "*"})
    emit("restarted", status=resp.status, etag=resp.header("ETag"), body=resp.body,
         content_type=resp.header("Content-Type"))
    if resp.status != 200:
        raise RuntimeError(f"restart PATCH → {resp.status}: {resp.body}")
    # aiortc cannot restart ICE itself: switch its ICE agent to the new credentials by hand and
    # check connectivity with them, as a restarting client would. The server must answer checks
    # with the new credentials (and media keeps flowing; the test watches it with a player).
    server_ufrag = re.search(r"a=ice-ufrag:(\S+)", resp.body).group(1)
    server_pwd = re.search(r"a=ice-pwd:(\S+)", resp.body).group(1)
    conn = pc.getTransceivers()[0].sender.transport.transport._connection
    old = (conn.local_username, conn.local_password, conn.remote_username, conn.remote_password)
    emit("recheck-old", ok=await stun_check(conn, nominate=False))
    conn._local_username, conn._local_password = new_ufrag, new_pwd
    conn.remote_username, conn.remote_password = server_ufrag, server_pwd
    emit("recheck", ok=await stun_check(conn, nominate=True), old_server_ufrag=old[2])
    # A stale If-Match is refused now that the ETag moved on.
    resp = await ahttp("PATCH", url, token, "a=end-of-candidates\r\n",
                       "application/trickle-ice-sdpfrag", {"If-Match": etag})
    emit("stale", status=resp.status, content_type=resp.header("Content-Type"))


async def play(args):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    url = None
    frames = {"video": 0, "audio": 0}
    sizes = set()
    done = asyncio.Event()
    consumers = []

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                frames[track.kind] += 1
                if track.kind == "video":
                    sizes.add((frame.width, frame.height))
                    if frames["video"] in (1, args.frames):
                        emit("video-frame", n=frames["video"], width=frame.width, height=frame.height)
                elif frames["audio"] == 1:
                    emit("audio-frame", n=1, sample_rate=frame.sample_rate)
                if frames["video"] >= args.frames and (args.video_only or frames["audio"] >= 10):
                    done.set()
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track):
        emit("track", kind=track.kind)
        consumers.append(asyncio.ensure_future(consume(track)))

    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        endpoint = f"{args.url}/whep"
        if args.participant:
            endpoint += f"?participant={args.participant}"
        url, _, _ = await post_offer(pc, endpoint, args.token)
        await wait_connected(pc, 15)
        emit("connected")
        try:
            await asyncio.wait_for(done.wait(), args.seconds)
        except asyncio.TimeoutError:
            raise RuntimeError(f"decoded {frames['video']} video / {frames['audio']} audio frames "
                               f"in {args.seconds}s (wanted {args.frames} video)")
        emit("played", video=frames["video"], audio=frames["audio"], sizes=sorted(sizes))
        status = await delete(url, args.token)
        url = None
        if status != 200:
            raise RuntimeError(f"DELETE → {status}")
    finally:
        if url:
            await delete(url, args.token)
        for c in consumers:
            c.cancel()
        await pc.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["whip", "whep", "whip-patch"])
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT of the server")
    p.add_argument("--token", required=True)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--video-only", action="store_true")
    p.add_argument("--participant")
    args = p.parse_args()
    args.patch = args.mode == "whip-patch"
    try:
        asyncio.run(play(args) if args.mode == "whep" else publish(args))
    except Exception as e:  # noqa: BLE001 — reported to the test as one line
        emit("error", message=f"{type(e).__name__}: {e}")
        sys.exit(1)
    emit("done")


if __name__ == "__main__":
    main()
