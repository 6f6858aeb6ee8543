// A call over a constrained link (issue 18, "every subscriber gets the best picture its link
// allows"): the server and a 720p simulcast publisher in one namespace, a subscriber in another
// behind a tbf cap on its downlink (support/netns.mjs). Used by tests/constrained.test.mjs
// and tools/constrained-link.mjs; the numbers come from the subscriber's getStats.
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './browser.mjs';
import { createLinkPair } from './netns.mjs';
import { startServer } from './server.mjs';

const JOIN_MS = 20_000;

/**
 * Starts everything. `cap` ('500kbit', or null for none) is set before the subscriber joins, so
 * it never sees the uncapped link. `serverOptions` go to startServer (binary, env, …).
 * `whep: {withoutTransportCc}` makes the subscriber a plain WebRTC player (WHEP) instead of
 * livekit-client, its offer optionally stripped of transport-wide feedback (so its browser
 * estimates the link itself and reports REMB).
 */
export async function startConstrainedCall({
  cap = null, codec = null, serverOptions = {}, whep = null,
} = {}) {
  const call = { pair: null, server: null, browsers: [], pages: [] };
  try {
    call.pair = await createLinkPair();
    if (cap) await call.pair.setCap(cap);
    call.server = await startServer({ ...serverOptions, netns: call.pair.serverNs, host: call.pair.serverIp });
    const room = `constrained-${randomBytes(4).toString('hex')}`;

    // The demo page publishes camera + microphone with livekit-client's defaults: a 1280×720
    // camera sent as simulcast (q 320×180, h 640×360, f 1280×720), adaptiveStream and dynacast
    // off, so every layer keeps flowing to the server. Same namespace as the server: uncapped.
    const pubBrowser = await launchBrowser({ netns: call.pair.serverNs });
    call.browsers.push(pubBrowser);
    call.publisher = await pubBrowser.openDemo('publisher');
    call.pages.push(call.publisher);
    // `codec` 'vp9' publishes one SVC stream (L3T3_KEY) instead of simulcast.
    const publisherParams = { room, name: 'publisher', autojoin: '1', ...(codec ? { codec } : {}) };
    await call.publisher.open(call.server.url, publisherParams);
    await call.publisher.joined(JOIN_MS);

    // The subscriber gets a token without canPublish: the demo page's camera would otherwise
    // cost an encoder on these two cores and add an uplink that has nothing to do with the test.
    // (Its page then shows "failed to publish track, insufficient permissions": expected.)
    const at = new AccessToken('devkey', 'secret', { identity: 'subscriber', name: 'subscriber', ttl: '10m' });
    at.addGrant({ roomJoin: true, room, canPublish: false, canSubscribe: true });
    const subBrowser = await launchBrowser({ netns: call.pair.clientNs });
    call.browsers.push(subBrowser);
    call.subscriber = await subBrowser.openDemo('subscriber');
    call.pages.push(call.subscriber);
    if (whep) {
      call.whep = await playWhep(call.subscriber, call.server.url, await at.toJwt(), whep);
      return call;
    }
    await call.subscriber.open(call.server.url, {
      url: call.server.url.replace(/^http/, 'ws'), token: await at.toJwt(), autojoin: '1',
    });
    await call.subscriber.joined(JOIN_MS);
    await call.subscriber.until('subscribed to the publisher\'s video', (id) => {
      const p = window.demo.room.remoteParticipants.get(id);
      return !!p && [...p.trackPublications.values()].some((pub) => pub.kind === 'video' && pub.track);
    }, call.publisher.identity, JOIN_MS);
  } catch (e) {
    await report(call).then((text) => { e.message += `\n${text}`; }, () => {});
    await stopConstrainedCall(call);
    throw e;
  }
  return call;
}

/** A counter or gauge from the server's /metrics (summed over its label sets), read inside its namespace. */
export async function serverMetric(call, name) {
  const text = await call.pair.exec(call.pair.serverNs, 'curl', '-sf', `${call.server.url}/metrics`);
  const values = text.split('\n')
    .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
    .map((l) => Number(l.split(' ').pop()));
  if (values.length === 0) throw new Error(`the server reports no ${name}`);
  return values.reduce((a, b) => a + b, 0);
}

