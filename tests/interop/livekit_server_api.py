"""LiveKit's Python server SDK (`livekit-api`) drives Switchboard's RoomService and
AgentDispatchService, unchanged, while a participant on LiveKit's Python SDK is in the room
and reports what it sees. For web/tests/server-sdks.test.mjs.

  livekit_server_api.py HTTP_URL ROOM

Prints one JSON line {"event": "result", …} and exits 0, or {"event": "error", …}.
"""

import asyncio
import json
import sys

from livekit import api, rtc


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def main():
    http_url, room_name = sys.argv[1:3]
    ws_url = http_url.replace("http", "ws", 1)
    result = {}
    lkapi = api.LiveKitAPI(http_url)
    carol = rtc.Room()
    got_data = asyncio.get_running_loop().create_future()
    disconnected = asyncio.Event()

    @carol.on("data_received")
    def on_data(packet: rtc.DataPacket):
        if not got_data.done():
            got_data.set_result({"topic": packet.topic, "payload": packet.data.decode()})

    carol.on("disconnected", lambda *_: disconnected.set())
    role_set = asyncio.Event()

    @carol.on("participant_attributes_changed")
    def on_attributes(_changed, participant):
        if participant.identity == "carol" and participant.attributes.get("role") == "speaker":
            role_set.set()

    token = (api.AccessToken().with_identity("carol")
             .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt())
    await carol.connect(ws_url, token)

    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room_name))
    result["listed"] = [p.identity for p in listed.participants]

    await lkapi.room.update_participant(api.UpdateParticipantRequest(
        room=room_name, identity="carol", attributes={"role": "speaker"}))
    await asyncio.wait_for(role_set.wait(), 10)
    result["attributes"] = dict(carol.local_participant.attributes)

    await lkapi.room.send_data(api.SendDataRequest(
        room=room_name, data=b"from the server", kind=api.DataPacket.Kind.RELIABLE,
        destination_identities=["carol"], topic="news"))
    result["data"] = await asyncio.wait_for(got_data, 10)

    # Agent dispatches: created, listed, deleted.
    created = await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
        agent_name="nobody-registered", room=room_name, metadata='{"task": "notes"}'))
    dispatches = await lkapi.agent_dispatch.list_dispatch(room_name)
    result["dispatch"] = {"created": created.id, "listed": [d.id for d in dispatches]}
    await lkapi.agent_dispatch.delete_dispatch(created.id, room_name)
    result["dispatch"]["after_delete"] = len(await lkapi.agent_dispatch.list_dispatch(room_name))

    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room_name, identity="carol"))
    await asyncio.wait_for(disconnected.wait(), 10)
    result["removed"] = True
    await lkapi.aclose()
    emit("result", **result)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:
        emit("error", message=repr(e))
        raise
