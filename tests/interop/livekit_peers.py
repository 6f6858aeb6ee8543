"""Participants on LiveKit's Python SDK (`livekit`: its Rust core through FFI, the same
core as its Node, Unity and native SDKs), for web/tests/sdk-python.test.mjs.

Each prints one JSON object per line ({"event": …}); the Node test asserts on them.

  livekit_peers.py pair URL ROOM [--single-pc]
      `alice` publishes a camera (solid-colour frames) and a microphone (a 440 Hz tone);
      `bob` decodes both. Then data packets (reliable, lossy, addressed, with topics), RPC
      both ways, a text stream and a byte stream. Ends with one "result" event and exits.
  livekit_peers.py peer URL ROOM IDENTITY [--single-pc]
      One participant publishing the same camera and microphone, reporting what it decodes
      from others ("video", "audio"), chat messages ("chat": data on topic "chat", as the
      demo page sends them; "chat_text": text streams on topic "lk.chat", LiveKit's chat),
      and answering RPC method "whoami". Once someone else is in the room it sends a chat
      message both ways. It reports "reconnecting" and "reconnected" {sid} when its link
      fails and comes back. A "stop" line on stdin makes it leave.

Tokens are minted with LiveKit's own `livekit-api` from LIVEKIT_API_KEY/LIVEKIT_API_SECRET.
"""

import asyncio
import hashlib
import json
import math
import os
import sys
import time

from livekit import api, rtc

WIDTH, HEIGHT = 320, 240
# A colour a codec keeps: the decoded centre pixel must come back near it.
COLOUR = (200, 40, 120)
TONE_HZ = 440
SAMPLE_RATE = 48000
FRAME_SAMPLES = 480  # 10 ms
VIDEO_FRAMES = 30
BYTE_STREAM_SIZE = 100_000
AUDIO_FRAMES = 200


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def token(room, identity):
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken().with_identity(identity).with_grants(grants).to_jwt()


def room_options():
    return rtc.RoomOptions(auto_subscribe=True, single_peer_connection="--single-pc" in sys.argv)


def tone_frame(start):
    samples = bytearray()
    for i in range(FRAME_SAMPLES):
        value = int(12000 * math.sin(2 * math.pi * TONE_HZ * (start + i) / SAMPLE_RATE))
        samples += value.to_bytes(2, "little", signed=True)
    return rtc.AudioFrame(bytes(samples), SAMPLE_RATE, 1, FRAME_SAMPLES)