/** Server log tail and each page's state, for failure reports. */
export async function report(call) {
  const parts = [];
  if (call.server) parts.push(call.server.logTail(60));
  for (const page of call.pages) parts.push(await page.describe(`constrained-${page.label}`));
  // A WHEP player's page has no demo state to describe: its inbound video says what it got.
  if (call.whep) {
    parts.push(`WHEP player inbound: ${JSON.stringify(await sampleSubscriber(call).catch((e) => String(e)))}`);
  }
  return parts.join('\n');
}

export async function stopConstrainedCall(call) {
  for (const page of call.pages) await page.close();
  for (const browser of call.browsers) await browser.close();
  await call.server?.stop();
  await call.pair?.teardown();
}

// Runs in the subscriber's page: its inbound video from `identity`, counters summed over every
// inbound-rtp entry (a new SSRC would start a new one), size from the latest-receiving one.
async function inboundVideo(identity) {
  const p = window.demo.room.remoteParticipants.get(identity);
  const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'video' && x.track);
  const report = pub && await pub.track.getRTCStatsReport();
  const out = {
    t: performance.now() / 1000, framesDecoded: 0, totalFreezesDuration: 0, freezeCount: 0,
    bytesReceived: 0, packetsReceived: 0, packetsLost: 0, nackCount: 0, pliCount: 0,
    frameWidth: 0, frameHeight: 0,
  };
  let latest = -1;
  report?.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    for (const k of ['framesDecoded', 'totalFreezesDuration', 'freezeCount', 'bytesReceived',
      'packetsReceived', 'packetsLost', 'nackCount', 'pliCount']) out[k] += s[k] || 0;
    if ((s.lastPacketReceivedTimestamp || 0) > latest) {
      latest = s.lastPacketReceivedTimestamp || 0;
      out.frameWidth = s.frameWidth || 0;
      out.frameHeight = s.frameHeight || 0;
    }
  });
  return out;
}

/** The subscriber's inbound audio from the publisher: {packetsReceived, packetsLost, nackCount}. */
export function sampleAudio(call) {
  return call.subscriber.page.evaluate(async (identity) => {
    const p = window.demo.room.remoteParticipants.get(identity);
    const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'audio' && x.track);
    const report = pub && await pub.track.getRTCStatsReport();
    const out = { packetsReceived: 0, packetsLost: 0, nackCount: 0 };
    report?.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'audio') return;
      for (const k of Object.keys(out)) out[k] += s[k] || 0;
    });
    return out;
  }, call.publisher.identity);
}

export function sampleSubscriber(call) {
  if (call.whep) return call.subscriber.page.evaluate(() => window.whepInbound());
  return call.subscriber.page.evaluate(inboundVideo, call.publisher.identity);
}

/**
 * Plays the room over WHEP in `page` (a plain RTCPeerConnection), its offer without
 * transport-wide feedback if `withoutTransportCc`; resolves to {offer, answer}.
 */
async function playWhep(page, serverUrl, token, { withoutTransportCc = false }) {
  await page.page.goto(`${serverUrl}/healthz`);
  const played = await page.page.evaluate(async ({ token, withoutTransportCc }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    window.whepInbound = async () => {
      const out = {
        t: performance.now() / 1000, framesDecoded: 0, totalFreezesDuration: 0, freezeCount: 0,
        bytesReceived: 0, packetsReceived: 0, packetsLost: 0, nackCount: 0, pliCount: 0,
        frameWidth: 0, frameHeight: 0,
      };
      (await pc.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
        for (const k of ['framesDecoded', 'totalFreezesDuration', 'freezeCount', 'bytesReceived',
          'packetsReceived', 'packetsLost', 'nackCount', 'pliCount']) out[k] += s[k] || 0;
        out.frameWidth = s.frameWidth || 0;
        out.frameHeight = s.frameHeight || 0;
      });
      return out;
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === 'complete') res();
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') res(); });
    });
    let offer = pc.localDescription.sdp;
    if (withoutTransportCc) {
      // As a client without TWCC offers: no transport-wide extension, no transport-cc feedback.
      offer = offer.split('\r\n').filter((l) => !/transport-wide-cc|transport-cc/.test(l)).join('\r\n');
    }
    const resp = await fetch('/whep', {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/sdp' }, body: offer,
    });
    const answer = await resp.text();
    if (resp.status !== 201) return { error: `${resp.status}: ${answer}` };
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    return { offer, answer };
  }, { token, withoutTransportCc });
  if (played.error) throw new Error(`WHEP: ${played.error}`);
  return played;
}

