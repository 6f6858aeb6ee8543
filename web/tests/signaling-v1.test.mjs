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
import { startServer } from './support/server.mjs';

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

/** Runs `body` against a fresh server started with `extraArgs`; reports the pages on failure. */
async function withServer(name, extraArgs, body) {
  const server = await startServer({ extraArgs });
  const pages = [];
  const peers = [];
  const open = async (label, params) => {
    const page = await browser.openDemo(label);
    pages.push(page);
    await page.open(server.url, params);
    return page;
  };
  try {
    await body({ server, open, peers });
  } catch (err) {
    console.error(server.logTail(80));
    for (const peer of peers) console.error(peer.describe());
    for (const page of pages) console.error(await page.describe(`${name}-${page.label}`));
    throw err;
  } finally {
    await Promise.all(peers.map((p) => (p.exit ? null : p.stop(5_000))));
    for (const page of pages) await page.close();
    await server.stop();
  }
}

test('livekit-client with its defaults joins over /rtc/v1 with no failed request, and two browsers see and hear each other', { timeout: 120_000 }, async () => {
  await withServer('v1-defaults', [], async ({ open }) => {
    const room = roomId('defaults');
    const ann = await open('Ann', { room, name: 'Ann', autojoin: '1' });
    await ann.joined(JOIN_MS);
    const ben = await open('Ben', { room, name: 'Ben', autojoin: '1' });
    await ben.joined(JOIN_MS);
    await ann.mediaFrom([ben.identity], MEDIA_MS);
    await ben.mediaFrom([ann.identity], MEDIA_MS);
    for (const page of [ann, ben]) {
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
  await withServer('v1-many', [], async ({ server, open, peers }) => {
    const room = roomId('many');
    const ws = server.url.replace(/^http/, 'ws');
    const viewer = await open('viewer', { url: ws, token: await token(room, 'viewer'), autojoin: '1' });
    await viewer.joined(JOIN_MS);
    const names = ['n1', 'n2', 'n3', 'n4', 'n5'];
    for (const name of names) {
      peers.push(jsonlProcess(name, process.execPath, [PEER, ws, await token(room, name)]));
    }
    for (const peer of peers) await peer.waitFor('joined', 30_000);
    const stats = await viewer.mediaFrom(names, MEDIA_MS);
    for (const name of names) assert.equal(stats[name].frameWidth, 320, `${name}'s camera decodes at its size`);
    // The lines n1 held are reused for n6.
    await peers[0].stop();
    await viewer.until('n1 leaves', () => !window.demo.room.remoteParticipants.has('n1'), null, 15_000);
    peers.push(jsonlProcess('n6', process.execPath, [PEER, ws, await token(room, 'n6')]));
    await peers[5].waitFor('joined', 30_000);
    await viewer.mediaFrom(['n6'], MEDIA_MS);
    const lines = await viewer.page.evaluate(() => window.demo.room.engine.pcManager.publisher.getTransceivers()
      .filter((t) => t.direction === 'recvonly').length);
    assert.ok(lines >= 10 && lines <= 12, `five audio and five video receive lines at most two spare: ${lines}`);
    assert.deepEqual(viewer.failures, []);
  });
});

test('with /rtc/v1 switched off, livekit-client falls back to /rtc and media flows', { timeout: 120_000 }, async () => {
  await withServer('v1-off', ['--rtc-single-pc', 'off'], async ({ open }) => {
    const room = roomId('off');
    const ann = await open('Ann', { room, name: 'Ann', autojoin: '1' });
    await ann.joined(JOIN_MS);
    const ben = await open('Ben', { room, name: 'Ben', autojoin: '1' });
    await ben.joined(JOIN_MS);
    await ann.mediaFrom([ben.identity], MEDIA_MS);
    await ben.mediaFrom([ann.identity], MEDIA_MS);
    for (const page of [ann, ben]) {
      assert.deepEqual(page.sockets, ['/rtc/v1', '/rtc'], `${page.label} tried v1, then v0`);
      assert.ok(page.failures.some((f) => f.startsWith('404 ') && f.includes('/rtc/v1/validate')), page.failures.join('\n'));
      const mode = await page.page.evaluate(() => window.demo.room.engine.pcManager.mode);
      assert.notEqual(mode, 'publisher-only', `${page.label} runs two PeerConnections`);
    }
  });
});
