// Resume (issue 19): a livekit-client participant whose link goes down for 10 s comes back as
// the same participant — same sid, nobody told it left — with video flowing both ways again;
// one whose link stays down past the departure timeout is removed, and the record says why.
// The link is cut with nftables on both ends of a veth between two network namespaces
// (support/netns.mjs): the server and one participant on one side, the roaming participant
// on the other. Needs root, iproute2, nftables, Chromium.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { serverMetric } from './support/constrained.mjs';
import { createLinkPair } from './support/netns.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 30_000;

/** Starts the call: the server and "Stay" on the server's side, "Roamer" across the link. */
async function startCall(serverArgs = []) {
  const call = { pair: await createLinkPair(), browsers: [], pages: [], server: null };
  try {
    call.server = await startServer({ netns: call.pair.serverNs, host: call.pair.serverIp, extraArgs: serverArgs });
    call.room = `resume-${randomBytes(4).toString('hex')}`;
    const open = async (name, netns) => {
      const browser = await launchBrowser({ netns });
      call.browsers.push(browser);
      const page = await browser.openDemo(name);
      call.pages.push(page);
      await page.open(call.server.url, { room: call.room, name, autojoin: '1' });
      await page.joined(JOIN_MS);
      return page;
    };
    call.stay = await open('Stay', call.pair.serverNs);
    call.roamer = await open('Roamer', call.pair.clientNs);
    await call.roamer.mediaFrom([call.stay.identity], JOIN_MS);
    await call.stay.mediaFrom([call.roamer.identity], JOIN_MS);
    // Every participant the Stay page is told left, in order; what the Roamer's room goes
    // through.
    await call.stay.page.evaluate(() => {
      window.leftRoom = [];
      window.demo.room.on('participantDisconnected', (p) => window.leftRoom.push(p.identity));
    });
    await call.roamer.page.evaluate(() => {
      window.roomStates = [];
      for (const name of ['reconnecting', 'signalReconnecting', 'reconnected', 'disconnected']) {
        window.demo.room.on(name, () => window.roomStates.push(name));
      }
    });
  } catch (e) {
    await stopCall(call, e);
    throw e;
  }
  return call;
}

async function stopCall(call, err = null) {
  if (err && call.server) console.error(call.server.logTail(80));
  for (const page of call.pages) {
    if (err) console.error(await page.describe(`resume-${page.label}`));
    await page.close();
  }
  for (const browser of call.browsers) await browser.close();
  await call.server?.stop();
  await call.pair?.teardown();
}

/** Video frames `page` decoded from `identity` so far. */
async function framesFrom(page, identity) {
  return (await page.inbound())[identity]?.framesDecoded ?? 0;
}

/** Waits until `page` decoded `more` frames from `identity` beyond `since`; returns when (ms). */
async function decodesAgain(page, identity, since, more, timeoutMs) {
  const started = Date.now();
  for (;;) {
    if ((await framesFrom(page, identity)) >= since + more) return Date.now();
    if (Date.now() - started > timeoutMs) {
      throw new Error(`${page.label} decoded no new video from ${identity} within ${timeoutMs / 1000}s`);
    }
    await delay(100);
  }
}

test('link down 10 s: the same participant comes back, nobody sees it leave, video flows both ways again', { timeout: 180_000 }, async () => {
  const call = await startCall();
  try {
    const { stay, roamer, pair } = call;
    const sidBefore = await roamer.page.evaluate(() => window.demo.room.localParticipant.sid);
    const fromRoamer = await framesFrom(stay, roamer.identity);
    const fromStay = await framesFrom(roamer, stay.identity);

    await pair.linkDown();
    await delay(10_000);
    await pair.linkUp();
    const restored = Date.now();
    // Both ways: Stay decodes Roamer's publisher PC again, Roamer its subscriber PC.
    const [a, b] = await Promise.all([
      decodesAgain(stay, roamer.identity, fromRoamer, 10, 30_000),
      decodesAgain(roamer, stay.identity, fromStay, 10, 30_000),
    ]);
    const back = Math.max(a, b) - restored;
    console.log(`video both ways again ${back} ms after the link came back (Stay ${a - restored} ms, Roamer ${b - restored} ms)`);

    // The client saw its WebSocket fail when the interface went down and resumes on its own
    // schedule (livekit-client's back-off: 0.3, 1.2, 2.7, 4.8, 7 s…), then restarts ICE on
    // its publisher PC while the server restarts it on the subscriber PC.
    await roamer.until('the client resumed', () => window.roomStates.includes('reconnected'), null, 30_000);
    const resumedAt = Date.now();
    const states = await roamer.page.evaluate(() => window.roomStates);
    const resumes = await serverMetric(call, 'switchboard_signal_resumes_total');
    console.log(`Roamer's room: ${states.join(' → ')}, resumed ${resumedAt - restored} ms after the link came back; server resumes: ${resumes}`);
    assert.ok(resumes >= 1, `the server resumed the session (switchboard_signal_resumes_total ${resumes})`);
    // After both ICE restarts, video still flows both ways.
    const [c, d] = await Promise.all([
      decodesAgain(stay, roamer.identity, await framesFrom(stay, roamer.identity), 10, 30_000),
      decodesAgain(roamer, stay.identity, await framesFrom(roamer, stay.identity), 10, 30_000),
    ]);
    console.log(`after the resume: Stay decodes in ${c - resumedAt} ms, Roamer in ${d - resumedAt} ms`);
    assert.ok(Math.max(c, d) - resumedAt <= 5_000, 'video flows both ways within 5 s of the resume');
    const sidAfter = await roamer.page.evaluate(() => window.demo.room.localParticipant.sid);
    assert.equal(sidAfter, sidBefore, 'the participant resumed with the same sid');
    const left = await stay.page.evaluate(() => window.leftRoom);
    assert.deepEqual(left, [], 'the other participant was never told it left');
    const remote = await stay.page.evaluate((id) => window.demo.room.remoteParticipants.get(id)?.sid, roamer.identity);
    assert.equal(remote, sidBefore, 'the other participant still sees the same sid');
    assert.ok(back <= 5_000, `video flows both ways within 5 s of the link coming back (${back} ms)`);
  } catch (err) {
    await stopCall(call, err);
    throw err;
  }
  await stopCall(call);
});

