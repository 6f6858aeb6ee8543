// Several nodes (issue 21): three `switchboard serve` processes on loopback, one fresh
// PostgreSQL database, the NATS at 127.0.0.1:4222 (a subject prefix of the test's own), and
// a webhook receiver of the test's own. Chromium participants join one room through
// different nodes and meet on the node the room was placed on; livekit-server-sdk gets the
// same rooms and participants from every node. Then the room's node is killed with
// SIGKILL: both browsers reconnect on their own (livekit-client), the room opens on a live
// node, and they decode each other again; the webhook receiver gets every event once, in
// order per room. Needs PostgreSQL (psql), NATS, Chromium.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { test } from 'node:test';
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 30_000;
const POSTGRES = process.env.SWITCHBOARD_TEST_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/test';
// A dead node's rooms are free once its lease lapses: the node timeout (lease TTL) here.
const TIMING = ['--cluster-heartbeat-interval', '1s', '--cluster-node-timeout', '3s'];

function psql(sql) {
  return execFileSync('psql', [POSTGRES, '-v', 'ON_ERROR_STOP=1', '-Atc', sql], { encoding: 'utf8' }).trim();
}

/** A database of the test's own; `drop()` removes it. */
function createDatabase() {
  const name = `cluster_${randomBytes(6).toString('hex')}`;
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(POSTGRES);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    query: (sql) => execFileSync('psql', [url.toString(), '-v', 'ON_ERROR_STOP=1', '-Atc', sql], { encoding: 'utf8' }).trim(),
    drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

/** Counts webhook deliveries: every body, in arrival order. */
async function startReceiver() {
  const received = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try { received.push(JSON.parse(Buffer.concat(chunks).toString('utf8'))); } catch { received.push({ unparsable: true }); }
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    received,
    close: () => new Promise((res) => { server.closeAllConnections(); server.close(res); }),
  };
}

async function token(room, identity) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ room, roomJoin: true, canPublish: true, canSubscribe: true });
  return at.toJwt();
}

const wsOf = (node) => node.url.replace(/^http/, 'ws');

async function startCluster() {
  const cluster = { db: createDatabase(), nodes: {}, browsers: [], pages: [], receiver: await startReceiver() };
  const subjects = `cluster${randomBytes(4).toString('hex')}`;
  try {
    for (const id of ['node-a', 'node-b', 'node-c']) {
      cluster.nodes[id] = await startServer({
        extraArgs: ['--database-url', cluster.db.url, '--node-id', id, ...TIMING,
          '--webhook-url', cluster.receiver.url,
          '--nats-url', 'nats://127.0.0.1:4222', '--nats-subject-prefix', subjects],
      });
    }
  } catch (e) {
    await stopCluster(cluster, e);
    throw e;
  }
  return cluster;
}

async function stopCluster(cluster, err = null) {
  for (const [id, node] of Object.entries(cluster.nodes)) {
    if (err) console.error(`--- ${id} ---\n${node.logTail(Number(process.env.LOG_TAIL ?? 60))}`);
  }
  for (const page of cluster.pages) {
    if (err) console.error(await page.describe(`cluster-${page.label}`));
    await page.close();
  }
  for (const browser of cluster.browsers) await browser.close();
  for (const node of Object.values(cluster.nodes)) await node.stop();
  await cluster.receiver.close();
  cluster.db.drop();
}

/** Opens the demo page on `node` and joins `room` through that node's own URL. */
async function joinThrough(cluster, node, room, name) {
  const browser = await launchBrowser();
  cluster.browsers.push(browser);
  const page = await browser.openDemo(name);
  cluster.pages.push(page);
  await page.open(node.url, { autojoin: '1', url: wsOf(node), token: await token(room, name.toLowerCase()) });
  await page.joined(JOIN_MS);
  return page;
}

/** What every node's RoomService says about `room`: node → {rooms, participants}. */
async function viewsOf(cluster, room) {
  const views = {};
  for (const [id, node] of Object.entries(cluster.nodes)) {
    if (node.exit) continue;
    const svc = new RoomServiceClient(node.url, 'devkey', 'secret');
    const rooms = (await svc.listRooms()).map((r) => `${r.name}:${r.numParticipants}`).sort();
    const participants = (await svc.listParticipants(room)).map((p) => p.identity).sort();
    views[id] = { rooms, participants };
  }
  return views;
}

