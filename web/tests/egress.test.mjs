// Egress with real media: headless Chromium publishes its fake camera and microphone through
// the unmodified livekit-client (the demo page); Switchboard records or restreams it; Debian's
// ffprobe/ffmpeg read what came out. Needs a built binary (`cargo build`) and ffmpeg.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { AccessToken } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const run = promisify(execFile);
const JOIN_MS = 20_000;
/** How long a recording runs: the acceptance test asks for 10 s. */
const RECORD_MS = 10_000;

let browser;
before(async () => {
  for (const tool of ['/usr/bin/ffprobe', '/usr/bin/ffmpeg']) {
    if (!existsSync(tool)) throw new Error(`${tool} is missing: apt-get install -y ffmpeg`);
  }
  browser = await launchBrowser();
});
after(async () => { await browser?.close(); });

const roomId = (what) => `eg-${what}-${randomBytes(4).toString('hex')}`;

/** A token for the /v1 API with the grants egress needs. */
async function adminToken(room) {
  const at = new AccessToken('devkey', 'secret', { identity: 'ops' });
  at.addGrant({ room, roomAdmin: true, roomRecord: true, roomList: true });
  return at.toJwt();
}

function api(server, token) {
  const call = async (method, path, body) => {
    const resp = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    return { status: resp.status, body: text ? JSON.parse(text) : null, text };
  };
  return {
    post: (path, body) => call('POST', path, body ?? {}),
    get: (path) => call('GET', path),
    /** Polls GET /v1/egress/{id} until `check(egress)` holds. */
    async egressUntil(id, what, check, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last;
      while (Date.now() < deadline) {
        last = (await call('GET', `/v1/egress/${id}`)).body?.egress;
        if (last && check(last)) return last;
        await delay(100);
      }
      throw new Error(`egress ${id} never became ${what}; last: ${JSON.stringify(last)}`);
    },
  };
}

/** Opens the demo page publishing camera and microphone; resolves once both are published. */
async function publisher(server, room, name, params = {}) {
  const page = await browser.openDemo(name);
  await page.open(server.url, { room, name, autojoin: '1', ...params });
  await page.joined(JOIN_MS);
  await page.until('publishes camera and microphone', () => {
    const pubs = [...window.demo.room.localParticipant.trackPublications.values()];
    return pubs.some((p) => p.kind === 'video' && p.track) && pubs.some((p) => p.kind === 'audio' && p.track);
  }, undefined, JOIN_MS);
  return page;
}

async function ffprobe(file) {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_streams', '-show_format', '-of', 'json', file]);
  return JSON.parse(stdout);
}

/**
 * Decodes every frame; returns ffmpeg's error output (empty when clean) and its exit code.
 * WebRTC video has a variable frame rate: `-enc_time_base -1` keeps the file's millisecond
 * time base instead of ffmpeg's guess of 1/fps, which would make frames closer than one
 * nominal frame interval collide in the null muxer.
 */
async function decodeAll(file) {
  try {
    const { stderr } = await run('ffmpeg', ['-v', 'error', '-i', file, '-enc_time_base', '-1', '-f', 'null', '-']);
    return { code: 0, stderr };
  } catch (e) {
    return { code: e.code, stderr: e.stderr };
  }
}

async function countVideoFrames(file) {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
    '-show_entries', 'stream=nb_read_frames', '-of', 'csv=p=0', file]);
  return Number.parseInt(stdout.trim(), 10);
}

