// WHIP and WHEP over real HTTP, with headless Chromium's own RTCPeerConnection (no SDK) on one
// side and the unmodified livekit-client (the demo page) on the other, in the same room and
// with the same tokens. Needs a built binary (`cargo build`).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 20_000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const roomId = (what) => `wh-${what}-${randomBytes(4).toString('hex')}`;

async function token(room, identity, grant = {}) {
  const at = new AccessToken('devkey', 'secret', { identity, name: identity });
  at.addGrant({ room, roomJoin: true, canPublish: true, canSubscribe: true, ...grant });
  return at.toJwt();
}

/** Runs `body` against a fresh server; on failure prints its log tail and the pages. */
async function withServer(body, options = {}) {
  const server = await startServer(options);
  const pages = [];
  const open = async (label) => {
    const page = await browser.openDemo(label);
    pages.push(page);
    return page;
  };
  try {
    await body(server, open);
  } catch (err) {
    console.error(server.logTail(80));
    for (const page of pages) console.error(await page.describe(`whip-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    await server.stop();
  }
}

/**
 * In a page of the server's origin: a plain RTCPeerConnection publishing the fake camera and
 * microphone (WHIP) or receiving (WHEP), offer sent once ICE gathering completed. Resolves to
 * {status, location, etag, answer, error}; the connection stays in `window.whipPc`.
 */
async function whipInPage(page, server, { kind, bearer, query = '', h264 = false, codec = null, width = 640 }) {
  await page.page.goto(`${server.url}/healthz`);
  return page.page.evaluate(async ({ kind, bearer, query, h264, codec, width }) => {
    const pc = new RTCPeerConnection();
    window.whipPc = pc;
    if (kind === 'whip') {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
      for (const track of stream.getTracks()) {
        const transceiver = track.kind === 'video'
          ? pc.addTransceiver(track, { direction: 'sendonly', sendEncodings: [{ scaleResolutionDownBy: 640 / width }] })
          : pc.addTransceiver(track, { direction: 'sendonly' });
        if (h264 && track.kind === 'video') {
          // Only what OBS offers by default: H.264 constrained baseline, packetization-mode 1.
          const codecs = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/H264'
            && /packetization-mode=1/.test(c.sdpFmtpLine) && /profile-level-id=42e01f/.test(c.sdpFmtpLine));
          transceiver.setCodecPreferences(codecs);
        } else if (codec && track.kind === 'video') {
          transceiver.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs
            .filter((c) => c.mimeType === `video/${codec}`));
        }
      }
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      window.whepFrames = () => pc.getStats().then((stats) => {
        let frames = 0; let audio = 0; let width = 0;
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') { frames += s.framesDecoded || 0; width = s.frameWidth || width; }
          if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.packetsReceived || 0;
        });
        return { frames, audio, width };
      });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === 'complete') res();
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') res(); });
      setTimeout(res, 2000);
    });
    const resp = await fetch(`/${kind}${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const text = await resp.text();
    const out = {
      status: resp.status, location: resp.headers.get('location'), etag: resp.headers.get('etag'), link: resp.headers.get('link'),
    };
    if (resp.status !== 201) return { ...out, error: text };
    await pc.setRemoteDescription({ type: 'answer', sdp: text });
    return { ...out, answer: text };
  }, { kind, bearer, query, h264, codec, width });
}

/**
 * Evaluates `fn(arg)` in the page, awaiting its promise, until `check(value)` holds; returns
 * that value. (DemoPage.until suits synchronous predicates only: a promise is truthy.)
 */
async function pollPage(page, what, fn, arg, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await page.page.evaluate(fn, arg);
    if (check(last)) return last;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${page.label}: ${what} — not within ${timeoutMs / 1000}s; last: ${JSON.stringify(last)}`);
}

/**
 * ICE restart of `window.whipPc` as a WHIP/WHEP client does it: a new offer's credentials in a
 * PATCH, ours back in the answer fragment. Resolves to {status, frag, etag, ufrag}.
 */
function restartIce(page, { location, etag, bearer }) {
  return page.page.evaluate(async ({ location, etag, bearer }) => {
    const pc = window.whipPc;
    pc.restartIce();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const ufrag = /a=ice-ufrag:(\S+)/.exec(offer.sdp)[1];
    const pwd = /a=ice-pwd:(\S+)/.exec(offer.sdp)[1];
    const resp = await fetch(location, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/trickle-ice-sdpfrag', 'if-match': etag },
      body: `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\na=mid:0\r\n`,
    });
    const frag = await resp.text();
    if (resp.status !== 200) return { status: resp.status, frag };
    const newUfrag = /a=ice-ufrag:(\S+)/.exec(frag)[1];
    const newPwd = /a=ice-pwd:(\S+)/.exec(frag)[1];
    const answer = pc.currentRemoteDescription.sdp
      .replace(/a=ice-ufrag:\S+/g, `a=ice-ufrag:${newUfrag}`)
      .replace(/a=ice-pwd:\S+/g, `a=ice-pwd:${newPwd}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    return { status: resp.status, frag, etag: resp.headers.get('etag'), ufrag };
  }, { location, etag, bearer });
}