test('three nodes: browsers meet through different nodes, every node answers alike, and the room survives its node', { timeout: 240_000 }, async () => {
  const cluster = await startCluster();
  try {
    const room = `stage-${randomBytes(3).toString('hex')}`;
    const { 'node-a': a, 'node-b': b, 'node-c': c } = cluster.nodes;
    // Every node is empty: the new room goes to the least loaded by id, node-a, which
    // neither browser talks to; their signaling is relayed through B and C.
    const ann = await joinThrough(cluster, b, room, 'Ann');
    const bo = await joinThrough(cluster, c, room, 'Bo');
    await ann.mediaFrom([bo.identity], JOIN_MS);
    await bo.mediaFrom([ann.identity], JOIN_MS);
    assert.equal(cluster.db.query(`SELECT node_id FROM room_leases WHERE room_id = '${room}'`), 'node-a');
    const servedBy = cluster.db.query(`SELECT string_agg(DISTINCT node_id, ',') FROM connections WHERE room_id = '${room}' AND left_at IS NULL`);
    assert.equal(servedBy, 'node-a', 'both are served by the room\'s node');

    // livekit-server-sdk gets the same answer from every node.
    const views = await viewsOf(cluster, room);
    for (const [id, view] of Object.entries(views)) {
      assert.deepEqual(view, views['node-a'], `${id} answers as node-a does: ${JSON.stringify(views)}`);
    }
    assert.deepEqual(views['node-a'].participants, ['ann', 'bo']);

    // The room's node dies.
    const fromBo = await ann.framesFrom(bo.identity);
    const fromAnn = await bo.framesFrom(ann.identity);
    for (const page of [ann, bo]) {
      await page.page.evaluate(() => {
        window.reconnectedAt = null;
        for (const name of ['reconnected', 'connected']) {
          window.demo.room.on(name, () => { window.reconnectedAt ??= Date.now(); });
        }
        window.demo.room.on('signalReconnecting', () => { window.reconnectingAt ??= Date.now(); });
        window.demo.room.on('reconnecting', () => { window.reconnectingAt ??= Date.now(); });
      });
    }
    const eventsBefore = cluster.receiver.received.length;
    await a.kill();
    const killed = Date.now();
    const [annBack, boBack] = await Promise.all([
      ann.decodesAgain(bo.identity, fromBo, 10, 60_000),
      bo.decodesAgain(ann.identity, fromAnn, 10, 60_000),
    ]);
    const back = Math.max(annBack, boBack);
    const reconnected = await Promise.all([ann, bo].map((p) => p.page.evaluate(() => window.reconnectedAt)));
    const newNode = cluster.db.query(`SELECT node_id FROM room_leases WHERE room_id = '${room}'`);
    assert.ok(['node-b', 'node-c'].includes(newNode), `the room is on a live node: ${newNode}`);
    // The call is back when the last of the two is back: measured from the later reconnect.
    assert.ok(reconnected.every((at) => at !== null), `both clients reconnected: ${reconnected}`);
    const lastReconnect = Math.max(...reconnected);
    console.log(`failover: both decode each other ${back - killed} ms after the kill `
      + `(Ann ${annBack - killed} ms, Bo ${boBack - killed} ms), ${back - lastReconnect} ms after the `
      + `later client reconnected (Ann ${reconnected[0] - killed} ms, Bo ${reconnected[1] - killed} ms after `
      + `the kill); room now on ${newNode}`);
    assert.ok(back - lastReconnect <= 5_000, `media back within 5 s of the clients reconnecting: ${back - lastReconnect} ms`);

    // Events: every one delivered once, in order per room, before and after the kill.
    await ann.page.evaluate(() => window.demo.room.disconnect());
    const deadline = Date.now() + 20_000;
    const isLeft = (e) => e.event === 'participant_left' && e.participant?.identity === 'ann';
    while (!cluster.receiver.received.slice(eventsBefore).some(isLeft)) {
      assert.ok(Date.now() < deadline, 'Ann\'s leave after the failover is delivered');
      await delay(200);
    }
    const ids = cluster.receiver.received.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, `no event twice: ${ids.join(' ')}`);
    const seqOf = (e) => Number(String(e.id).replace(/^EV_/, ''));
    const byRoom = new Map();
    for (const e of cluster.receiver.received) {
      const name = e.room?.name ?? '';
      const last = byRoom.get(name) ?? -1;
      assert.ok(seqOf(e) > last, `room ${name}: event ${e.id} (${e.event}) after ${last}`);
      byRoom.set(name, seqOf(e));
    }
    const joined = cluster.receiver.received.filter((e) => e.event === 'participant_joined').map((e) => e.participant?.identity);
    assert.ok(joined.filter((i) => i === 'ann').length >= 2, `Ann joined before and after the failover: ${joined}`);
    const inDb = Number(cluster.db.query('SELECT count(*) FROM events'));
    console.log(`webhook: ${ids.length} deliveries, ${new Set(ids).size} distinct events; ${inDb} events in the log`);
  } catch (e) {
    await stopCluster(cluster, e);
    throw e;
  }
  await stopCluster(cluster);
});
