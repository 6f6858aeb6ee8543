// LiveKit Agents against Switchboard: a worker built with `livekit-agents`
// (tests/interop/agent_worker.py, no speech or model plugins) registers over /agent and is
// dispatched into rooms — automatically when a room starts, through AgentDispatchService
// (livekit-server-sdk's AgentDispatchClient), and by a join token's roomConfig. The agent
// joins as a participant of kind AGENT, hears the browser's microphone, and sends it a
// data message and a transcription.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  AccessToken, AgentDispatchClient, RoomAgentDispatch, RoomConfiguration, RoomServiceClient,
} from 'livekit-server-sdk';
import { launchBrowser } from './support/browser.mjs';
import { INTEROP, ensureInteropDeps } from './support/interop.mjs';
import { jsonlProcess } from './support/jsonl-process.mjs';
import { REPO_ROOT, startServer } from './support/server.mjs';

const AGENTS_PY = join(REPO_ROOT, '.venv-agents/bin/python');
const JOIN_MS = 15_000;
/** livekit.JobStatus.JS_SUCCESS (the enum lives in @livekit/protocol, not a dependency of ours). */
const JS_SUCCESS = 2;

let browser;
before(async () => {
  await ensureInteropDeps();
  browser = await launchBrowser();
}, { timeout: 15 * 60_000 });
after(async () => { await browser?.close(); });

const roomId = (what) => `agents-${what}-${randomBytes(4).toString('hex')}`;

/** A fresh server and a worker registered with it as `agentName` ('' for automatic dispatch). */
function scenario(name, agentName, body) {
  test(name, { timeout: 150_000 }, async () => {
    const server = await startServer();
    const pages = [];
    const worker = jsonlProcess(`agent worker "${agentName}"`, AGENTS_PY, [join(INTEROP, 'agent_worker.py'), agentName], {
      env: {
        LIVEKIT_URL: server.url.replace(/^http/, 'ws'), LIVEKIT_API_KEY: 'devkey', LIVEKIT_API_SECRET: 'secret',
      },
    });
    try {
      await worker.waitFor('registered', 60_000);
      const open = async (room, identity, configure = () => {}) => {
        const at = new AccessToken('devkey', 'secret', { identity });
        at.addGrant({ room, roomJoin: true });
        configure(at);
        const page = await browser.openDemo(identity);
        pages.push(page);
        await page.open(server.url, { url: server.url.replace(/^http/, 'ws'), token: await at.toJwt(), autojoin: '1' });
        await page.joined(JOIN_MS);
        return page;
      };
      await body({ server, worker, open });
    } catch (err) {
      console.error(server.logTail(80));
      console.error(worker.describe());
      for (const page of pages) console.error(await page.describe(`agents-${page.label}`));
      throw err;
    } finally {
      // The agent ends its job when the browser it serves leaves; then the worker stops.
      for (const page of pages) await page.close();
      await worker.stop(10_000);
      await server.stop();
    }
  });
}

/** The agent's job ran in `room`: it joined as an AGENT, heard `page`, and `page` got its transcription. */
async function agentServed(worker, page, room) {
  const job = await worker.waitFor('job', 30_000);
  assert.equal(job.room, room);
  const connected = await worker.waitFor('connected', 30_000);
  assert.equal(connected.kind, 4, 'the agent is told it is of kind AGENT');
  const agent = connected.identity;
  await page.until('the browser sees the agent as an agent', (id) => window.demo.room.remoteParticipants.get(id)?.isAgent === true, agent, 30_000);
  const heard = await worker.waitFor('heard', 30_000);
  assert.equal(heard.participant, page.identity, 'the agent heard the browser');
  await worker.waitFor('published');
  await page.until('the agent\'s transcription arrives', (text) => window.demo.transcripts.some((t) => t.text === text && t.final), `${page.identity} was heard`, 15_000);
  return { job, agent };
}

/** Polls ListDispatch until `check(dispatches)` holds. */
async function dispatchesUntil(client, room, what, check) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const dispatches = await client.listDispatch(room);
    if (check(dispatches)) return dispatches;
    if (Date.now() > deadline) throw new Error(`${what}: not within 15 s; dispatches ${JSON.stringify(dispatches)}`);
    await new Promise((res) => { setTimeout(res, 200); });
  }
}