/** In the page: whether `window.whipPc`'s transport is connected with local ufrag `ufrag`. */
const onNewCredentials = (ufrag) => window.whipPc.getStats()
  .then((stats) => [...stats.values()].some((s) => s.type === 'transport'
    && s.iceLocalUsernameFragment === ufrag && s.iceState === 'connected'));

const whepStats = () => window.whepFrames();

async function http(server, method, path, { bearer, type, body, headers = {} } = {}) {
  const resp = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
      ...(type ? { 'content-type': type } : {}),
      ...headers,
    },
    body,
  });
  const text = await resp.text();
  return { status: resp.status, headers: resp.headers, text, json: () => JSON.parse(text) };
}

test('a browser publishes with plain WebRTC over WHIP; a livekit-client participant decodes it', { timeout: 90_000 }, () => withServer(async (server, open) => {
  const room = roomId('pub');
  const whip = await open('whip-publisher');
  const result = await whipInPage(whip, server, { kind: 'whip', bearer: await token(room, 'obs-like') });
  assert.equal(result.status, 201, result.error);
  assert.match(result.location, /^\/whip\/\S+$/);
  assert.ok(result.etag, 'an ETag');
  const viewer = await open('Viewer');
  await viewer.open(server.url, { url: server.url.replace(/^http/, 'ws'), token: await token(room, 'viewer'), autojoin: '1' });
  await viewer.joined(JOIN_MS);
  await viewer.mediaFrom(['obs-like'], 30_000);
  // The WHIP publisher is an ordinary participant: listed with its two tracks.
  const seen = await viewer.page.evaluate(() => {
    const p = window.demo.room.remoteParticipants.get('obs-like');
    return { tracks: [...p.trackPublications.values()].map((t) => t.kind).sort() };
  });
  assert.deepEqual(seen.tracks, ['audio', 'video']);

  // ICE restart as a WHIP client does it: a new offer's credentials in a PATCH, ours back in
  // the answer fragment; media keeps flowing over the restarted connection.
  const bearer = await token(room, 'obs-like');
  const restarted = await restartIce(whip, { location: result.location, etag: result.etag, bearer });
  assert.equal(restarted.status, 200, restarted.frag);
  assert.notEqual(restarted.etag, result.etag);
  const framesNow = (await viewer.inbound())['obs-like'].framesDecoded;
  // The transport runs on the new credentials (not the old pair kept alive).
  await pollPage(whip, 'the transport is connected with the new ICE credentials', onNewCredentials, restarted.ufrag, (ok) => ok, 10_000);
  const deadline = Date.now() + 10_000;
  let framesLater = framesNow;
  while (framesLater < framesNow + 60 && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 250));
    framesLater = (await viewer.inbound())['obs-like'].framesDecoded;
  }
  assert.ok(framesLater >= framesNow + 60, `frames after the restart: ${framesNow} → ${framesLater}`);

  // DELETE ends the publication: the participant leaves the room.
  const gone = await http(server, 'DELETE', result.location, { bearer });
  assert.equal(gone.status, 200, gone.text);
  await viewer.until('the WHIP participant left', () => !window.demo.room.remoteParticipants.has('obs-like'), undefined, 10_000);
  const again = await http(server, 'DELETE', result.location, { bearer: await token(room, 'obs-like') });
  assert.equal(again.status, 404);
  assert.equal(again.headers.get('content-type'), 'application/problem+json');
}));

