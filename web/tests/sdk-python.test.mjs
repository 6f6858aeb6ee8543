// LiveKit's Python SDK (`livekit`: its Rust core through FFI, the core of LiveKit's Node,
// Unity and native SDKs and of LiveKit Agents) against Switchboard, unmodified: it sends its
// token as `Authorization: Bearer`, names its published m-lines with its own WebRTC track
// ids, and closes its PeerConnections before its signal socket. The participants live in
// tests/interop/livekit_peers.py; their tokens are minted with LiveKit's `livekit-api`.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { INTEROP, INTEROP_PY, ensureInteropDeps } from './support/interop.mjs';
import { jsonlProcess } from './support/jsonl-process.mjs';
import { withServer } from './support/with-server.mjs';

const KEYS = { LIVEKIT_API_KEY: 'devkey', LIVEKIT_API_SECRET: 'secret' };
/** The colour and pitch livekit_peers.py publishes. */
const COLOUR = [200, 40, 120];
const TONE_HZ = 440;

let browser;
before(ensureInteropDeps, { timeout: 15 * 60_000 });
after(async () => { await browser?.close(); });

const roomId = (what) => `py-${what}-${randomBytes(4).toString('hex')}`;
const wsUrl = (server) => server.url.replace(/^http/, 'ws');
const python = (label, args) => jsonlProcess(label, INTEROP_PY, [join(INTEROP, 'livekit_peers.py'), ...args], { env: KEYS });

function assertColour(centre, what) {
  for (const [i, want] of COLOUR.entries()) {
    assert.ok(Math.abs(centre[i] - want) <= 12, `${what}: decoded centre pixel ${centre}, published ${COLOUR}`);
  }
}

/**
 * Polls the room's recorded event log until `count` participants have left; returns the
 * leave reasons by identity. (The record is written asynchronously, after the leave.)
 */
async function leaveReasons(server, room, count, timeoutMs = 15_000) {
  const admin = new AccessToken('devkey', 'secret', { identity: 'ops' });
  admin.addGrant({ room, roomAdmin: true, roomList: true });
  const headers = { authorization: `Bearer ${await admin.toJwt()}` };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const resp = await fetch(`${server.url}/v1/rooms/${room}/events?limit=1000`, { headers });
    const events = resp.status === 200 ? (await resp.json()).events : [];
    const left = events.filter((e) => e.kind === 'participant_left');
    if (left.length >= count) {
      return Object.fromEntries(left.map((e) => [e.payload.participant.identity, e.payload.participant.leave_reason]));
    }
    if (Date.now() > deadline) throw new Error(`${left.length} of ${count} leaves recorded in ${room} (HTTP ${resp.status})`);
    await new Promise((res) => { setTimeout(res, 200); });
  }
}