/** Runs `body` against a fresh server; on failure prints its log tail. */
async function withServer(options, body) {
  const server = await startServer(options);
  const pages = [];
  try {
    await body(server, pages);
  } catch (err) {
    console.error(server.logTail(80));
    for (const page of pages) console.error(await page.describe(`egress-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    await server.stop();
  }
}

test('a room egress records a browser\'s camera and microphone into one WebM that ffmpeg decodes', { timeout: 120_000 }, () => withServer({}, async (server, pages) => {
  const room = roomId('room');
  pages.push(await publisher(server, room, 'Alice'));
  const http = api(server, await adminToken(room));

  // The recording covers the time from the request to the stop (frames gathered before the
  // file's header is written are kept).
  const from = Date.now();
  const started = await http.post('/v1/egress', { room_id: room });
  assert.equal(started.status, 201, started.text);
  const id = started.body.egress.egress_id;
  assert.equal(started.body.egress.kind, 'room');
  await http.egressUntil(id, 'active', (e) => e.status === 'active');
  await delay(RECORD_MS);
  const stopped = await http.post(`/v1/egress/${id}/stop`);
  const wall = (Date.now() - from) / 1000;
  assert.equal(stopped.status, 200, stopped.text);
  const done = await http.egressUntil(id, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(done.status, 'complete', JSON.stringify(done));
  // Stopping again changes nothing.
  const again = await http.post(`/v1/egress/${id}/stop`);
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.egress.status, 'complete');

  const [file] = done.output.result.files;
  assert.match(file.path, new RegExp(`${room}--nosession--${id}\\.webm$`));
  assert.equal(statSync(file.path).size, file.bytes, 'the recorded size is the file size');
  const probe = await ffprobe(file.path);
  const codecs = probe.streams.map((s) => s.codec_name).sort();
  assert.deepEqual(codecs, ['opus', 'vp8'], JSON.stringify(probe.streams));
  const duration = Number(probe.format.duration);
  assert.ok(Math.abs(duration - wall) <= wall * 0.1,
    `file lasts ${duration} s, recorded for ${wall.toFixed(2)} s of wall time`);
  const decoded = await decodeAll(file.path);
  assert.deepEqual(decoded, { code: 0, stderr: '' }, 'ffmpeg decodes every frame without error');
  const frames = await countVideoFrames(file.path);
  assert.ok(frames >= wall * 10, `${frames} video frames in ${wall} s`);
}));

test('going live records the session: PUBLISHING → LIVE on first media, ENDING → STOPPED when the file is final', { timeout: 120_000 }, () => withServer({}, async (server, pages) => {
  const room = roomId('live');
  // roomAdmin makes Alice the host, so a READY session opens for her.
  const host = new AccessToken('devkey', 'secret', { identity: 'alice', name: 'Alice' });
  host.addGrant({ room, roomJoin: true, roomAdmin: true, canPublish: true, canSubscribe: true });
  pages.push(await publisher(server, room, 'Alice', { url: server.url.replace(/^http/, 'ws'), token: await host.toJwt() }));
  const http = api(server, await adminToken(room));
  const sessionId = await (async () => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const list = (await http.get(`/v1/sessions?room_id=${room}`)).body?.sessions ?? [];
      const ready = list.find((s) => s.state === 'READY');
      if (ready) return ready.session_id;
      await delay(100);
    }
    throw new Error('no READY session opened for the host');
  })();
  const live = await http.post(`/v1/sessions/${sessionId}/live`);
  assert.equal(live.status, 200, live.text);
  const id = live.body.egress.egress_id;
  await http.egressUntil(id, 'active', (e) => e.status === 'active');
  const session = async () => (await http.get(`/v1/sessions/${sessionId}`)).body.session;
  assert.equal((await session()).state, 'LIVE');
  await delay(3_000);
  const end = await http.post(`/v1/sessions/${sessionId}/end`);
  assert.equal(end.status, 200, end.text);
  const done = await http.egressUntil(id, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(done.status, 'complete', JSON.stringify(done));
  // The session follows the egress row in the same report.
  const deadline = Date.now() + 5_000;
  while ((await session()).state !== 'STOPPED' && Date.now() < deadline) await delay(50);
  assert.equal((await session()).state, 'STOPPED');
  const [file] = done.output.result.files;
  assert.match(file.path, new RegExp(`${room}--${sessionId}--${id}\\.webm$`));
  const decoded = await decodeAll(file.path);
  assert.deepEqual(decoded, { code: 0, stderr: '' });
  // The host is still here: a new READY session for the same room.
  const sessions = (await http.get(`/v1/sessions?room_id=${room}`)).body.sessions;
  assert.ok(sessions.some((s) => s.state === 'READY' && s.session_id !== sessionId), JSON.stringify(sessions));
}));

test('a publisher who leaves and rejoins continues in the same room file; a newcomer starts its next part', { timeout: 150_000 }, () => withServer({}, async (server, pages) => {
  const room = roomId('rejoin');
  const ws = server.url.replace(/^http/, 'ws');
  const tokenFor = async (identity) => {
    const at = new AccessToken('devkey', 'secret', { identity, name: identity });
    at.addGrant({ room, roomJoin: true, canPublish: true, canSubscribe: true });
    return at.toJwt();
  };
  const kaiToken = await tokenFor('kai');
  const first = await publisher(server, room, 'Kai', { url: ws, token: kaiToken });
  pages.push(first);
  const http = api(server, await adminToken(room));
  const started = await http.post('/v1/egress', { room_id: room });
  assert.equal(started.status, 201, started.text);
  const id = started.body.egress.egress_id;
  await http.egressUntil(id, 'active', (e) => e.status === 'active');
  await delay(3_000);
  await first.close();
  pages.splice(pages.indexOf(first), 1);
  await delay(1_000);
  pages.push(await publisher(server, room, 'Kai again', { url: ws, token: kaiToken }));
  await delay(3_000);
  // Someone new after the file's header was written: the recording's next part.
  pages.push(await publisher(server, room, 'Lea', { url: ws, token: await tokenFor('lea') }));
  await delay(4_000);
  await http.post(`/v1/egress/${id}/stop`);
  const done = await http.egressUntil(id, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(done.status, 'complete', JSON.stringify(done));
  const { files } = done.output.result;
  assert.equal(files.length, 2, JSON.stringify(files));
  const [main, part2] = files;
  assert.deepEqual(main.tracks.map((t) => t.identity), ['kai', 'kai']);
  for (const track of main.tracks) {
    assert.equal(track.track_sids.length, 2, `both of Kai's publications wrote into ${JSON.stringify(track)}`);
  }
  assert.match(part2.path, /--part2\.webm$/);
  assert.deepEqual(part2.tracks.map((t) => t.identity).sort(), ['kai', 'kai', 'lea', 'lea']);
  for (const file of files) {
    assert.deepEqual(await decodeAll(file.path), { code: 0, stderr: '' }, file.path);
  }
  const probe = await ffprobe(main.path);
  assert.equal(probe.streams.length, 2);
  // Kai was gone for about a second: the file spans both publications.
  assert.ok(Number(probe.format.duration) >= 6, `main part lasts ${probe.format.duration} s`);
}));