async def publish_media(room, stop):
    """Publishes the camera and microphone; returns the tasks feeding them."""
    video = rtc.VideoSource(WIDTH, HEIGHT)
    audio = rtc.AudioSource(SAMPLE_RATE, 1)
    camera = rtc.LocalVideoTrack.create_video_track("camera", video)
    microphone = rtc.LocalAudioTrack.create_audio_track("microphone", audio)
    await room.local_participant.publish_track(
        camera, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
    await room.local_participant.publish_track(
        microphone, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def frames():
        pixel = bytes((*COLOUR, 255))
        frame = rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, pixel * (WIDTH * HEIGHT))
        while not stop.is_set():
            video.capture_frame(frame)
            await asyncio.sleep(1 / 15)

    async def tone():
        n = 0
        while not stop.is_set():
            await audio.capture_frame(tone_frame(n))  # paced by the source's queue
            n += FRAME_SAMPLES

    return [asyncio.create_task(frames()), asyncio.create_task(tone())]


async def watch_video(track):
    """Decodes VIDEO_FRAMES frames: their count, size and centre pixel."""
    seen = {"frames": 0}
    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
    async for event in stream:
        frame = event.frame
        at = ((frame.height // 2) * frame.width + frame.width // 2) * 4
        seen["frames"] += 1
        seen["width"], seen["height"] = frame.width, frame.height
        seen["centre"] = list(frame.data[at:at + 3])
        if seen["frames"] >= VIDEO_FRAMES:
            break
    await stream.aclose()
    return seen


async def listen_audio(track):
    """Decodes AUDIO_FRAMES 10 ms frames: the peak and, over the audible ones, the pitch."""
    heard = {"frames": 0, "peak": 0}
    crossings = audible = 0
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    async for event in stream:
        samples = event.frame.data  # int16
        heard["frames"] += 1
        peak = max((abs(s) for s in samples), default=0)
        heard["peak"] = max(heard["peak"], peak)
        if peak > 1000:
            crossings += sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
            audible += len(samples)
            heard["pitch_hz"] = round(crossings / 2 / (audible / SAMPLE_RATE))
        if heard["frames"] >= AUDIO_FRAMES:
            break
    await stream.aclose()
    return heard


def packet_record(packet):
    return {"from": packet.participant.identity if packet.participant else None,
            "topic": packet.topic, "reliable": packet.kind == rtc.DataPacketKind.KIND_RELIABLE,
            "payload": packet.data.decode()}


async def read_byte_stream(reader, sender_identity):
    """Reads a byte stream whole: who sent it, its topic and name, its size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    async for chunk in reader:
        digest.update(chunk)
        size += len(chunk)
    return {"from": sender_identity, "topic": reader.info.topic, "name": reader.info.name,
            "size": size, "sha256": digest.hexdigest()}


async def pair(url, room_name):
    alice, bob = rtc.Room(), rtc.Room()
    loop = asyncio.get_running_loop()
    video, audio = loop.create_future(), loop.create_future()
    result = {"bob": {"data": []}, "alice": {"data": []}}
    alice_got_data = asyncio.Event()
    texts = asyncio.Queue()
    byte_streams = asyncio.Queue()

    def decode_into(future, decoder, track, participant):
        async def run():
            seen = await decoder(track)
            seen["from"] = participant.identity
            return seen
        task = asyncio.create_task(run())
        task.add_done_callback(
            lambda t: future.done() or (future.set_exception(t.exception()) if t.exception()
                                        else future.set_result(t.result())))

    @bob.on("track_subscribed")
    def on_track(track, _publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            decode_into(video, watch_video, track, participant)
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            decode_into(audio, listen_audio, track, participant)

    bob.on("data_received", lambda p: result["bob"]["data"].append(packet_record(p)))

    @alice.on("data_received")
    def on_alice_data(packet):
        result["alice"]["data"].append(packet_record(packet))
        alice_got_data.set()

    def on_text(reader, sender_identity):
        async def read():
            texts.put_nowait({"from": sender_identity, "topic": reader.info.topic,
                              "text": await reader.read_all()})
        asyncio.create_task(read())

    bob.register_text_stream_handler("notes", on_text)

    def on_bytes(reader, sender_identity):
        async def read():
            byte_streams.put_nowait(await read_byte_stream(reader, sender_identity))
        asyncio.create_task(read())

    bob.register_byte_stream_handler("files", on_bytes)

    await alice.connect(url, token(room_name, "alice"), room_options())
    await bob.connect(url, token(room_name, "bob"), room_options())
    emit("joined", alice=alice.local_participant.sid, bob=bob.local_participant.sid)

    @bob.local_participant.register_rpc_method("greet")
    async def greet(data: rtc.RpcInvocationData):
        return f"hello {data.caller_identity}, you said {data.payload}"

    @alice.local_participant.register_rpc_method("fail")
    async def fail(_data: rtc.RpcInvocationData):
        raise rtc.RpcError(1500, "refused on purpose")

    stop = asyncio.Event()
    feeders = await publish_media(alice, stop)
    started = time.monotonic()
    result["bob"]["video"], result["bob"]["audio"] = await asyncio.wait_for(
        asyncio.gather(video, audio), 30)
    result["media_seconds"] = round(time.monotonic() - started, 2)

    lp_alice, lp_bob = alice.local_participant, bob.local_participant
    await lp_alice.publish_data(b"reliable hello", reliable=True, topic="chat")
    await lp_alice.publish_data(
        b"only for bob", reliable=True, destination_identities=["bob"], topic="direct")
    await lp_alice.publish_data(
        b"for nobody here", reliable=True, destination_identities=["carol"], topic="direct")
    await lp_bob.publish_data(b"lossy back", reliable=False, topic="telemetry")
    await lp_alice.send_text("a text stream", topic="notes")
    result["bob"]["text"] = await asyncio.wait_for(texts.get(), 10)
    # A byte stream of several chunks (the SDK cuts at 15 KB), its content checked whole.
    blob = bytes(i % 251 for i in range(BYTE_STREAM_SIZE))
    writer = await lp_alice.stream_bytes("blob.bin", topic="files", total_size=len(blob))
    for at in range(0, len(blob), 40_000):
        await writer.write(blob[at:at + 40_000])
    await writer.aclose()
    result["bob"]["bytes"] = await asyncio.wait_for(byte_streams.get(), 20)
    result["bob"]["bytes"]["sent_sha256"] = hashlib.sha256(blob).hexdigest()
    result["alice"]["rpc"] = await lp_alice.perform_rpc(
        destination_identity="bob", method="greet", payload="hi", response_timeout=10)
    try:
        await lp_bob.perform_rpc(
            destination_identity="alice", method="fail", payload="", response_timeout=10)
    except rtc.RpcError as e:
        result["bob"]["rpc_error"] = {"code": e.code, "message": e.message}
    # Alice's reliable packets went before her text stream on the same ordered channel, so
    # bob has had every one he will get; bob's lossy packet is awaited on its own.
    await asyncio.wait_for(alice_got_data.wait(), 10)

    stop.set()
    for task in feeders:
        task.cancel()
    await alice.disconnect()
    await bob.disconnect()
    emit("result", **result)


async def peer(url, room_name, identity):
    room = rtc.Room()
    stop = asyncio.Event()
    someone = asyncio.Event()
    reported = set()

    def report(kind, decoder, track, participant):
        async def run():
            try:
                seen = await decoder(track)
                emit(kind, **{"from": participant.identity, **seen})
            except Exception as e:  # reported, not swallowed: the test fails on it
                emit("error", message=f"decoding {kind} from {participant.identity}: {e!r}")
        if (kind, participant.identity) not in reported:
            reported.add((kind, participant.identity))
            asyncio.create_task(run())

    @room.on("track_subscribed")
    def on_track(track, _publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            report("video", watch_video, track, participant)
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            report("audio", listen_audio, track, participant)

    @room.on("data_received")
    def on_data(packet):
        if packet.topic == "chat":
            emit("chat", **packet_record(packet))

    room.on("participant_connected", lambda _p: someone.set())
    # Link trouble: the SDK resumes (same sid) or rejoins; the test reads which.
    room.on("reconnecting", lambda: emit("reconnecting"))
    room.on("reconnected", lambda: emit("reconnected", sid=room.local_participant.sid))

    def on_chat_text(reader, sender_identity):
        async def read():
            emit("chat_text", **{"from": sender_identity, "text": await reader.read_all()})
        asyncio.create_task(read())

    room.register_text_stream_handler("lk.chat", on_chat_text)

    def on_file(reader, sender_identity):
        async def read():
            emit("bytes", **await read_byte_stream(reader, sender_identity))
        asyncio.create_task(read())

    room.register_byte_stream_handler("files", on_file)

    await room.connect(url, token(room_name, identity), room_options())

    @room.local_participant.register_rpc_method("whoami")
    async def whoami(data: rtc.RpcInvocationData):
        return json.dumps({"caller": data.caller_identity, "callee": identity,
                           "payload": data.payload})

    feeders = await publish_media(room, stop)
    emit("joined", sid=room.local_participant.sid,
         remotes=sorted(p.identity for p in room.remote_participants.values()))
    if room.remote_participants:
        someone.set()
    await someone.wait()
    await room.local_participant.publish_data(
        f"hello from {identity}".encode(), reliable=True, topic="chat")
    await room.local_participant.send_text(f"{identity} on lk.chat", topic="lk.chat")
    emit("chat_sent")

    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "stop":
        emit("error", message=f"unexpected input {line!r}")
    stop.set()
    for task in feeders:
        task.cancel()
    await room.disconnect()
    emit("left")


def main():
    mode, url, room_name = sys.argv[1:4]
    try:
        if mode == "pair":
            asyncio.run(pair(url, room_name))
        elif mode == "peer":
            asyncio.run(peer(url, room_name, sys.argv[4]))
        else:
            raise SystemExit(f"unknown mode {mode}")
    except Exception as e:
        emit("error", message=repr(e))
        raise
    # Done and disconnected: leave without the interpreter's teardown. The SDK's native
    # runtime (livekit 1.2.1) once aborted the process there (SIGABRT, "panic in a function
    # that cannot unwind" on one of its threads) after a clean disconnect, in CI.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
