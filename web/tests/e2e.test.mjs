// Browser end-to-end tests: unmodified livekit-client in headless Chromium, through the demo page
// (web/index.html) served by `switchboard serve --dev`. Needs a built binary (`cargo build`).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 15_000;
const MEDIA_MS = 30_000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const roomId = (what) => `e2e-${what}-${randomBytes(4).toString('hex')}`;

/**
 * A test against a fresh server. `body({server, open})` opens demo pages with
 * `open(label, queryParams)`. On failure it prints the server's stderr tail and each page's
 * state, inbound stats and console, and saves screenshots under web/test-results/.
 */
function scenario(name, timeout, body) {
  test(name, { timeout }, async () => {
    const pages = [];
    let server;
    try {
      server = await startServer();
      const open = async (label, params) => {
        const page = await browser.openDemo(label);
        pages.push(page);
        await page.open(server.url, params);
        return page;
      };
      await body({ server, open });
    } catch (err) {
      if (!server) throw err; // could not start: the error already carries the server's output
      const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase().slice(0, 40);
      const report = [`\n===== diagnostics: ${name} =====`];
      report.push(server.logTail(80));
      for (const page of pages) report.push(await page.describe(`${slug}-${page.label}`));
      console.error(report.join('\n'));
      throw err;
    } finally {
      for (const page of pages) await page.close();
      await server?.stop();
    }
  });
}

/** Alice, Bob and Carol join `room` one after another; resolves once each sees the other two. */
async function joinThree(open, room) {
  const people = [];
  for (const name of ['Alice', 'Bob', 'Carol']) {
    const page = await open(name, { room, name, autojoin: '1' });
    await page.joined(JOIN_MS);
    people.push(page);
  }
  const ids = people.map((p) => p.identity);
  assert.equal(new Set(ids).size, 3, `identities must be distinct: ${ids}`);
  await Promise.all(people.map((p) => p.until(
    'sees the other two participants and their tiles',
    (others) => others.every((id) => window.demo.room.remoteParticipants.has(id))
      && document.querySelectorAll('#grid .tile').length === 3,
    ids.filter((id) => id !== p.identity), JOIN_MS,
  )));
  return people;
}

/** Awaits all, and if any failed throws one error naming every failure. */
async function allOk(promises) {
  const results = await Promise.allSettled(promises);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  if (failed.length) throw new Error(failed.join('\n'));
  return results.map((r) => r.value);
}

scenario('three participants decode video and receive audio from both others', 120_000, async ({ open }) => {
  const people = await joinThree(open, roomId('media'));
  const received = await allOk(people.map((p) => p.mediaFrom(people.filter((o) => o !== p).map((o) => o.identity), MEDIA_MS)));
  // The server answers livekit-client's audio with RED first (as LiveKit does), but this
  // Chromium sends plain Opus even then (it does in a loopback call of its own too); the RED
  // paths are tested with str0m peers that send it (signaling/tests/red_audio.rs). Either way
  // the audio must decode.
  for (const [i, stats] of received.entries()) {
    for (const [from, r] of Object.entries(stats)) {
      assert.match(r.audioCodec, /^audio\/(opus|red)$/, `${people[i].label} receives ${from}'s audio: ${JSON.stringify(r)}`);
      assert.ok(r.audioSamplesReceived > 0, `${people[i].label} decodes ${from}'s audio: ${JSON.stringify(r)}`);
    }
  }

  for (const p of people) {
    const grid = await p.page.evaluate(() => ({
      layout: document.getElementById('grid').className,
      names: [...document.querySelectorAll('#grid .tile figcaption')].map((c) => c.textContent),
    }));
    assert.match(grid.layout, /\blayout-2x2\b/, `${p.label}: 3 tiles use the 2×2 layout`);
    for (const name of ['Alice', 'Bob', 'Carol']) {
      assert.ok(grid.names.some((n) => n.includes(name)), `${p.label}: a tile is labelled ${name}: ${grid.names}`);
    }
  }
});

