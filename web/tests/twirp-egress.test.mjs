// LiveKit's own server SDK (livekit-server-sdk's EgressClient) records a Switchboard room through
// the Twirp Egress service, unchanged: a "room composite" to a file (one multi-track WebM, no
// compositing), a track egress, list and stop; and what we cannot honour is refused with a
// message. Headless Chromium publishes camera and microphone through the demo page; ffprobe
// reads the files. Needs a built binary (`cargo build`) and ffmpeg.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  DirectFileOutput, EgressClient, EgressStatus, EncodedFileOutput, StreamOutput, StreamProtocol,
} from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const run = promisify(execFile);
const API_KEY = 'devkey';
const API_SECRET = 'secret';
const JOIN_MS = 20_000;
const RECORD_MS = 4_000;

let browser;
let server;
let egress;
const pages = [];

before(async () => {
  if (!existsSync('/usr/bin/ffprobe')) throw new Error('/usr/bin/ffprobe is missing: apt-get install -y ffmpeg');
  browser = await launchBrowser();
  server = await startServer();
  egress = new EgressClient(server.url, API_KEY, API_SECRET);
});

after(async () => {
  for (const page of pages) await page.close();
  await browser?.close();
  await server?.stop();
});

const roomName = (tag) => `tw-eg-${tag}-${randomBytes(4).toString('hex')}`;

/** Runs `fn`, adding the server's log tail and the pages' state to a failure. */
async function withLog(fn) {
  try {
    await fn();
  } catch (e) {
    e.message += `\n${server.logTail(60)}`;
    for (const page of pages) console.error(await page.describe(`twirp-egress-${page.label}`));
    throw e;
  }
}

/** Opens the demo page publishing camera and microphone; resolves once both are published. */
async function publisher(room, name) {
  const page = await browser.openDemo(name);
  pages.push(page);
  await page.open(server.url, { room, name, autojoin: '1' });
  await page.joined(JOIN_MS);
  await page.until('publishes camera and microphone', () => {
    const pubs = [...window.demo.room.localParticipant.trackPublications.values()];
    return pubs.some((p) => p.kind === 'video' && p.track) && pubs.some((p) => p.kind === 'audio' && p.track);
  }, undefined, JOIN_MS);
  return page;
}

/** Polls listEgress({egressId}) until `check(info)` holds. */
async function egressUntil(egressId, what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    [last] = await egress.listEgress({ egressId });
    if (last && check(last)) return last;
    await delay(200);
  }
  throw new Error(`egress ${egressId} never became ${what}; last: ${JSON.stringify(last, (_, v) => (typeof v === 'bigint' ? `${v}` : v))}`);
}

const ended = (info) => info.status === EgressStatus.EGRESS_COMPLETE || info.status === EgressStatus.EGRESS_FAILED;

async function codecs(file) {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_streams', '-of', 'json', file]);
  return JSON.parse(stdout).streams.map((s) => s.codec_name).sort();
}

/** Expects `promise` to reject with a Twirp error of `code`; returns the error. */
async function refused(promise, code, status) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err, `expected a ${code} error, the call succeeded`);
  assert.equal(err.code, code, `${err.code}: ${err.message}`);
  assert.equal(err.status, status);
  return err;
}

test('startRoomCompositeEgress to a file → active → stopEgress → complete with a WebM ffprobe reads', { timeout: 120_000 }, () => withLog(async () => {
  const room = roomName('room');
  await publisher(room, 'Alice');

  const started = await egress.startRoomCompositeEgress(room, {
    file: new EncodedFileOutput({ filepath: 'twirp/{room_name}/meeting-{time}.mp4' }),
  });
  assert.match(started.egressId, /^eg_/);
  assert.equal(started.roomName, room);
  assert.equal(started.request.case, 'roomComposite');
  assert.equal(started.request.value.roomName, room);
  const id = started.egressId;

  const active = await egressUntil(id, 'active', (e) => e.status === EgressStatus.EGRESS_ACTIVE);
  assert.ok(active.startedAt > 0n, `startedAt ${active.startedAt}`);
  const listed = await egress.listEgress({ roomName: room, active: true });
  assert.deepEqual(listed.map((e) => e.egressId), [id], 'listEgress by room, active only');
  assert.ok((await egress.listEgress()).some((e) => e.egressId === id), 'listEgress without a filter');

  await delay(RECORD_MS);
  const stopping = await egress.stopEgress(id);
  assert.equal(stopping.egressId, id);
  assert.ok([EgressStatus.EGRESS_ENDING, EgressStatus.EGRESS_COMPLETE].includes(stopping.status),
    `status after stop: ${EgressStatus[stopping.status]}`);

  const done = await egressUntil(id, 'complete', ended);
  assert.equal(done.status, EgressStatus.EGRESS_COMPLETE, done.error);
  assert.ok(done.endedAt >= done.startedAt, 'endedAt after startedAt');
  assert.equal(done.fileResults.length, 1, 'one multi-track file');
  const [file] = done.fileResults;
  // The directory part of filepath is honoured (templates filled in); the server names the file.
  assert.match(file.filename, new RegExp(`/twirp/${room}/[^/]+\\.webm$`));
  assert.equal(BigInt(statSync(file.filename).size), file.size, 'size is the file size');
  assert.ok(file.duration > 2_000_000_000n, `duration ${file.duration} ns`);
  assert.deepEqual(await codecs(file.filename), ['opus', 'vp8']);
  assert.deepEqual((await egress.listEgress({ roomName: room, active: true })), [], 'no longer active');
}));

