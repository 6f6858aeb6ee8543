// @livekit/rtc-node (npm: LiveKit's Rust core for Node.js) and Chromium on livekit-client
// exchange media through Switchboard, both unmodified (the peer: support/rtc-node-peer.mjs).
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

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function token(room, identity) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ room, roomJoin: true });
  return at.toJwt();
}

test('@livekit/rtc-node and Chromium on livekit-client see and hear each other', { timeout: 120_000 }, async () => {
  const server = await startServer();
  const room = `rtc-node-${randomBytes(4).toString('hex')}`;
  const ws = server.url.replace(/^http/, 'ws');
  const page = await browser.openDemo('browser');
  const peer = jsonlProcess('rtc-node', process.execPath, [PEER, ws, await token(room, 'node')]);
  try {
    await page.open(server.url, { url: ws, token: await token(room, 'browser'), autojoin: '1' });
    await page.joined(15_000);
    await peer.waitFor('joined', 30_000);
    const stats = await page.mediaFrom(['node'], 30_000);
    assert.equal(stats.node.frameWidth, 320, 'the browser decodes the Node camera at its size');
    const video = await peer.waitFor('video', 30_000);
    assert.equal(video.from, 'browser');
    assert.ok(video.frames >= 30 && video.width > 0, JSON.stringify(video));
    const audio = await peer.waitFor('audio', 30_000);
    assert.equal(audio.from, 'browser');
    assert.ok(audio.peak > 0, `the browser's audio was silent: ${JSON.stringify(audio)}`);
    await peer.stop();
    assert.equal(peer.exit.code, 0, peer.describe());
    await page.until('the Node participant leaves', () => !window.demo.room.remoteParticipants.has('node'), null, 15_000);
  } catch (err) {
    console.error(server.logTail(80));
    console.error(peer.describe());
    console.error(await page.describe('sdk-rtc-node'));
    throw err;
  } finally {
    if (!peer.exit) await peer.stop(5_000);
    await page.close();
    await server.stop();
  }
});