scenario('a reliable chat message from A reaches B and C with sender identity A', 120_000, async ({ open }) => {
  const [a, b, c] = await joinThree(open, roomId('chat'));
  const text = `hello from Alice ${randomBytes(3).toString('hex')}`;
  await a.page.getByLabel('Message').fill(text);
  await a.page.getByRole('button', { name: 'Send' }).click();

  for (const p of [b, c]) {
    const msg = await p.until(`receives "${text}"`, (t) => window.demo.chat.find((m) => m.text === t), text, JOIN_MS);
    assert.equal(msg.from, a.identity, `${p.label}: sender identity`);
    await p.until('shows the message in the chat log', (t) => document.getElementById('chat-log').textContent.includes(t), text, 5_000);
  }
  await a.until('shows its own message', (t) => document.getElementById('chat-log').textContent.includes(t), text, 5_000);
  const echoed = await a.page.evaluate((t) => window.demo.chat.some((m) => m.text === t), text);
  assert.equal(echoed, false, 'the sender does not get its own message back');
});

scenario('when C leaves, A and B see C disappear', 120_000, async ({ open }) => {
  const [a, b, c] = await joinThree(open, roomId('leave'));
  await c.page.getByRole('button', { name: 'Leave' }).click();
  await c.until('is back at the join form', () => window.demo.state === 'left'
    && !document.getElementById('join-form').hidden && document.querySelectorAll('#grid .tile').length === 0, null, JOIN_MS);

  await allOk([a, b].map((p) => p.until(
    'no longer lists C (participant and tile gone)',
    (gone) => !window.demo.room.remoteParticipants.has(gone)
      && ![...document.querySelectorAll('#grid .tile')].some((t) => t.dataset.identity === gone)
      && document.querySelectorAll('#grid .tile').length === 2,
    c.identity, JOIN_MS,
  )));
});

scenario('H.264 publishers: video is forwarded as H.264 at the highest simulcast layer', 120_000, async ({ open }) => {
  const room = roomId('h264');
  const people = [];
  for (const name of ['Hana', 'Hugo']) {
    const page = await open(name, { room, name, autojoin: '1', codec: 'h264' });
    await page.joined(JOIN_MS);
    people.push(page);
  }
  const [a, b] = people;
  await allOk([a.mediaFrom([b.identity], MEDIA_MS), b.mediaFrom([a.identity], MEDIA_MS)]);
  for (const [viewer, publisher] of [[a, b], [b, a]]) {
    // The publisher sends simulcast layers (livekit-client's default); the SFU must forward the
    // widest. Layers ramp up with the bandwidth estimate, so await agreement.
    const widest = await publisher.page.evaluate(() => {
      // The widest simulcast layer is the camera's capture size.
      const cam = [...window.demo.room.localParticipant.trackPublications.values()].find((p) => p.kind === 'video');
      return cam.track.mediaStreamTrack.getSettings().width;
    });
    const received = () => viewer.page.evaluate(async (from) => {
      const pub = [...window.demo.room.remoteParticipants.get(from).trackPublications.values()].find((p) => p.kind === 'video');
      const report = pub && pub.track && await pub.track.getRTCStatsReport();
      let got = null;
      report?.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          got = { width: s.frameWidth, codec: report.get(s.codecId)?.mimeType, decoded: s.framesDecoded };
        }
      });
      return got;
    }, publisher.identity);
    const deadline = Date.now() + MEDIA_MS;
    let seen = await received();
    while (!(seen && seen.codec === 'video/H264' && seen.width === widest && seen.decoded > 0) && Date.now() < deadline) {
      await viewer.page.waitForTimeout(250); // polling interval between stats reads
      seen = await received();
    }
    assert.deepEqual({ codec: seen?.codec, width: seen?.width }, { codec: 'video/H264', width: widest },
      `${viewer.label} receives ${publisher.label}'s video as H.264 at its widest layer`);
  }
});