test('startTrackEgress on the camera track → stopEgress → complete', { timeout: 120_000 }, () => withLog(async () => {
  const room = roomName('track');
  const page = await publisher(room, 'Tara');
  const trackSid = await page.page.evaluate(() => [...window.demo.room.localParticipant.trackPublications.values()]
    .find((p) => p.kind === 'video').trackSid);

  const started = await egress.startTrackEgress(room, new DirectFileOutput({ filepath: 'tracks/{track_id}.webm' }), trackSid);
  assert.equal(started.request.case, 'track');
  assert.equal(started.request.value.trackId, trackSid);
  const id = started.egressId;
  await egressUntil(id, 'active', (e) => e.status === EgressStatus.EGRESS_ACTIVE);
  await delay(RECORD_MS / 2);
  await egress.stopEgress(id);
  const done = await egressUntil(id, 'complete', ended);
  assert.equal(done.status, EgressStatus.EGRESS_COMPLETE, done.error);
  assert.equal(done.request.case, 'track');
  assert.equal(done.request.value.trackId, trackSid);
  const [file] = done.fileResults;
  assert.match(file.filename, /\/tracks\/[^/]+\.webm$/);
  assert.deepEqual(await codecs(file.filename), ['vp8']);

  // Stopping again returns it as it is.
  const again = await egress.stopEgress(id);
  assert.equal(again.status, EgressStatus.EGRESS_COMPLETE);

  // A websocket output and an unknown track are refused.
  const ws = await refused(egress.startTrackEgress(room, 'wss://example.com/audio', trackSid), 'invalid_argument', 400);
  assert.match(ws.message, /websocket/);
  const missing = await refused(egress.startTrackEgress(room, new DirectFileOutput({ filepath: 'x' }), 'TR_nope'), 'not_found', 404);
  assert.match(missing.message, /TR_nope/);
}));

test('what cannot be honoured is refused with a message saying what is supported', { timeout: 30_000 }, () => withLog(async () => {
  const room = roomName('refuse');
  const rtmp = await refused(egress.startRoomCompositeEgress(room, {
    stream: new StreamOutput({ protocol: StreamProtocol.RTMP, urls: ['rtmp://example.com/live/key'] }),
  }), 'invalid_argument', 400);
  assert.match(rtmp.message, /stream outputs \(RTMP\/SRT\) are not supported/);
  assert.match(rtmp.message, /one file output/);

  const layout = await refused(egress.startRoomCompositeEgress(room, new EncodedFileOutput({ filepath: 'x.webm' }), 'speaker'),
    'invalid_argument', 400);
  assert.match(layout.message, /layouts are not supported/);

  const escape = await refused(egress.startRoomCompositeEgress(room, new EncodedFileOutput({ filepath: '../x/y.webm' })),
    'invalid_argument', 400);
  assert.match(escape.message, /egress directory/);

  const unknown = await refused(egress.stopEgress('eg_doesnotexist'), 'not_found', 404);
  assert.match(unknown.message, /eg_doesnotexist/);

  const web = await refused(egress.startWebEgress('https://example.com', new EncodedFileOutput({ filepath: 'x' })),
    'unimplemented', 501);
  assert.match(web.message, /StartRoomCompositeEgress/);
}));
