// LiveKit's own server SDK (livekit-server-sdk's RoomServiceClient) manages Switchboard's
// rooms through the Twirp RoomService, unchanged: create, list, update metadata, list and get
// participants, delete; and a request signed with the wrong secret is refused.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { RoomServiceClient } from 'livekit-server-sdk';
import { startServer } from './support/server.mjs';

const API_KEY = 'devkey';
const API_SECRET = 'secret';

let server;
let rooms;

before(async () => {
  server = await startServer();
  rooms = new RoomServiceClient(server.url, API_KEY, API_SECRET);
});

after(async () => {
  await server?.stop();
});

/** A fresh room name, so tests never see each other's rooms. */
function roomName(tag) {
  return `tw-${tag}-${randomBytes(4).toString('hex')}`;
}

/** Runs `fn`, adding the server's log tail to a failure. */
async function withLog(fn) {
  try {
    await fn();
  } catch (e) {
    e.message += `\n${server.logTail(40)}`;
    throw e;
  }
}

test('createRoom, listRooms with a names filter, updateRoomMetadata and deleteRoom', () => withLog(async () => {
  const name = roomName('main');
  const other = roomName('other');
  const created = await rooms.createRoom({ name, emptyTimeout: 120, maxParticipants: 7, metadata: 'v1' });
  assert.equal(created.name, name);
  assert.equal(created.emptyTimeout, 120);
  assert.equal(created.maxParticipants, 7);
  assert.equal(created.metadata, 'v1');
  assert.ok(created.creationTime > 0n, `creationTime ${created.creationTime}`);
  await rooms.createRoom({ name: other });

  // Creating it again returns the existing room.
  const again = await rooms.createRoom({ name });
  assert.equal(again.name, name);
  assert.equal(again.metadata, 'v1');

  const listed = await rooms.listRooms([name]);
  assert.deepEqual(listed.map((r) => r.name), [name], 'the names filter picks one room');
  const both = (await rooms.listRooms()).map((r) => r.name);
  assert.ok(both.includes(name) && both.includes(other), `all rooms: ${both}`);

  const updated = await rooms.updateRoomMetadata(name, '{"topic":"twirp"}');
  assert.equal(updated.name, name);
  assert.equal(updated.metadata, '{"topic":"twirp"}');
  assert.equal((await rooms.listRooms([name]))[0].metadata, '{"topic":"twirp"}');

  await rooms.deleteRoom(name);
  assert.deepEqual(await rooms.listRooms([name]), [], 'a deleted room is no longer listed');
  assert.deepEqual((await rooms.listRooms([other])).map((r) => r.name), [other]);
  await rooms.deleteRoom(other);
}));

test('participants of an empty room: none listed, an unknown identity is not_found', () => withLog(async () => {
  const name = roomName('people');
  await rooms.createRoom({ name });
  assert.deepEqual(await rooms.listParticipants(name), []);
  await assert.rejects(rooms.getParticipant(name, 'nobody'), (err) => {
    assert.equal(err.code, 'not_found', `code of ${err}`);
    assert.equal(err.status, 404);
    assert.match(err.message, /nobody/);
    return true;
  });
  await rooms.deleteRoom(name);
}));

test('a call signed with the wrong secret is refused', () => withLog(async () => {
  const forger = new RoomServiceClient(server.url, API_KEY, 'not-the-secret');
  const name = roomName('forged');
  await assert.rejects(forger.createRoom({ name }), (err) => {
    assert.equal(err.status, 401, `status of ${err}`);
    assert.equal(err.code, 'unauthenticated');
    assert.ok(err.message.length > 0);
    return true;
  });
  await assert.rejects(forger.listRooms(), (err) => err.status === 401);
  assert.deepEqual(await rooms.listRooms([name]), [], 'the forged create did nothing');
}));