/** The publisher's simulcast layers as sent, smallest first: [{rid, width, height, fps, bytesSent, limitation, scalabilityMode}]. */
export function publisherLayers(call) {
  return call.publisher.page.evaluate(async () => {
    const pub = [...window.demo.room.localParticipant.trackPublications.values()].find((x) => x.kind === 'video');
    const report = pub?.track?.sender && await pub.track.sender.getStats();
    const layers = [];
    report?.forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      layers.push({
        rid: s.rid ?? null, width: s.frameWidth || 0, height: s.frameHeight || 0,
        fps: s.framesPerSecond || 0, bytesSent: s.bytesSent || 0, limitation: s.qualityLimitationReason,
        scalabilityMode: s.scalabilityMode ?? null,
      });
    });
    return layers.sort((a, b) => a.width - b.width);
  });
}

/**
 * Waits until every layer the publisher announced is being sent (a new publisher's estimate
 * of its uplink adds the top layer only after a few seconds) and returns the top one's width,
 * or null after `timeoutMs`.
 */
export async function waitForPublisherTop(call, timeoutMs) {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    const layers = await publisherLayers(call);
    if (layers.length > 0 && layers.every((l) => l.fps > 0)) return Math.max(...layers.map((l) => l.width));
    await delay(250);
  }
  return null;
}

/** Width of the publisher's largest layer that is actually being sent right now. */
export async function topLayerWidth(call) {
  return Math.max(0, ...(await publisherLayers(call)).filter((l) => l.fps > 0).map((l) => l.width));
}

/**
 * Samples the subscriber every `intervalMs` for `seconds` and summarises the window: frames
 * decoded, fps, sizes decoded (width/height: the last one, 0 if none), Chromium's freeze time,
 * the time no frame was decoded at all ("stalled": Chromium counts no freeze before its first
 * decoded frame), bytes and kbit/s.
 */
export async function measureWindow(call, seconds, intervalMs = 250) {
  const samples = [await sampleSubscriber(call)];
  const end = samples[0].t + seconds;
  while (samples.at(-1).t < end) {
    await delay(intervalMs);
    samples.push(await sampleSubscriber(call));
  }
  const [a, b] = [samples[0], samples.at(-1)];
  const dt = b.t - a.t;
  let stalled = 0;
  let run = 0;
  let longest = 0;
  for (let i = 1; i < samples.length; i += 1) {
    const gap = samples[i].t - samples[i - 1].t;
    if (samples[i].framesDecoded === samples[i - 1].framesDecoded) {
      stalled += gap;
      run += gap;
      longest = Math.max(longest, run);
    } else {
      run = 0;
    }
  }
  const decoding = samples.filter((s, i) => i > 0 && s.framesDecoded > samples[i - 1].framesDecoded);
  const round = (x, n = 2) => Number(x.toFixed(n));
  const delta = (k) => b[k] - a[k];
  return {
    seconds: round(dt),
    framesDecoded: delta('framesDecoded'),
    fps: round(delta('framesDecoded') / dt, 1),
    // Sizes of frames decoded in the window: getStats keeps the last frame's size after a stall.
    widthsSeen: [...new Set(decoding.map((s) => s.frameWidth))].sort((x, y) => x - y),
    width: decoding.at(-1)?.frameWidth ?? 0,
    height: decoding.at(-1)?.frameHeight ?? 0,
    freezeSeconds: round(delta('totalFreezesDuration')),
    freezeCount: delta('freezeCount'),
    stalledSeconds: round(stalled),
    longestStallSeconds: round(longest),
    bytesReceived: delta('bytesReceived'),
    kbps: round(delta('bytesReceived') * 8 / dt / 1000, 0),
    packetsLost: delta('packetsLost'),
    nacks: delta('nackCount'),
    plis: delta('pliCount'),
  };
}

/**
 * Polls until the subscriber keeps decoding frames at least `width` wide (frameWidth is the last
 * decoded frame's, so frames must still be coming); resolves to the seconds taken, or null.
 */
export async function waitForWidth(call, width, timeoutMs) {
  const start = Date.now();
  let prev = await sampleSubscriber(call);
  while (Date.now() - start < timeoutMs) {
    await delay(250);
    const s = await sampleSubscriber(call);
    if (s.frameWidth >= width && s.framesDecoded > prev.framesDecoded) return (Date.now() - start) / 1000;
    prev = s;
  }
  return null;
}