test('an H.264-only WHIP publisher (as OBS sends) reaches a livekit-client subscriber as H.264, and a WHEP player', { timeout: 90_000 }, () => withServer(async (server, open) => {
  const room = roomId('h264');
  const whip = await open('whip-h264');
  const result = await whipInPage(whip, server, { kind: 'whip', bearer: await token(room, 'encoder'), h264: true });
  assert.equal(result.status, 201, result.error);
  assert.match(result.answer, /a=rtpmap:\d+ H264\/90000/);
  assert.doesNotMatch(result.answer, /VP8/);
  const viewer = await open('Viewer');
  await viewer.open(server.url, { url: server.url.replace(/^http/, 'ws'), token: await token(room, 'viewer'), autojoin: '1' });
  await viewer.joined(JOIN_MS);
  const stats = await viewer.mediaFrom(['encoder'], 30_000);
  assert.equal(stats.encoder.videoCodec, 'video/H264', JSON.stringify(stats));
  const player = await open('whep-h264');
  const played = await whipInPage(player, server, { kind: 'whep', bearer: await token(room, 'watcher', { canPublish: false }) });
  assert.equal(played.status, 201, played.error);
  await pollPage(player, 'a WHEP player decodes the H.264 publisher', whepStats, undefined, (s) => s.frames >= 20);
}));

for (const codec of ['VP9', 'AV1']) {
  test(`${codec} from a WHIP publisher passes through to a livekit-client subscriber`, { timeout: 90_000 }, () => withServer(async (server, open) => {
    const room = roomId(codec.toLowerCase());
    const whip = await open(`whip-${codec}`);
    const result = await whipInPage(whip, server, { kind: 'whip', bearer: await token(room, 'encoder'), codec });
    assert.equal(result.status, 201, result.error);
    const viewer = await open('Viewer');
    await viewer.open(server.url, { url: server.url.replace(/^http/, 'ws'), token: await token(room, 'viewer'), autojoin: '1' });
    await viewer.joined(JOIN_MS);
    const stats = await viewer.mediaFrom(['encoder'], 30_000);
    assert.equal(stats.encoder.videoCodec, `video/${codec}`, JSON.stringify(stats));
  }));
}

test('a browser watches over WHEP while livekit-client publishes, and follows the next publisher', { timeout: 120_000 }, () => withServer(async (server, open) => {
  const room = roomId('play');
  const ws = server.url.replace(/^http/, 'ws');
  const alice = await open('Alice');
  await alice.open(server.url, { url: ws, token: await token(room, 'alice'), autojoin: '1' });
  await alice.joined(JOIN_MS);
  await alice.until('publishes camera and microphone', () => window.demo.room.localParticipant.trackPublications.size >= 2, undefined, JOIN_MS);

  const player = await open('whep-player');
  const result = await whipInPage(player, server, { kind: 'whep', bearer: await token(room, 'watcher', { canPublish: false }) });
  assert.equal(result.status, 201, result.error);
  assert.match(result.location, /^\/whep\/\S+$/);
  const framesAtLeast = async (n, what) => pollPage(player, what, whepStats, undefined, (s) => s.frames >= n && s.audio > 0);
  await framesAtLeast(20, 'decodes Alice\'s video and receives her audio');
  // Its offer carried transport-wide feedback, so the server estimates its link and probes
  // up to Alice's top simulcast layer (without an estimate it stayed on the middle one).
  await pollPage(player, 'gets Alice\'s top layer (1280 wide)', whepStats, undefined, (s) => s.width >= 1280, 25_000);

  // An ICE restart of the player (new credentials, new candidates): the server's media follows
  // it to the new connection.
  const restarted = await restartIce(player, {
    location: result.location, etag: result.etag, bearer: await token(room, 'watcher', { canPublish: false }),
  });
  assert.equal(restarted.status, 200, restarted.frag);
  await pollPage(player, 'the transport is connected with the new ICE credentials', onNewCredentials, restarted.ufrag, (ok) => ok, 10_000);
  const atRestart = (await player.page.evaluate(() => window.whepFrames())).frames;
  await framesAtLeast(atRestart + 60, 'keeps decoding after the ICE restart');

  // The viewer is hidden: Alice does not see it.
  const others = await alice.page.evaluate(() => [...window.demo.room.remoteParticipants.keys()]);
  assert.deepEqual(others, []);

  // Alice leaves, Bob publishes: the same m-lines carry Bob (keyframe asked for, numbering
  // continuous, so the player keeps decoding without renegotiating).
  const before = (await player.page.evaluate(() => window.whepFrames())).frames;
  await alice.close();
  // Nobody publishes: the player's picture stalls (its m-lines stay, silent).
  await new Promise((res) => setTimeout(res, 1500));
  const stalled = (await player.page.evaluate(() => window.whepFrames())).frames;
  await new Promise((res) => setTimeout(res, 1000));
  const still = (await player.page.evaluate(() => window.whepFrames())).frames;
  assert.ok(still - stalled < 5, `no frames without a publisher (${stalled} → ${still})`);
  assert.ok(stalled >= before, 'frames only go up');
  const bob = await open('Bob');
  await bob.open(server.url, { url: ws, token: await token(room, 'bob'), autojoin: '1' });
  await bob.joined(JOIN_MS);
  await framesAtLeast(still + 30, 'decodes again once Bob publishes, on the same m-lines');
}));