test('track egress writes an H.264 camera track to Matroska and a microphone to Ogg Opus, without transcoding', { timeout: 120_000 }, () => withServer({}, async (server, pages) => {
  const room = roomId('h264');
  const page = await publisher(server, room, 'Hiro', { codec: 'h264' });
  pages.push(page);
  const http = api(server, await adminToken(room));
  const trackSid = await page.page.evaluate(() => [...window.demo.room.localParticipant.trackPublications.values()]
    .find((p) => p.kind === 'video').trackSid);
  const started = await http.post('/v1/egress', { room_id: room, track_sid: trackSid });
  assert.equal(started.status, 201, started.text);
  const id = started.body.egress.egress_id;
  assert.equal(started.body.egress.kind, 'track');
  await http.egressUntil(id, 'active', (e) => e.status === 'active');
  await delay(4_000);
  await http.post(`/v1/egress/${id}/stop`);
  const done = await http.egressUntil(id, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(done.status, 'complete', JSON.stringify(done));
  const [file] = done.output.result.files;
  assert.match(file.path, /\.mkv$/);
  const probe = await ffprobe(file.path);
  assert.deepEqual(probe.streams.map((s) => s.codec_name), ['h264']);
  assert.deepEqual(await decodeAll(file.path), { code: 0, stderr: '' });

  // The microphone alone: Ogg Opus.
  const micSid = await page.page.evaluate(() => [...window.demo.room.localParticipant.trackPublications.values()]
    .find((p) => p.kind === 'audio').trackSid);
  const mic = await http.post('/v1/egress', { room_id: room, track_sid: micSid });
  assert.equal(mic.status, 201, mic.text);
  const micId = mic.body.egress.egress_id;
  await http.egressUntil(micId, 'active', (e) => e.status === 'active');
  await delay(3_000);
  await http.post(`/v1/egress/${micId}/stop`);
  const micDone = await http.egressUntil(micId, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(micDone.status, 'complete', JSON.stringify(micDone));
  const [ogg] = micDone.output.result.files;
  assert.match(ogg.path, /\.ogg$/);
  const oggProbe = await ffprobe(ogg.path);
  assert.equal(oggProbe.format.format_name, 'ogg');
  assert.deepEqual(oggProbe.streams.map((s) => s.codec_name), ['opus']);
  assert.ok(Number(oggProbe.format.duration) > 2, `Ogg lasts ${oggProbe.format.duration} s`);
  assert.deepEqual(await decodeAll(ogg.path), { code: 0, stderr: '' });

  // A track that does not exist is refused.
  const missing = await http.post('/v1/egress', { room_id: room, track_sid: 'TR_nope' });
  assert.equal(missing.status, 404, missing.text);
  assert.match(missing.body.detail, /TR_nope/);
}));

test('an RTP egress restreams a camera track that ffmpeg decodes from the generated SDP', { timeout: 120_000 }, () => withServer({}, async (server, pages) => {
  const room = roomId('rtp');
  const page = await publisher(server, room, 'Rita');
  pages.push(page);
  const http = api(server, await adminToken(room));
  const trackSid = await page.page.evaluate(() => [...window.demo.room.localParticipant.trackPublications.values()]
    .find((p) => p.kind === 'video').trackSid);
  // A free even UDP port (RTP), found by binding and releasing it.
  const port = await new Promise((res) => {
    const sock = createSocket('udp4');
    sock.bind(0, '127.0.0.1', () => { const p = sock.address().port; sock.close(() => res(p - (p % 2))); });
  });
  const started = await http.post('/v1/egress', {
    room_id: room, track_sid: trackSid, output: { type: 'rtp', host: '127.0.0.1', port },
  });
  assert.equal(started.status, 201, started.text);
  const id = started.body.egress.egress_id;
  assert.equal(started.body.egress.kind, 'rtp');
  const active = await http.egressUntil(id, 'active with its SDP', (e) => e.status === 'active' && e.output.sdp);
  assert.match(active.output.sdp, new RegExp(`m=video ${port} RTP/AVP 96`));
  const dir = await mkdtemp(join(tmpdir(), 'switchboard-rtp-'));
  try {
    const sdpFile = join(dir, 'out.sdp');
    await writeFile(sdpFile, active.output.sdp);
    const ffmpeg = spawn('ffmpeg', ['-v', 'error', '-protocol_whitelist', 'file,udp,rtp', '-i', sdpFile,
      '-frames:v', '30', '-f', 'null', '-'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    ffmpeg.stderr.on('data', (d) => { stderr += d; });
    const code = await Promise.race([
      new Promise((res) => ffmpeg.once('close', res)),
      delay(30_000).then(() => { ffmpeg.kill('SIGKILL'); return 'timeout'; }),
    ]);
    assert.equal(code, 0, `ffmpeg decoded 30 frames of the restream (exit ${code}): ${stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await http.post(`/v1/egress/${id}/stop`);
  const done = await http.egressUntil(id, 'complete', (e) => e.status === 'complete' || e.status === 'failed');
  assert.equal(done.status, 'complete', JSON.stringify(done));
  assert.ok(done.output.result.packets > 0);
}));

test('a server killed mid-recording leaves a playable file, and the egress is failed after restart', { timeout: 120_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'switchboard-crash-'));
  const room = roomId('crash');
  let file;
  let id;
  try {
    await withServer({ dataDir }, async (server, pages) => {
      pages.push(await publisher(server, room, 'Kai'));
      const http = api(server, await adminToken(room));
      const started = await http.post('/v1/egress', { room_id: room });
      assert.equal(started.status, 201, started.text);
      id = started.body.egress.egress_id;
      await http.egressUntil(id, 'active', (e) => e.status === 'active');
      file = join(started.body.egress.output.directory, `${room}--nosession--${id}.webm`);
      // Let a few clusters reach the disk, then crash.
      await delay(4_000);
      await server.kill();
    });
    assert.ok(existsSync(file), `${file} exists after the crash`);
    const probe = await ffprobe(file);
    assert.deepEqual(probe.streams.map((s) => s.codec_name).sort(), ['opus', 'vp8']);
    const frames = await countVideoFrames(file);
    assert.ok(frames > 30, `${frames} video frames survive the crash`);
    // Cut mid-cluster too, as a crash during a write would: still readable.
    await truncate(file, statSync(file).size - 1000);
    assert.ok(await countVideoFrames(file) > 0);

    await withServer({ dataDir }, async (server) => {
      const http = api(server, await adminToken(room));
      const row = (await http.get(`/v1/egress/${id}`)).body.egress;
      assert.equal(row.status, 'failed', JSON.stringify(row));
      assert.match(row.error, /restart/);
    });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('a full disk fails the recording with the OS error and ends its session', { timeout: 120_000 }, async () => {
  // A 512 KiB tmpfs as the egress directory fills within seconds of video.
  const mnt = await mkdtemp(join(tmpdir(), 'switchboard-full-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
  } catch (e) {
    throw new Error(`this test mounts a small tmpfs to fill the disk and needs root: ${e.stderr || e.message}`);
  }
  try {
    await withServer({ extraArgs: ['--egress-dir', mnt] }, async (server, pages) => {
      const room = roomId('full');
      const host = new AccessToken('devkey', 'secret', { identity: 'hana', name: 'Hana' });
      host.addGrant({ room, roomJoin: true, roomAdmin: true, canPublish: true, canSubscribe: true });
      pages.push(await publisher(server, room, 'Hana', { url: server.url.replace(/^http/, 'ws'), token: await host.toJwt() }));
      const http = api(server, await adminToken(room));
      let sessionId;
      const deadline = Date.now() + 10_000;
      while (!sessionId && Date.now() < deadline) {
        const list = (await http.get(`/v1/sessions?room_id=${room}`)).body?.sessions ?? [];
        sessionId = list.find((s) => s.state === 'READY')?.session_id;
        if (!sessionId) await delay(100);
      }
      assert.ok(sessionId, 'a READY session for the host');
      const live = await http.post(`/v1/sessions/${sessionId}/live`);
      assert.equal(live.status, 200, live.text);
      const id = live.body.egress.egress_id;
      const failed = await http.egressUntil(id, 'failed', (e) => e.status === 'failed' || e.status === 'complete', 60_000);
      assert.equal(failed.status, 'failed', JSON.stringify(failed));
      assert.match(failed.error, /No space left on device/);
      assert.ok(failed.output.result.packets > 0, 'it recorded until the disk was full');
      const session = (await http.get(`/v1/sessions/${sessionId}`)).body.session;
      assert.ok(['STOPPED', 'CANCELLED'].includes(session.state), `the session ended: ${session.state}`);
    });
  } finally {
    await run('umount', [mnt]).catch(() => {});
    await rm(mnt, { recursive: true, force: true });
  }
});