test('the client moves to another address: the same participant, video both ways over the new one', { timeout: 180_000 }, async () => {
  const call = await startCall();
  try {
    const { stay, roamer, pair } = call;
    const sidBefore = await roamer.page.evaluate(() => window.demo.room.localParticipant.sid);
    const oldIp = pair.clientIp;
    await pair.moveClient();
    const moved = Date.now();
    await roamer.until('the client resumed', () => window.roomStates.includes('reconnected'), null, 30_000);
    const [a, b] = await Promise.all([
      decodesAgain(stay, roamer.identity, await framesFrom(stay, roamer.identity), 10, 30_000),
      decodesAgain(roamer, stay.identity, await framesFrom(roamer, stay.identity), 10, 30_000),
    ]);
    console.log(`moved ${oldIp} → ${pair.clientIp}: video both ways ${Math.max(a, b) - moved} ms later`);
    const pairNow = await roamer.selectedPair(stay.identity);
    assert.equal(pairNow?.local?.address, pair.clientIp, `the subscriber PC runs from the new address: ${JSON.stringify(pairNow)}`);
    const sidAfter = await roamer.page.evaluate(() => window.demo.room.localParticipant.sid);
    assert.equal(sidAfter, sidBefore, 'no new join: the same sid');
    assert.deepEqual(await stay.page.evaluate(() => window.leftRoom), [], 'nobody was told it left');
  } catch (err) {
    await stopCall(call, err);
    throw err;
  }
  await stopCall(call);
});

test('a link down past the departure timeout: the others are told it left, the record says why, and back online it rejoins at once', { timeout: 180_000 }, async () => {
  const call = await startCall(['--limit', 'peer_departure_timeout=5s']);
  try {
    const { stay, roamer, pair, server, room } = call;
    const sidBefore = await roamer.page.evaluate(() => window.demo.room.localParticipant.sid);
    const cutAt = Date.now();
    await pair.cut();
    await stay.until('Roamer is gone', (id) => window.leftRoom.includes(id), roamer.identity, 60_000);
    const gone = Date.now() - cutAt;
    console.log(`Roamer removed ${gone} ms after the cut`);
    // Signaling is noticed lost after ping_timeout (15 s), media after 15 s without consent
    // checks; either then waits the departure timeout (5 s here).
    assert.ok(gone <= 15_000 + 5_000 + 5_000, `removed within ping timeout + departure timeout + a few seconds (${gone} ms)`);

    const admin = new AccessToken('devkey', 'secret', { identity: 'ops' });
    admin.addGrant({ room, roomAdmin: true, roomList: true });
    const bearer = await admin.toJwt();
    const text = await pair.exec(pair.serverNs, 'curl', '-sf', '-H', `Authorization: Bearer ${bearer}`,
      `${server.url}/v1/rooms/${room}/events?limit=1000`);
    const left = JSON.parse(text).events
      .filter((e) => e.kind === 'participant_left' && e.payload.participant.identity === roamer.identity);
    assert.equal(left.length, 1, text);
    const reason = left[0].payload.participant.leave_reason;
    assert.ok(['CONNECTION_TIMEOUT', 'SIGNAL_CLOSE', 'media_departure_timeout'].includes(reason),
      `the record says why it left: ${reason}`);
    console.log(`recorded leave reason: ${reason}`);

    // Back online, the client's resume names a session that is gone: the server answers with
    // a LeaveRequest to reconnect, and the client joins again at once as a new participant.
    await pair.restore();
    const restored = Date.now();
    await stay.until('Roamer is back as a new participant', ([id, old]) => {
      const p = window.demo.room.remoteParticipants.get(id);
      return !!p && p.sid !== old;
    }, [roamer.identity, sidBefore], 60_000);
    console.log(`Roamer rejoined ${Date.now() - restored} ms after the link came back`);
    await stay.mediaFrom([roamer.identity], 30_000);
  } catch (err) {
    await stopCall(call, err);
    throw err;
  }
  await stopCall(call);
});