scenario('a worker without an agent name is dispatched into every room that starts; its agent is recorded like any participant', '', async ({ server, worker, open }) => {
  const room = roomId('auto');
  const page = await open(room, 'human');
  const { agent } = await agentServed(worker, page, room);

  const admin = new AccessToken('devkey', 'secret', { identity: 'ops' });
  admin.addGrant({ room, roomAdmin: true, roomList: true });
  const headers = { authorization: `Bearer ${await admin.toJwt()}` };
  const deadline = Date.now() + 15_000;
  let joined = [];
  while (!joined.includes(agent)) {
    assert.ok(Date.now() < deadline, `the agent's join was not recorded; recorded: ${joined}`);
    const resp = await fetch(`${server.url}/v1/rooms/${room}/events?limit=1000`, { headers });
    joined = (await resp.json()).events.filter((e) => e.kind === 'participant_joined').map((e) => e.payload.participant.identity);
    if (!joined.includes(agent)) await new Promise((res) => { setTimeout(res, 200); });
  }
});

scenario('AgentDispatchService: a named agent is dispatched into a live room on request, its job is reported, and the dispatch can be deleted', 'notes', async ({ server, worker, open }) => {
  const room = roomId('explicit');
  const page = await open(room, 'human');
  const dispatcher = new AgentDispatchClient(server.url, 'devkey', 'secret');
  const created = await dispatcher.createDispatch(room, 'notes', { metadata: '{"task":"notes"}' });
  assert.match(created.id, /^AD_/);
  const { job } = await agentServed(worker, page, room);
  assert.equal(job.metadata, '{"task":"notes"}');
  assert.equal(job.dispatch_id, created.id);

  // The browser leaves, the agent ends its job, the worker reports it: ListDispatch shows
  // it ended well.
  await page.close();
  const [listed] = await dispatchesUntil(dispatcher, room, 'the job is reported done',
    (ds) => ds.length === 1 && ds[0].state?.jobs?.[0]?.state?.status === JS_SUCCESS);
  assert.equal(listed.id, created.id);
  assert.equal(listed.state.jobs[0].id, job.job_id);

  await dispatcher.deleteDispatch(created.id, room);
  assert.deepEqual(await dispatcher.listDispatch(room), []);
  await assert.rejects(dispatcher.deleteDispatch(created.id, room), /AD_/);
});

scenario('a join token\'s roomConfig dispatches a named agent when its join starts the room', 'notes', async ({ worker, open }) => {
  const room = roomId('token');
  const page = await open(room, 'human', (at) => {
    at.roomConfig = new RoomConfiguration({ agents: [new RoomAgentDispatch({ agentName: 'notes', metadata: 'from the token' })] });
  });
  const { job } = await agentServed(worker, page, room);
  assert.equal(job.metadata, 'from the token');
});

scenario('a room created through RoomService gets the automatic agent before anyone joins', '', async ({ server, worker, open }) => {
  const room = roomId('created');
  await new RoomServiceClient(server.url, 'devkey', 'secret').createRoom({ name: room });
  const connected = await worker.waitFor('connected', 30_000);
  assert.equal(connected.kind, 4, 'the agent joined as an AGENT');
  assert.equal((await worker.waitFor('job')).room, room, 'dispatched when the room was created');
  const page = await open(room, 'human');
  await agentServed(worker, page, room);
});


scenario('a room created through RoomService with agents dispatches those named agents at once', 'notes', async ({ server, worker, open }) => {
  const room = roomId('created-named');
  await new RoomServiceClient(server.url, 'devkey', 'secret').createRoom({
    name: room, agents: [new RoomAgentDispatch({ agentName: 'notes', metadata: 'from CreateRoom' })],
  });
  const job = await worker.waitFor('job', 30_000);
  assert.equal(job.room, room, 'dispatched when the room was created');
  assert.equal(job.metadata, 'from CreateRoom');
  const page = await open(room, 'human');
  await agentServed(worker, page, room);
});
