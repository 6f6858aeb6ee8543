// WHIP/WHEP against independent WebRTC stacks, no mocks: aiortc (Python) and GStreamer's
// webrtcbin publish and play over real HTTP and real ICE/DTLS/SRTP on 127.0.0.1; headless
// Chromium running the unmodified livekit-client (the demo page) watches what they publish.
// The clients live in tests/interop/; scripts/interop-deps.sh installs what they need (a venv
// with aiortc, Debian's GStreamer) and is run here first: a missing dependency fails the run.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { INTEROP, INTEROP_PY as AIORTC_PY, ensureInteropDeps } from './support/interop.mjs';
import { jsonlProcess } from './support/jsonl-process.mjs';
import { withServer } from './support/with-server.mjs';

/** GStreamer's Python bindings are Debian's: run with Debian's Python, not the venv's. */
const SYSTEM_PY = '/usr/bin/python3';
const JOIN_MS = 20_000;

let browser;
before(ensureInteropDeps, { timeout: 15 * 60_000 });
after(async () => { await browser?.close(); });

async function chromium() {
  browser ??= await launchBrowser();
  return browser;
}

const roomId = (what) => `io-${what}-${randomBytes(4).toString('hex')}`;

async function token(room, identity, { publish = false, subscribe = false } = {}) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ room, roomJoin: true, canPublish: publish, canSubscribe: subscribe });
  return at.toJwt();
}

/** Runs one of the Python clients (support/jsonl-process.mjs). */
const client = (label, python, script, args) => jsonlProcess(label, python, [join(INTEROP, script), ...args]);

const aiortc = (label, mode, server, tok, extra = []) => client(label, AIORTC_PY, 'aiortc_client.py',
  [mode, '--url', server.url, '--token', tok, ...extra]);
const gstreamer = (label, server, tok, extra = []) => client(label, SYSTEM_PY, 'gst_whip.py',
  ['--url', server.url, '--token', tok, ...extra]);

/** The demo page joined as a subscriber-only participant with a token of our own. */
async function watcher(server, room, pages) {
  const identity = `watcher-${randomBytes(3).toString('hex')}`;
  const page = await (await chromium()).openDemo(identity);
  pages.push(page);
  const url = server.url.replace(/^http/, 'ws');
  await page.open(server.url, { url, token: await token(room, identity, { subscribe: true }), autojoin: '1' });
  await page.joined(JOIN_MS);
  return page;
}

async function deletedCleanly(proc) {
  const exit = await proc.stop();
  assert.equal(exit.code, 0, `${proc.label} failed: ${proc.event('error')?.message}`);
  assert.equal(proc.event('deleted')?.status, 200, `${proc.label}: DELETE of its session`);
}

test('aiortc publishes VP8 and Opus via WHIP; a second aiortc plays them via WHEP', { timeout: 90_000 }, () => withServer('interop', async (server, procs) => {
  const room = roomId('aio');
  const pub = aiortc('aiortc-whip', 'whip', server, await token(room, 'aiortc-pub', { publish: true }), ['--seconds', '60']);
  procs.push(pub);
  const created = await pub.waitFor('created');
  assert.match(created.location, /^\/whip\/\S+$/);
  assert.ok(created.etag, 'ETag on 201');
  assert.ok(created.codecs.includes('VP8') && created.codecs.includes('opus'), `answer codecs ${created.codecs}`);
  await pub.waitFor('connected');

  const player = aiortc('aiortc-whep', 'whep', server, await token(room, 'aiortc-viewer', { subscribe: true }),
    ['--frames', '30', '--seconds', '30']);
  procs.push(player);
  assert.match((await player.waitFor('created')).location, /^\/whep\/\S+$/);
  const played = await player.waitFor('played', 40_000);
  assert.ok(played.video >= 30, `decoded ${played.video} video frames`);
  assert.ok(played.audio > 0, `decoded ${played.audio} audio frames`);
  assert.deepEqual(played.sizes, [[320, 240]], 'frames have the published size');
  assert.equal((await player.exited).code, 0, player.event('error')?.message);
  assert.equal(player.event('deleted')?.status, 200, 'the player DELETEs its session');

  await deletedCleanly(pub);
  assert.ok(pub.event('sent').packets.video > 30, `sent ${JSON.stringify(pub.event('sent').packets)}`);
}));