test('WHEP plays the host by default, or ?participant=; viewers are hidden but listed and recorded', { timeout: 90_000 }, () => withServer(async (server, open) => {
  const room = roomId('pick');
  // Alice publishes first (small picture), then the host Hana (larger picture).
  const alice = await whipInPage(await open('alice'), server, { kind: 'whip', bearer: await token(room, 'alice'), width: 320 });
  assert.equal(alice.status, 201, alice.error);
  const hana = await whipInPage(await open('hana'), server, {
    kind: 'whip', bearer: await token(room, 'hana', { roomAdmin: true }), width: 640,
  });
  assert.equal(hana.status, 201, hana.error);
  const watch = async (label, query) => {
    const page = await open(label);
    const played = await whipInPage(page, server, { kind: 'whep', bearer: await token(room, label, { canPublish: false }), query });
    assert.equal(played.status, 201, played.error);
    return (await pollPage(page, `${label} decodes video`, whepStats, undefined, (s) => s.frames >= 10 && s.width > 0)).width;
  };
  assert.equal(await watch('default-viewer', ''), 640, 'the host is the main publisher');
  assert.equal(await watch('alice-fan', '?participant=alice'), 320, '?participant= picks Alice');

  const admin = new AccessToken('devkey', 'secret', { identity: 'ops' });
  admin.addGrant({ room, roomAdmin: true, roomList: true });
  const bearer = await admin.toJwt();
  const listed = await http(server, 'GET', `/v1/rooms/${room}/participants`, { bearer });
  assert.equal(listed.status, 200, listed.text);
  const people = Object.fromEntries(listed.json().participants.map((p) => [p.identity, p]));
  assert.equal(people['default-viewer']?.permission?.hidden, true, JSON.stringify(people['default-viewer']));
  assert.equal(people.alice?.kind, 'INGRESS', JSON.stringify(people.alice));
  assert.ok(!people.alice?.permission?.hidden);
  // Recorded like any participant: their joins are in the room's event log.
  const events = await http(server, 'GET', `/v1/rooms/${room}/events?limit=1000`, { bearer });
  const joined = events.json().events.filter((e) => e.kind === 'participant_joined').map((e) => e.payload.participant?.identity);
  for (const who of ['alice', 'hana', 'default-viewer', 'alice-fan']) assert.ok(joined.includes(who), `${who} in ${joined}`);
}));

