// LiveKit's signaling v1 (/rtc/v1: one PeerConnection per participant, the client offering):
// livekit-client with its defaults joins over it with no failed request, receives more tracks
// than its first offer has lines for (the server asks for more with MediaSectionsRequirement),
// and falls back to /rtc when a server has v1 switched off.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { jsonlProcess } from './support/jsonl-process.mjs';
import { withServer } from './support/with-server.mjs';

const PEER = join(fileURLToPath(new URL('.', import.meta.url)), 'support/rtc-node-peer.mjs');
const JOIN_MS = 15_000;
const MEDIA_MS = 45_000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const roomId = (what) => `v1-${what}-${randomBytes(4).toString('hex')}`;

async function token(room, identity) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ room, roomJoin: true });
  return at.toJwt();
}

/** Opens a demo page on `server` that joins with `params`. */
async function openPage(server, pages, label, params) {
  const page = await browser.openDemo(label);
  pages.push(page);
  await page.open(server.url, params);
  return page;
}

/** Ann and Ben join one room through the demo page; resolves once each decodes the other. */
async function joinTwo(server, pages, what) {
  const room = roomId(what);
  const people = [];
  for (const name of ['Ann', 'Ben']) {
    const page = await openPage(server, pages, name, { room, name, autojoin: '1' });
    await page.joined(JOIN_MS);
    people.push(page);
  }
  const [ann, ben] = people;
  await ann.mediaFrom([ben.identity], MEDIA_MS);
  await ben.mediaFrom([ann.identity], MEDIA_MS);
  return people;
}

test('livekit-client with its defaults joins over /rtc/v1 with no failed request, and two browsers see and hear each other', { timeout: 120_000 }, async () => {
  await withServer('v1-defaults', async (server, _procs, pages) => {
    for (const page of await joinTwo(server, pages, 'defaults')) {
      assert.deepEqual(page.sockets, ['/rtc/v1'], `${page.label} opened only /rtc/v1`);
      assert.deepEqual(page.failures, [], `${page.label} had no failed request`);
      const pcs = await page.page.evaluate(() => {
        const pcm = window.demo.room.engine.pcManager;
        return { mode: pcm.mode, subscriber: Boolean(pcm.subscriber) };
      });
      assert.deepEqual(pcs, { mode: 'publisher-only', subscriber: false }, `${page.label} runs one PeerConnection`);
    }
  });
});

test('a v1 browser receives five publishers (more than its first offer has lines for), and a sixth after one leaves', { timeout: 180_000 }, async () => {
  await withServer('v1-many', async (server, peers, pages) => {
    const room = roomId('many');
    const ws = server.url.replace(/^http/, 'ws');
    const viewer = await openPage(server, pages, 'viewer', { url: ws, token: await token(room, 'viewer'), autojoin: '1' });
    await viewer.joined(JOIN_MS);
    const names = ['n1', 'n2', 'n3', 'n4', 'n5'];
    // One at a time, and publishing only (the viewer is what is tested): five Rust cores
    // starting at once on two CPUs beside a debug server once made a publish time out, and
    // so did six peers each decoding all the others.
    for (const name of names) {
      const peer = jsonlProcess(name, process.execPath, [PEER, ws, await token(room, name), '--publish-only']);
      peers.push(peer);
      await peer.waitFor('joined', 30_000);
    }
    const stats = await viewer.mediaFrom(names, MEDIA_MS);
    for (const name of names) assert.equal(stats[name].frameWidth, 320, `${name}'s camera decodes at its size`);
    // The lines n1 held are reused for n6.
    await peers[0].stop();
    await viewer.until('n1 leaves', () => !window.demo.room.remoteParticipants.has('n1'), null, 15_000);
    peers.push(jsonlProcess('n6', process.execPath, [PEER, ws, await token(room, 'n6'), '--publish-only']));
    await peers[5].waitFor('joined', 30_000);
    await viewer.mediaFrom(['n6'], MEDIA_MS);
    const lines = await viewer.page.evaluate(() => window.demo.room.engine.pcManager.publisher.getTransceivers()
      .filter((t) => t.direction === 'recvonly').length);
    assert.ok(lines >= 10 && lines <= 12, `five audio and five video receive lines at most two spare: ${lines}`);
    assert.deepEqual(viewer.failures, []);
  });
});

test('with /rtc/v1 switched off, livekit-client falls back to /rtc and media flows', { timeout: 120_000 }, async () => {
  await withServer('v1-off', async (server, _procs, pages) => {
    for (const page of await joinTwo(server, pages, 'off')) {
      assert.deepEqual(page.sockets, ['/rtc/v1', '/rtc'], `${page.label} tried v1, then v0`);
      assert.ok(page.failures.some((f) => f.startsWith('404 ') && f.includes('/rtc/v1/validate')), page.failures.join('\n'));
      const mode = await page.page.evaluate(() => window.demo.room.engine.pcManager.mode);
      assert.notEqual(mode, 'publisher-only', `${page.label} runs two PeerConnections`);
    }
  }, { extraArgs: ['--rtc-single-pc', 'off'] });
});