// v0 (two PeerConnections, the default of the SDK's peers here) and v1 (one PeerConnection,
// `single_peer_connection=True`).
for (const [protocol, flags] of [['v0', []], ['v1', ['--single-pc']]]) test(`two Python SDK participants exchange decoded video and audio, data packets, RPC, a text and a byte stream (signaling ${protocol})`, { timeout: 120_000 }, () => withServer('sdk-python', async (server, procs) => {
  const room = roomId('pair');
  const pair = python('python-pair', ['pair', wsUrl(server), room, ...flags]);
  procs.push(pair);
  const result = await pair.waitFor('result', 90_000);
  assert.equal((await pair.exited).code, 0, 'the pair script exits cleanly');
  const { bob, alice } = result;

  // Media: bob decodes alice's camera (the colour survives) and hears her tone.
  assert.equal(bob.video.from, 'alice');
  assert.ok(bob.video.frames >= 30, `decoded ${bob.video.frames} frames`);
  assert.deepEqual([bob.video.width, bob.video.height], [320, 240]);
  assertColour(bob.video.centre, 'alice → bob');
  assert.ok(bob.audio.peak > 6000, `audio peak ${bob.audio.peak} (published at 12000)`);
  assert.ok(Math.abs(bob.audio.pitch_hz - TONE_HZ) <= 15, `heard ${bob.audio.pitch_hz} Hz, published ${TONE_HZ} Hz`);

  // Data: the server stamps the sender; an addressed packet reaches only those it names.
  assert.deepEqual(bob.data, [
    { from: 'alice', topic: 'chat', reliable: true, payload: 'reliable hello' },
    { from: 'alice', topic: 'direct', reliable: true, payload: 'only for bob' },
  ]);
  assert.deepEqual(alice.data, [{ from: 'bob', topic: 'telemetry', reliable: false, payload: 'lossy back' }]);
  assert.deepEqual(bob.text, { from: 'alice', topic: 'notes', text: 'a text stream' });
  // A byte stream of 100 kB in several chunks arrives whole, from alice.
  const { sent_sha256: sent, ...bytes } = bob.bytes;
  assert.deepEqual(bytes, { from: 'alice', topic: 'files', name: 'blob.bin', size: 100_000, sha256: sent });
  // RPC both ways: an answer, and an application error with its code.
  assert.equal(alice.rpc, 'hello alice, you said hi');
  assert.deepEqual(bob.rpc_error, { code: 1500, message: 'refused on purpose' });

  // Both left cleanly: recorded as the client's own leave, not as a media failure (the SDK
  // closes its PeerConnections before its signal socket).
  assert.deepEqual(await leaveReasons(server, room, 2), { alice: 'CLIENT_INITIATED', bob: 'CLIENT_INITIATED' });
  // …over the protocol asked for (the server logs which one each join spoke).
  const log = server.logTail(2000).replace(/\x1b\[[0-9;]*m/g, '');
  for (const who of ['alice', 'bob']) {
    assert.match(log, new RegExp(`participant joined .*identity=${who} signaling="${protocol}"`));
  }
}));

test('Chromium on livekit-client and a Python SDK participant see and hear each other, chat, send a file and call each other', { timeout: 150_000 }, () => withServer('sdk-python', async (server, procs, pages) => {
  const room = roomId('browser');
  browser ??= await launchBrowser();
  const page = await browser.openDemo('browser');
  pages.push(page);
  const at = new AccessToken('devkey', 'secret', { identity: 'browser' });
  at.addGrant({ room, roomJoin: true });
  await page.open(server.url, { url: wsUrl(server), token: await at.toJwt(), autojoin: '1' });
  await page.joined(20_000);
  // LiveKit's chat: text streams on topic lk.chat.
  await page.page.evaluate(() => {
    window.lkChat = [];
    window.demo.room.registerTextStreamHandler('lk.chat', async (reader, from) => {
      window.lkChat.push({ from: from.identity, text: await reader.readAll() });
    });
  });

  const py = python('python-peer', ['peer', wsUrl(server), room, 'py']);
  procs.push(py);
  await py.waitFor('joined', 30_000);

  // The browser decodes the Python camera at its size, and receives its audio.
  const stats = await page.mediaFrom(['py'], 30_000);
  assert.equal(stats.py.frameWidth, 320, `frame width ${stats.py.frameWidth}`);
  // The Python participant decodes the browser's camera and hears its fake microphone.
  const video = await py.waitFor('video', 30_000);
  assert.equal(video.from, 'browser');
  assert.ok(video.frames >= 30 && video.width > 0, JSON.stringify(video));
  const audio = await py.waitFor('audio', 30_000);
  assert.equal(audio.from, 'browser');
  assert.ok(audio.peak > 0, `the browser's audio was silent: ${JSON.stringify(audio)}`);

  // Chat both ways on the demo page's topic.
  await py.waitFor('chat_sent');
  await page.until('the Python chat message arrives', () => window.demo.chat.some((m) => m.from === 'py'));
  assert.deepEqual(await page.page.evaluate(() => window.demo.chat.find((m) => m.from === 'py').text), 'hello from py');
  await page.page.evaluate(() => window.demo.room.localParticipant.publishData(
    new TextEncoder().encode('hello from the browser'), { reliable: true, topic: 'chat' }));
  const chat = await py.waitFor('chat');
  assert.deepEqual([chat.from, chat.payload], ['browser', 'hello from the browser']);
  await page.until('the Python lk.chat message arrives', () => window.lkChat.some((m) => m.from === 'py' && m.text === 'py on lk.chat'));
  await page.page.evaluate(() => window.demo.room.localParticipant.sendText('the browser on lk.chat', { topic: 'lk.chat' }));
  const chatText = await py.waitFor('chat_text');
  assert.deepEqual([chatText.from, chatText.text], ['browser', 'the browser on lk.chat']);

  // livekit-client's byte stream (sendFile: 100 kB in several chunks) reaches Python whole.
  const sent = await page.page.evaluate(async () => {
    const blob = new Uint8Array(100_000).map((_, i) => i % 251);
    await window.demo.room.localParticipant.sendFile(new File([blob], 'blob.bin'), { topic: 'files' });
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', blob));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  });
  const file = await py.waitFor('bytes');
  assert.deepEqual(file, { event: 'bytes', from: 'browser', topic: 'files', name: 'blob.bin', size: 100_000, sha256: sent });

  // livekit-client's RPC to a method the Python SDK registered: the server set the caller.
  const answer = await page.page.evaluate(() => window.demo.room.localParticipant.performRpc(
    { destinationIdentity: 'py', method: 'whoami', payload: 'ping' }));
  assert.deepEqual(JSON.parse(answer), { caller: 'browser', callee: 'py', payload: 'ping' });

  await py.stop();
  assert.equal(py.exit.code, 0, py.event('error')?.message);
  await page.until('the Python participant leaves', () => !window.demo.room.remoteParticipants.has('py'), null, 15_000);
}));