scenario('mute and unpublish reach the other participants', 120_000, async ({ open }) => {
  const room = roomId('unpub');
  const a = await open('Ann', { room, name: 'Ann', autojoin: '1' });
  await a.joined(JOIN_MS);
  const b = await open('Ben', { room, name: 'Ben', autojoin: '1' });
  await b.joined(JOIN_MS);
  await b.mediaFrom([a.identity], MEDIA_MS);

  await a.page.evaluate(async () => {
    const mic = [...window.demo.room.localParticipant.trackPublications.values()].find((p) => p.kind === 'audio');
    await mic.track.mute();
  });
  await b.until('sees Ann\'s microphone muted', (id) => [...window.demo.room.remoteParticipants.get(id).trackPublications.values()]
    .some((p) => p.kind === 'audio' && p.isMuted), a.identity, JOIN_MS);

  await a.page.evaluate(async () => {
    const cam = [...window.demo.room.localParticipant.trackPublications.values()].find((p) => p.kind === 'video');
    await window.demo.room.localParticipant.unpublishTrack(cam.track);
  });
  await b.until('no longer sees Ann\'s camera', (id) => {
    const pubs = [...window.demo.room.remoteParticipants.get(id).trackPublications.values()];
    return pubs.length === 1 && pubs[0].kind === 'audio';
  }, a.identity, JOIN_MS);
  // Ann herself is still in the room.
  assert.ok(await b.page.evaluate((id) => window.demo.room.remoteParticipants.has(id), a.identity));
});

scenario('a transcript posted to the API reaches livekit-client as TranscriptionReceived', 120_000, async ({ server, open }) => {
  const room = roomId('captions');
  const admin = new AccessToken('devkey', 'secret', { identity: 'backend' });
  admin.addGrant({ roomCreate: true, roomList: true, roomAdmin: true, room });
  const auth = { authorization: `Bearer ${await admin.toJwt()}`, 'content-type': 'application/json' };
  const api = async (path, body) => {
    const resp = await fetch(`${server.url}${path}`, { method: 'POST', headers: auth, body: JSON.stringify(body) });
    const json = await resp.json();
    assert.ok(resp.ok, `${path}: ${resp.status} ${JSON.stringify(json)}`);
    return json;
  };
  await api('/v1/rooms', { room_id: room });
  const { session } = await api('/v1/sessions', { room_id: room });
  const speaker = await open('Sam', { room, name: 'Sam', autojoin: '1' });
  await speaker.joined(JOIN_MS);
  const listener = await open('Lea', { room, name: 'Lea', autojoin: '1' });
  await listener.joined(JOIN_MS);
  await listener.mediaFrom([speaker.identity], MEDIA_MS);

  const text = `hello everyone ${randomBytes(3).toString('hex')}`;
  await api(`/v1/sessions/${session.session_id}/transcripts`, {
    segment_id: 'utt-1', participant_identity: speaker.identity, text, final: true, start_ms: 0, end_ms: 1500,
  });
  const got = await listener.until('receives the caption', (t) => window.demo.transcripts.find((s) => s.text === t), text, JOIN_MS);
  assert.equal(got.from, speaker.identity, 'the caption is attributed to the speaker');
  assert.equal(got.final, true);
  assert.equal(got.id, 'utt-1');
});

async function expectRefused(server, open, label, token, pattern) {
  const { url } = await server.devToken(roomId('probe'), 'probe');
  const page = await open(label, { url, token, autojoin: '1' });
  assert.equal(await page.settled(JOIN_MS), 'failed');
  const banner = page.page.locator('#error');
  assert.ok(await banner.isVisible(), '#error is visible');
  const shown = await banner.textContent();
  assert.match(shown, pattern);
  assert.equal(await page.page.evaluate(() => window.demo.error), shown);
}

