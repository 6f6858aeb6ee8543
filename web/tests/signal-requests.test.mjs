// Signal requests livekit-client sends beyond publishing and subscribing, in headless
// Chromium against the real server: subscription permissions, own attributes (allowed and
// refused), and the SDK's simulated node failure (it resumes).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 15_000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const roomId = (what) => `req-${what}-${randomBytes(4).toString('hex')}`;

/** A test against a fresh server; `join(identity, grant)` opens a demo page joined with its own token. */
function scenario(name, timeout, body) {
  test(name, { timeout }, async () => {
    const pages = [];
    const server = await startServer();
    const wsUrl = server.url.replace(/^http/, 'ws');
    try {
      const join = async (room, identity, grant = {}) => {
        const at = new AccessToken('devkey', 'secret', { identity });
        at.addGrant({ room, roomJoin: true, ...grant });
        const page = await browser.openDemo(identity);
        pages.push(page);
        await page.open(server.url, { url: wsUrl, token: await at.toJwt(), autojoin: '1' });
        await page.joined(JOIN_MS);
        return page;
      };
      await body({ server, join });
    } catch (err) {
      console.error(server.logTail(80));
      for (const page of pages) console.error(await page.describe(`requests-${page.label}`));
      throw err;
    } finally {
      for (const page of pages) await page.close();
      await server.stop();
    }
  });
}

/** Video frames `page` decoded from `identity` so far (0 when not subscribed). */
async function framesFrom(page, identity) {
  return (await page.inbound())[identity]?.framesDecoded ?? 0;
}

/** Waits until `page` decodes 10 more frames from `identity`; fails after 10 s. */
async function keepsDecoding(page, identity, what) {
  const start = await framesFrom(page, identity);
  const deadline = Date.now() + 10_000;
  while (await framesFrom(page, identity) <= start + 10) {
    assert.ok(Date.now() < deadline, what);
    await new Promise((res) => { setTimeout(res, 200); });
  }
}

scenario('a publisher restricts who may subscribe: the others are told and lose its tracks, and get them back when allowed', 120_000, async ({ join }) => {
  const room = roomId('perm');
  const alice = await join(room, 'alice');
  const bob = await join(room, 'bob');
  const carol = await join(room, 'carol');
  await bob.mediaFrom(['alice']);
  await carol.mediaFrom(['alice']);
  await carol.page.evaluate(() => {
    window.permissionChanges = [];
    window.demo.room.on('trackSubscriptionPermissionChanged', (pub, status, p) => {
      window.permissionChanges.push({ track: pub.trackSid, status, from: p.identity });
    });
  });

  // Only bob may subscribe now.
  await alice.page.evaluate(() => window.demo.room.localParticipant.setTrackSubscriptionPermissions(
    false, [{ participantIdentity: 'bob', allowAll: true }]));
  await carol.until('carol is told both of alice\'s tracks are not allowed', () => window.permissionChanges
    .filter((c) => c.from === 'alice' && c.status === 'not_allowed').length === 2);
  await carol.until('carol no longer has alice\'s tracks', () => {
    const p = window.demo.room.remoteParticipants.get('alice');
    return [...p.trackPublications.values()].every((pub) => !pub.track);
  });
  // Bob still decodes alice.
  await keepsDecoding(bob, 'alice', 'bob stopped decoding alice after a permission that allows him');

  // Everyone again: carol is told and gets the tracks back.
  await alice.page.evaluate(() => window.demo.room.localParticipant.setTrackSubscriptionPermissions(true));
  await carol.until('carol is told alice\'s tracks are allowed again', () => window.permissionChanges
    .filter((c) => c.from === 'alice' && c.status === 'allowed').length === 2);
  await carol.mediaFrom(['alice']);
});

scenario('own attributes: set with canUpdateOwnMetadata and seen by others; refused at once without it', 90_000, async ({ join }) => {
  const room = roomId('attrs');
  const alice = await join(room, 'alice', { canUpdateOwnMetadata: true });
  const bob = await join(room, 'bob');
  await alice.page.evaluate(() => window.demo.room.localParticipant.setAttributes({ mood: 'happy' }));
  await bob.until('bob sees alice\'s attribute', () => window.demo.room.remoteParticipants.get('alice')?.attributes.mood === 'happy');

  const refused = await bob.page.evaluate(async () => {
    const started = performance.now();
    try {
      await window.demo.room.localParticipant.setAttributes({ mood: 'sneaky' });
      return { ok: true };
    } catch (e) {
      return { ok: false, message: String(e.message ?? e), ms: performance.now() - started };
    }
  });
  assert.equal(refused.ok, false, 'bob may not set his own attributes');
  // livekit-client's own timeout is 5 s: a refusal arrives well before it.
  assert.ok(refused.ms < 4_000, `refused after ${refused.ms} ms: ${refused.message}`);
  assert.ok(await alice.page.evaluate(() => !window.demo.room.remoteParticipants.get('bob').attributes.mood));
});

scenario('a simulated node failure: livekit-client resumes the same session and media keeps flowing', 90_000, async ({ join }) => {
  const room = roomId('simulate');
  const alice = await join(room, 'alice');
  const bob = await join(room, 'bob');
  await bob.mediaFrom(['alice']);
  const sid = await alice.page.evaluate(() => window.demo.room.localParticipant.sid);
  await alice.page.evaluate(() => {
    window.roomEvents = [];
    for (const ev of ['reconnecting', 'reconnected', 'signalReconnecting', 'disconnected']) {
      window.demo.room.on(ev, () => window.roomEvents.push(ev));
    }
  });
  await alice.page.evaluate(() => window.demo.room.simulateScenario('node-failure'));
  await alice.until('alice reconnects', () => window.roomEvents.includes('reconnected'));
  assert.equal(await alice.page.evaluate(() => window.demo.room.localParticipant.sid), sid, 'the same session (a resume)');
  assert.ok(!(await alice.page.evaluate(() => window.roomEvents.includes('disconnected'))));
  await keepsDecoding(bob, 'alice', 'bob stopped decoding alice after her resume');
});
