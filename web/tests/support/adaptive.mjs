// Adaptive stream and dynacast (issue 18) on plain loopback: `switchboard serve --dev`, a 720p
// simulcast publisher (the demo page, optionally with `dynacast=1`) and receive-only subscribers
// (optionally with `adaptive=1`), all in one headless Chromium. Used by tests/adaptive.test.mjs.
// Stats helpers come from support/constrained.mjs, which takes any {publisher, subscriber} pair.
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { AccessToken } from 'livekit-server-sdk';
import { sampleSubscriber } from './constrained.mjs';
import { startServer } from './server.mjs';

const JOIN_MS = 20_000;

/**
 * Starts a server and joins a publisher (`dynacast` sets its page's `dynacast=1`) and one
 * subscriber per entry of `subscribers` ({label, adaptive}), each with a token without
 * canPublish, each subscribed to the publisher's video before this resolves. Returns
 * {server, publisher, subscribers: {label: DemoPage}, pages, pair(label)}; `pair(label)` is the
 * {publisher, subscriber} object support/constrained.mjs's helpers take.
 */
export async function startAdaptiveCall(browser, { dynacast = false, subscribers = [] } = {}) {
  const call = { server: null, publisher: null, subscribers: {}, pages: [] };
  call.pair = (label) => ({ publisher: call.publisher, subscriber: call.subscribers[label] });
  try {
    call.server = await startServer();
    const room = `adaptive-${randomBytes(4).toString('hex')}`;
    call.publisher = await browser.openDemo('publisher');
    call.pages.push(call.publisher);
    await call.publisher.open(call.server.url, {
      room, name: 'publisher', autojoin: '1', ...(dynacast ? { dynacast: '1' } : {}),
    });
    await call.publisher.joined(JOIN_MS);
    await call.publisher.until('publishes its camera', () => [...window.demo.room.localParticipant
      .trackPublications.values()].some((p) => p.kind === 'video' && p.track), null, JOIN_MS);

    for (const { label, adaptive = false } of subscribers) {
      // Receive-only, as in support/constrained.mjs (the page shows "insufficient permissions").
      const at = new AccessToken('devkey', 'secret', { identity: label, name: label, ttl: '10m' });
      at.addGrant({ roomJoin: true, room, canPublish: false, canSubscribe: true });
      const page = await browser.openDemo(label);
      call.pages.push(page);
      call.subscribers[label] = page;
      await page.open(call.server.url, {
        url: call.server.url.replace(/^http/, 'ws'), token: await at.toJwt(), autojoin: '1',
        ...(adaptive ? { adaptive: '1' } : {}),
      });
      await page.joined(JOIN_MS);
      await page.until('shows the publisher\'s video in its tile', (id) => {
        const p = window.demo.room.remoteParticipants.get(id);
        const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'video' && x.track);
        const video = document.querySelector(`#grid .tile[data-identity="${CSS.escape(id)}"] video`);
        return !!pub && !!video && pub.track.attachedElements.includes(video);
      }, call.publisher.identity, JOIN_MS);
    }
  } catch (e) {
    await report(call).then((text) => { e.message += `\n${text}`; }, () => {});
    await stopAdaptiveCall(call);
    throw e;
  }
  return call;
}

/** Server log tail and each page's state, for failure reports. */
export async function report(call, name = 'adaptive') {
  const parts = [];
  if (call.server) parts.push(call.server.logTail(80));
  for (const page of call.pages) parts.push(await page.describe(`${name}-${page.label}`));
  return parts.join('\n');
}

export async function stopAdaptiveCall(call) {
  for (const page of call.pages) await page.close();
  await call.server?.stop();
}

/**
 * Styles the subscriber's <video> element showing `identity` (the tile's; display and size, in
 * CSS px). `position: fixed` at the viewport's top left takes it out of the grid's sizing and
 * keeps it in view, so livekit-client's adaptive stream sees exactly this size and "visible".
 * Returns the element's client size and the page's devicePixelRatio as the page sees them.
 */
export function styleRemoteVideo(page, identity, { width, height, display = 'block' }) {
  return page.page.evaluate(({ id, width: w, height: h, display: d }) => {
    const video = document.querySelector(`#grid .tile[data-identity="${CSS.escape(id)}"] video`);
    if (!video) throw new Error(`no video element for ${id}`);
    Object.assign(video.style, {
      position: 'fixed', left: '0px', top: '0px', zIndex: '10', width: `${w}px`, height: `${h}px`, display: d,
    });
    return { clientWidth: video.clientWidth, clientHeight: video.clientHeight, dpr: window.devicePixelRatio };
  }, { id: identity, width, height, display });
}

/**
 * The publisher's camera sender as livekit-client set it up: per rid, the encoding's `active`
 * flag from getParameters() and, from outbound-rtp, `active` (Chromium reports it), bytesSent,
 * frame size and fps. Keyed by rid ('q', 'h', 'f').
 */
export function publisherSender(publisher) {
  return publisher.page.evaluate(async () => {
    const pub = [...window.demo.room.localParticipant.trackPublications.values()].find((x) => x.kind === 'video');
    const sender = pub?.track?.sender;
    const out = {};
    if (!sender) return out;
    for (const e of sender.getParameters().encodings) out[e.rid ?? ''] = { encodingActive: e.active };
    (await sender.getStats()).forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      const rid = s.rid ?? '';
      out[rid] = {
        ...out[rid], statsActive: s.active, bytesSent: s.bytesSent || 0, framesSent: s.framesSent || 0,
        width: s.frameWidth || 0, fps: s.framesPerSecond || 0,
      };
    });
    return out;
  });
}

/**
 * Polls `sample()` every `intervalMs` until `done(sample, history)` is true; `history` holds
 * every sample so far ({t: seconds since start, value}), oldest first. Resolves to
 * {ok, seconds, value, history}: ok false (and the last value) when `timeoutMs` passed first.
 */
export async function pollUntil(sample, done, timeoutMs, intervalMs = 250) {
  const start = Date.now();
  const history = [];
  for (;;) {
    const value = await sample();
    const t = (Date.now() - start) / 1000;
    history.push({ t, value });
    if (done(value, history)) return { ok: true, seconds: t, value, history };
    if (Date.now() - start > timeoutMs) return { ok: false, seconds: t, value, history };
    await delay(intervalMs);
  }
}

/** The sample at least `seconds` older than the newest one in `history`, or null. */
export function sampleBefore(history, seconds) {
  const now = history.at(-1).t;
  for (let i = history.length - 1; i >= 0; i -= 1) if (history[i].t <= now - seconds) return history[i];
  return null;
}

/**
 * Polls until the subscriber decodes frames `width` wide (a frame decoded since the previous
 * sample, and the size reported is exactly `width`); see pollUntil for the result.
 */
export function waitForDecodedWidth(pair, width, timeoutMs) {
  return pollUntil(() => sampleSubscriber(pair), (s, h) => {
    const prev = h.length > 1 ? h.at(-2).value : null;
    return !!prev && s.framesDecoded > prev.framesDecoded && s.frameWidth === width;
  }, timeoutMs);
}