scenario('a token signed with the wrong secret is refused with a readable message', 60_000, async ({ server, open }) => {
  const room = roomId('badsig');
  const at = new AccessToken('devkey', `wrong-secret-${randomBytes(16).toString('hex')}`, { identity: 'mallory', name: 'Mallory' });
  at.addGrant({ roomJoin: true, room });
  await expectRefused(server, open, 'Mallory', await at.toJwt(), /signature/i);
});

scenario('an expired token is refused with a readable message', 60_000, async ({ server, open }) => {
  const room = roomId('expired');
  // exp ten minutes ago, signed with the right dev secret
  const at = new AccessToken('devkey', 'secret', { identity: 'late', name: 'Late', ttl: -600 });
  at.addGrant({ roomJoin: true, room });
  const token = await at.toJwt();
  const { exp } = JSON.parse(Buffer.from(token.split('.')[1], 'base64url'));
  assert.ok(exp < Date.now() / 1000 - 500, 'the test token really is expired');
  await expectRefused(server, open, 'Late', token, /expired/i);
});

scenario('messages over a WebSocket frame (a 12 KB JoinResponse, a 9 KB update) reach livekit-client whole', 60_000, async ({ server, open }) => {
  // The server sends messages above 4 KiB as several frames (signaling/src/websocket.rs).
  const room = roomId('fragments');
  const metadata = (who, len) => `${who}:${randomBytes(len).toString('base64')}`.slice(0, len);
  const join = async (identity, meta) => {
    const at = new AccessToken('devkey', 'secret', { identity, name: identity, metadata: meta });
    at.addGrant({ roomJoin: true, room });
    const { url } = await server.devToken(room, `probe-${identity}`);
    const page = await open(identity, { url, token: await at.toJwt(), autojoin: '1' });
    await page.joined(JOIN_MS);
    return page;
  };
  const aliceMeta = metadata('alice', 12_000);
  const bobMeta = metadata('bob', 9_000);
  const alice = await join('alice', aliceMeta);
  const bob = await join('bob', bobMeta);

  // Bob learnt Alice's metadata from his JoinResponse; Alice learns Bob's from an update.
  const seen = (page, other) => page.until(`sees ${other}'s metadata`, (id) => window.demo.room.remoteParticipants.get(id)?.metadata, other, JOIN_MS);
  assert.equal(await seen(bob, 'alice'), aliceMeta);
  assert.equal(await seen(alice, 'bob'), bobMeta);
  assert.equal(await bob.page.evaluate(() => window.demo.room.localParticipant.metadata), bobMeta);
});

scenario('the only other participant leaves and a new one joins: the one who stayed keeps its connection and decodes the newcomer', 120_000, async ({ open }) => {
  const room = roomId('stay');
  const alice = await open('Alice', { room, name: 'Alice', autojoin: '1' });
  await alice.joined(JOIN_MS);
  await alice.page.evaluate(() => {
    window.roomStates = [];
    for (const name of ['reconnecting', 'signalReconnecting', 'reconnected', 'disconnected']) {
      window.demo.room.on(name, () => window.roomStates.push(name));
    }
  });
  const bob = await open('Bob', { room, name: 'Bob', autojoin: '1' });
  await bob.joined(JOIN_MS);
  await alice.mediaFrom([bob.identity], MEDIA_MS);
  // Bob leaves: every m-line of Alice's subscriber PC carried Bob's tracks.
  await bob.page.evaluate(() => window.demo.room.disconnect());
  await alice.until('Bob is gone', (id) => !window.demo.room.remoteParticipants.has(id), bob.identity, JOIN_MS);
  const carol = await open('Carol', { room, name: 'Carol', autojoin: '1' });
  await carol.joined(JOIN_MS);
  await alice.mediaFrom([carol.identity], MEDIA_MS);
  assert.deepEqual(await alice.page.evaluate(() => window.roomStates), [],
    'Alice never had to reconnect (her subscriber PC survived an offer that removed all its tracks)');
});
