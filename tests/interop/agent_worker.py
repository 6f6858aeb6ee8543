"""A minimal LiveKit Agents worker (`livekit-agents`, no speech or model plugins) for
web/tests/agents.test.mjs. It registers with the server over `/agent`; each job it is
dispatched joins the room as an agent, subscribes to audio, and once it hears someone it
sends a data message (topic "agent") and a final transcription segment for that speaker,
then stays until that speaker leaves, as an agent serving someone does, and ends the job.
(Ending it at once raced the data: leaving closes the agent's data channel, and what it
had not yet sent was lost, so the transcription sometimes never arrived.)

  agent_worker.py AGENT_NAME        ("" for a worker rooms get automatically)

Env: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET. Prints one JSON object per line:
"registered" {worker_id}, then per job "job" {job_id, room, metadata}, "connected"
{identity, kind}, "heard" {participant, samples}, "published". A "stop" line on stdin
stops the worker.
"""

import asyncio
import json
import os
import sys

# The models livekit-agents bundles are not used here; do not load them.
os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")

from livekit import rtc  # noqa: E402
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType  # noqa: E402


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


AGENT_NAME = sys.argv[1] if len(sys.argv) > 1 else ""

# Threads, one warm executor and no load threshold: quick jobs on a small, busy machine.
server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=1,
                     initialize_process_timeout=30, load_threshold=float("inf"), port=0)


@server.rtc_session(agent_name=AGENT_NAME)
async def entry(ctx: JobContext):
    emit("job", job_id=ctx.job.id, room=ctx.job.room.name, metadata=ctx.job.metadata,
         dispatch_id=ctx.job.dispatch_id)
    heard = asyncio.get_running_loop().create_future()

    @ctx.room.on("track_subscribed")
    def on_track(track, publication, participant):
        if track.kind != rtc.TrackKind.KIND_AUDIO or heard.done():
            return

        async def listen():
            async for event in rtc.AudioStream(track):
                if not heard.done():
                    heard.set_result((participant, publication.sid,
                                      event.frame.samples_per_channel))
                break

        asyncio.ensure_future(listen())

    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    me = ctx.room.local_participant
    emit("connected", identity=me.identity, kind=int(me.kind), attributes=dict(me.attributes))
    participant, track_sid, samples = await asyncio.wait_for(heard, 30)
    emit("heard", participant=participant.identity, samples=samples)
    left = asyncio.get_running_loop().create_future()

    @ctx.room.on("participant_disconnected")
    def on_left(gone):
        if gone.identity == participant.identity and not left.done():
            left.set_result(None)

    await me.publish_data(json.dumps({"heard": participant.identity}).encode(),
                          reliable=True, topic="agent")
    segment = rtc.TranscriptionSegment(id="seg-1", text=f"{participant.identity} was heard",
                                       start_time=0, end_time=0, language="en", final=True)
    await me.publish_transcription(rtc.Transcription(
        participant_identity=participant.identity, track_sid=track_sid, segments=[segment]))
    emit("published")
    if participant.identity in ctx.room.remote_participants:
        await left
    ctx.shutdown("done")


async def main():
    @server.on("worker_registered")
    def on_registered(worker_id, server_info):
        emit("registered", worker_id=worker_id)

    runner = asyncio.create_task(server.run())
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "stop":
        emit("error", message=f"unexpected input {line!r}")
    await server.aclose()
    runner.cancel()
    emit("stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:
        emit("error", message=repr(e))
        raise