test('trickle and ICE restart PATCHes, and every refusal over real HTTP', { timeout: 90_000 }, () => withServer(async (server, open) => {
  const room = roomId('err');
  const publisher = await token(room, 'pub');
  const page = await open('whip');
  const made = await whipInPage(page, server, { kind: 'whip', bearer: publisher });
  assert.equal(made.status, 201, made.error);

  // Trickle: 204, ETag unchanged.
  const trickle = await http(server, 'PATCH', made.location, {
    bearer: publisher,
    type: 'application/trickle-ice-sdpfrag',
    body: 'a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n',
    headers: { 'if-match': made.etag },
  });
  assert.equal(trickle.status, 204, trickle.text);
  assert.equal(trickle.headers.get('etag'), made.etag);
  // ICE restart: new credentials in, ours out, new ETag.
  const restart = await http(server, 'PATCH', made.location, {
    bearer: publisher,
    type: 'application/trickle-ice-sdpfrag',
    body: 'a=ice-ufrag:rst1\r\na=ice-pwd:0123456789abcdefghijkl\r\na=mid:0\r\n',
    headers: { 'if-match': made.etag },
  });
  assert.equal(restart.status, 200, restart.text);
  assert.match(restart.text, /^a=ice-ufrag:\S+\r\na=ice-pwd:\S+/);
  assert.notEqual(restart.headers.get('etag'), made.etag);
  // The old ETag is stale now.
  const stale = await http(server, 'PATCH', made.location, {
    bearer: publisher, type: 'application/trickle-ice-sdpfrag', body: 'a=mid:0\r\n', headers: { 'if-match': made.etag },
  });
  assert.equal(stale.status, 412, stale.text);
  const wrongType = await http(server, 'PATCH', made.location, { bearer: publisher, type: 'application/sdp', body: 'v=0' });
  assert.equal(wrongType.status, 415);
  const someoneElse = await http(server, 'PATCH', made.location, {
    bearer: await token(room, 'mallory'), type: 'application/trickle-ice-sdpfrag', body: 'a=mid:0\r\n',
  });
  assert.equal(someoneElse.status, 403);
  const unknown = await http(server, 'PATCH', '/whip/WHIP_nope', { bearer: publisher, type: 'application/trickle-ice-sdpfrag', body: 'a=mid:0\r\n' });
  assert.equal(unknown.status, 404);

  const offer = made.answer.replace(/a=setup:\w+/g, 'a=setup:actpass'); // any SDP text for the refusals below
  const post = (path, opts) => http(server, 'POST', path, { type: 'application/sdp', body: offer, ...opts });
  const problem = async (reply, status, words) => {
    assert.equal(reply.status, status, reply.text);
    assert.equal(reply.headers.get('content-type'), 'application/problem+json');
    for (const w of words) assert.match(reply.json().detail, new RegExp(w, 'i'));
  };
  await problem(await post('/whip', {}), 401, ['Authorization: Bearer']);
  await problem(await post('/whip', { bearer: 'not-a-jwt' }), 401, []);
  await problem(await post('/whip', { bearer: await token(room, 'viewer-only', { canPublish: false }) }), 403, ['canPublish']);
  await problem(await post('/whep', { bearer: await token(room, 'deaf', { canSubscribe: false }) }), 403, ['canSubscribe']);
  await problem(await http(server, 'POST', '/whip', { bearer: publisher, type: 'text/plain', body: offer }), 415, ['application/sdp']);
  await problem(await http(server, 'POST', '/whip', { bearer: publisher, type: 'application/sdp', body: 'hello' }), 400, ['v=0']);
  const pcmuOnly = [
    'v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0',
    'a=ice-ufrag:abcd', 'a=ice-pwd:0123456789abcdef012345', 'a=fingerprint:sha-256 00:11', 'a=setup:actpass',
    'm=audio 9 UDP/TLS/RTP/SAVPF 0', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly', 'a=rtpmap:0 PCMU/8000', '',
  ].join('\r\n');
  await problem(await http(server, 'POST', '/whip', { bearer: await token(room, 'pcmu'), type: 'application/sdp', body: pcmuOnly }), 406, ['pcmu', 'opus']);

  // OPTIONS on the endpoint, and a CORS preflight from another origin.
  const options = await http(server, 'OPTIONS', '/whip');
  assert.equal(options.status, 204);
  assert.equal(options.headers.get('accept-post'), 'application/sdp');
  const preflight = await http(server, 'OPTIONS', '/whep', {
    headers: { origin: 'https://player.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  assert.ok(preflight.status < 300, `preflight ${preflight.status}`);
  assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://player.example');
  const exposed = (await post('/whip', { headers: { origin: 'https://player.example' } })).headers.get('access-control-expose-headers') ?? '';
  assert.match(exposed.toLowerCase(), /location/);
  assert.match(exposed.toLowerCase(), /etag/);
}, { extraArgs: ['--cors-origin', 'https://player.example'] }));

test('configured ICE servers are announced as Link headers; a full room answers 503 with Retry-After', { timeout: 60_000 }, () => withServer(async (server, open) => {
  const room = roomId('full');
  const first = await open('first');
  const ok = await whipInPage(first, server, { kind: 'whip', bearer: await token(room, 'one') });
  assert.equal(ok.status, 201, ok.error);
  assert.equal(ok.link, '<stun:stun.example.net:3478>; rel="ice-server", '
    + '<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="user"; credential="pw"; credential-type="password"');
  const second = await open('second');
  const full = await whipInPage(second, server, { kind: 'whip', bearer: await token(room, 'two') });
  assert.equal(full.status, 503, full.error);
  assert.match(full.error, /full/);
  const direct = await http(server, 'POST', '/whip', {
    bearer: await token(room, 'three'), type: 'application/sdp', body: (await first.page.evaluate(() => window.whipPc.localDescription.sdp)),
  });
  assert.equal(direct.status, 503);
  assert.equal(direct.headers.get('retry-after'), '5');
}, {
  extraArgs: ['--max-participants', '1', '--ice-server', 'stun:stun.example.net:3478',
    '--ice-server', 'user:pw@turn:turn.example.net:3478?transport=udp'],
}));
