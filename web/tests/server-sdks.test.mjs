// LiveKit's server SDKs drive live rooms through the Twirp RoomService, unchanged:
// livekit-server-sdk (npm) against Chromium participants on livekit-client, and livekit-api
// (PyPI) against a participant on LiveKit's Python SDK (tests/interop/livekit_server_api.py).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AccessToken, DataPacket_Kind, RoomServiceClient, TrackType } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { INTEROP, INTEROP_PY, ensureInteropDeps } from './support/interop.mjs';
import { jsonlProcess } from './support/jsonl-process.mjs';
import { withServer } from './support/with-server.mjs';

const JOIN_MS = 15_000;

let browser;
before(async () => {
  await ensureInteropDeps();
  browser = await launchBrowser();
}, { timeout: 15 * 60_000 });
after(async () => { await browser?.close(); });

const roomId = (what) => `sdk-${what}-${randomBytes(4).toString('hex')}`;

async function joinPage(server, pages, room, identity) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ room, roomJoin: true });
  const page = await browser.openDemo(identity);
  pages.push(page);
  await page.open(server.url, { url: server.url.replace(/^http/, 'ws'), token: await at.toJwt(), autojoin: '1' });
  await page.joined(JOIN_MS);
  return page;
}

test('livekit-server-sdk: list, update subscriptions, send addressed data, update attributes, mute and remove in a live room', { timeout: 120_000 }, () => withServer('server-sdks', async (server, _procs, pages) => {
  const room = roomId('node');
  const svc = new RoomServiceClient(server.url, 'devkey', 'secret');
  const alice = await joinPage(server, pages, room, 'alice');
  const bob = await joinPage(server, pages, room, 'bob');
  await bob.mediaFrom(['alice']);

  const listed = await svc.listParticipants(room);
  assert.deepEqual(listed.map((p) => p.identity).sort(), ['alice', 'bob']);
  const aliceInfo = listed.find((p) => p.identity === 'alice');
  const video = aliceInfo.tracks.find((t) => t.type === TrackType.VIDEO);
  const audio = aliceInfo.tracks.find((t) => t.type === TrackType.AUDIO);
  assert.ok(video && audio, `alice's tracks: ${JSON.stringify(aliceInfo.tracks)}`);

  // Unsubscribe bob from alice's camera on his behalf, then subscribe him again.
  await svc.updateSubscriptions(room, 'bob', [video.sid], false);
  await bob.until('bob loses alice\'s camera', (sid) => {
    const pub = window.demo.room.remoteParticipants.get('alice')?.trackPublications.get(sid);
    return pub && !pub.track;
  }, video.sid);
  await svc.updateSubscriptions(room, 'bob', [video.sid], true);
  await bob.until('bob has alice\'s camera again', (sid) => !!window.demo.room.remoteParticipants.get('alice')?.trackPublications.get(sid)?.track, video.sid);
  // An unknown track is an error, not a silent no-op.
  await assert.rejects(svc.updateSubscriptions(room, 'bob', ['TR_nosuchtrack'], true), /TR_nosuchtrack/);

  // Data from the server: addressed to bob only, then to everyone (ordered after it).
  const enc = new TextEncoder();
  await svc.sendData(room, enc.encode('for bob'), DataPacket_Kind.RELIABLE, { destinationIdentities: ['bob'], topic: 'chat' });
  await svc.sendData(room, enc.encode('for all'), DataPacket_Kind.RELIABLE, { topic: 'chat' });
  await bob.until('bob gets both', () => window.demo.chat.map((m) => m.text).join('|') === 'for bob|for all');
  await alice.until('alice gets the second', () => window.demo.chat.some((m) => m.text === 'for all'));
  assert.deepEqual(await alice.page.evaluate(() => window.demo.chat.map((m) => m.text)), ['for all']);

  // Attributes and a server-side mute reach the others.
  const updated = await svc.updateParticipant(room, 'alice', { attributes: { role: 'host' } });
  assert.equal(updated.attributes.role, 'host');
  await bob.until('bob sees alice\'s attribute', () => window.demo.room.remoteParticipants.get('alice')?.attributes.role === 'host');
  await svc.mutePublishedTrack(room, 'alice', audio.sid, true);
  await bob.until('bob sees alice muted', (sid) => window.demo.room.remoteParticipants.get('alice')?.trackPublications.get(sid)?.isMuted, audio.sid);

  await svc.removeParticipant(room, 'bob');
  await bob.until('bob is disconnected', () => window.demo.state !== 'joined');
  await alice.until('alice sees bob leave', () => !window.demo.room.remoteParticipants.has('bob'));
}));

test('livekit-api (Python): RoomService on a Python SDK participant, and AgentDispatchService', { timeout: 120_000 }, () => withServer('server-sdks', async (server, procs) => {
  const room = roomId('py');
  const py = jsonlProcess('livekit-api', INTEROP_PY, [join(INTEROP, 'livekit_server_api.py'), server.url, room],
    { env: { LIVEKIT_API_KEY: 'devkey', LIVEKIT_API_SECRET: 'secret' } });
  procs.push(py);
  const result = await py.waitFor('result', 90_000);
  assert.equal((await py.exited).code, 0, py.event('error')?.message);
  assert.deepEqual(result.listed, ['carol']);
  assert.equal(result.attributes.role, 'speaker', 'the participant sees the attribute the API set');
  assert.deepEqual(result.data, { topic: 'news', payload: 'from the server' });
  assert.equal(result.removed, true, 'the participant was disconnected by RemoveParticipant');
  assert.deepEqual(result.dispatch.listed, [result.dispatch.created], 'the created dispatch is listed');
  assert.equal(result.dispatch.after_delete, 0, 'deleted dispatches are gone');
}));