test('aiortc publishes via WHIP; Chromium on livekit-client sees the participant and decodes it', { timeout: 120_000 }, () => withServer('interop', async (server, procs, pages) => {
  const room = roomId('aio-lk');
  const identity = 'aiortc-cam';
  const pub = aiortc('aiortc-whip', 'whip', server, await token(room, identity, { publish: true }), ['--seconds', '90']);
  procs.push(pub);
  await pub.waitFor('connected');
  const page = await watcher(server, room, pages);
  const stats = await page.mediaFrom([identity], 30_000);
  assert.ok(stats[identity].framesDecoded > 0);
  assert.equal(stats[identity].videoCodec, 'video/VP8');
  assert.equal(stats[identity].frameWidth, 320);
  await deletedCleanly(pub);
  // The page sees the WHIP participant leave once its session is deleted.
  await page.until('the WHIP participant leaves', (id) => !window.demo.room.remoteParticipants.has(id), identity, 15_000);
}));

test('GStreamer webrtcbin (its own RSA DTLS certificate) publishes H.264 and Opus via WHIP; Chromium on livekit-client decodes it', { timeout: 120_000 }, () => withServer('interop', async (server, procs, pages) => {
  const room = roomId('gst');
  const identity = 'gst-h264';
  // GStreamer's default: a self-signed RSA certificate, which WHIP peers' OpenSSL DTLS takes.
  const pub = gstreamer('gst-whip', server, await token(room, identity, { publish: true }),
    ['--codec', 'h264', '--cert', 'rsa', '--seconds', '90']);
  procs.push(pub);
  const created = await pub.waitFor('created');
  assert.ok(created.codecs.includes('H264'), `answer codecs ${created.codecs}`);
  await pub.waitFor('connected');
  const page = await watcher(server, room, pages);
  const stats = await page.mediaFrom([identity], 30_000);
  assert.equal(stats[identity].videoCodec, 'video/H264');
  assert.equal(stats[identity].frameWidth, 320);
  await deletedCleanly(pub);
}));

test('GStreamer webrtcbin publishes VP8 via WHIP with an ECDSA certificate; aiortc plays it via WHEP', { timeout: 60_000 }, () => withServer('interop', async (server, procs) => {
  const room = roomId('gst-ecdsa');
  const pub = gstreamer('gst-whip-ecdsa', server, await token(room, 'gst-ecdsa', { publish: true }),
    ['--codec', 'vp8', '--cert', 'ecdsa', '--no-audio', '--seconds', '60']);
  procs.push(pub);
  await pub.waitFor('connected', 15_000);
  const player = aiortc('aiortc-whep', 'whep', server, await token(room, 'viewer', { subscribe: true }),
    ['--frames', '30', '--seconds', '20', '--video-only']);
  procs.push(player);
  await player.waitFor('played', 30_000);
  await deletedCleanly(pub);
}));

test('aiortc over real HTTP: a trickled candidate (204), an ICE restart (200, new ufrag, new ETag), media after it', { timeout: 90_000 }, () => withServer('interop', async (server, procs) => {
  const room = roomId('aio-patch');
  const pub = aiortc('aiortc-whip', 'whip-patch', server, await token(room, 'aiortc-pub', { publish: true }), ['--seconds', '60']);
  procs.push(pub);
  const created = await pub.waitFor('created');
  const trickled = await pub.waitFor('trickled');
  assert.equal(trickled.status, 204, trickled.body);
  assert.equal(trickled.etag, created.etag, 'a trickled candidate does not change the ETag');
  const restarted = await pub.waitFor('restarted');
  assert.equal(restarted.status, 200, restarted.body);
  assert.match(restarted.content_type, /^application\/trickle-ice-sdpfrag/);
  assert.match(restarted.body, /^a=ice-ufrag:\S+\r\na=ice-pwd:\S+\r\n/);
  assert.notEqual(restarted.etag, created.etag, 'an ICE restart changes the ETag');
  // The server answers connectivity checks with the new credentials only.
  const recheck = await pub.waitFor('recheck', 20_000);
  assert.equal(recheck.ok, true, 'a check with the restarted credentials is answered');
  assert.notEqual(restarted.body.match(/a=ice-ufrag:(\S+)/)[1], recheck.old_server_ufrag, 'the server ufrag changed');
  assert.equal(pub.event('recheck-old')?.ok, false, 'a check with the old credentials is not answered');
  const stale = await pub.waitFor('stale');
  assert.equal(stale.status, 412, 'a PATCH with the old ETag in If-Match');
  assert.match(stale.content_type, /^application\/problem\+json/);

  // Media still flows after the restart: a WHEP player decodes the publisher's video.
  const player = aiortc('aiortc-whep', 'whep', server, await token(room, 'viewer', { subscribe: true }),
    ['--frames', '30', '--seconds', '30']);
  procs.push(player);
  const played = await player.waitFor('played', 40_000);
  assert.ok(played.video >= 30 && played.audio > 0, JSON.stringify(played));
  assert.equal((await player.exited).code, 0);
  await deletedCleanly(pub);
}));
