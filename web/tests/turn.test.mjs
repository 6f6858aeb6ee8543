// External TURN (issue 19): a real coturn shares a secret with the server (the TURN REST API
// scheme, coturn's use-auth-secret), the server mints each participant a credential of its
// own (signaling/src/turn_rest.rs) and announces it in the JoinResponse; livekit-client in
// Chromium, told to use relays only, joins and exchanges video through coturn. A credential
// whose time has passed gets no relay.
// Needs Debian's coturn (`turnserver`), Chromium and a built binary; see web/README.md.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { launchBrowser } from './support/browser.mjs';
import { createLinkPair } from './support/netns.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 20_000;
const SECRET = randomBytes(16).toString('hex');

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/** A free port on loopback (TCP, for coturn's UDP and TCP listeners alike). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** coturn on loopback with the shared secret; resolves once its UDP listener is open. */
async function startCoturn() {
  const port = await freePort();
  const args = [
    '-n', '--listening-ip', '127.0.0.1', '--listening-port', String(port), '--relay-ip', '127.0.0.1',
    '--min-port', '49200', '--max-port', '49400', '--use-auth-secret', '--static-auth-secret', SECRET,
    '--realm', 'switchboard.test', '--fingerprint', '--no-tls', '--no-dtls', '--no-cli',
    // The server it relays to is on loopback here; coturn refuses such peers unless told.
    '--allow-loopback-peers', '--log-file', 'stdout', '--simple-log', '--verbose',
  ];
  const proc = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  createInterface({ input: proc.stdout }).on('line', (l) => lines.push(l));
  createInterface({ input: proc.stderr }).on('line', (l) => lines.push(l));
  let exited = null;
  proc.once('error', (e) => { exited = `cannot start: ${e.message}; install Debian's coturn`; });
  proc.once('exit', (code) => { exited = `exited (${code})`; });
  const deadline = Date.now() + 10_000;
  while (!(await answersStun(port))) {
    if (exited || Date.now() > deadline) {
      throw new Error(`coturn (turnserver) ${exited ?? 'not answering STUN in 10 s'}:\n${lines.join('\n')}`);
    }
  }
  return {
    url: `turn:127.0.0.1:${port}?transport=udp`,
    lines,
    stop: () => new Promise((resolve) => { proc.once('exit', resolve); proc.kill('SIGTERM'); }),
  };
}

/** Whether a STUN binding request to 127.0.0.1:`port` is answered within 200 ms. */
function answersStun(port) {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    const done = (answered) => { clearTimeout(timer); socket.close(); resolve(answered); };
    const timer = setTimeout(() => done(false), 200);
    // Binding request (0x0001), no attributes, the magic cookie, a random transaction id.
    const request = Buffer.concat([Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]), randomBytes(12)]);
    socket.on('message', (m) => done(m.readUInt16BE(0) === 0x0101));
    socket.on('error', () => done(false));
    socket.send(request, port, '127.0.0.1');
  });
}

/** What a TURN REST credential for `identity` expiring at `expiry` (Unix seconds) is. */
function credential(identity, expiry) {
  const username = `${expiry}:${identity}`;
  return { username, credential: createHmac('sha1', SECRET).update(username).digest('base64') };
}

/**
 * Alice and Bob, relay-only livekit-client pages (`&relay=1`) in a new room of `server`,
 * once each decodes the other's video and hears its audio. The pages go into `pages`.
 */
async function relayOnlyCall(server, prefix, pages) {
  const room = `${prefix}-${randomBytes(4).toString('hex')}`;
  const open = async (name) => {
    const page = await browser.openDemo(name);
    pages.push(page);
    await page.open(server.url, { room, name, autojoin: '1', relay: '1' });
    await page.joined(JOIN_MS);
    return page;
  };
  const alice = await open('Alice');
  const bob = await open('Bob');
  await bob.mediaFrom([alice.identity], 30_000);
  await alice.mediaFrom([bob.identity], 30_000);
  return [alice, bob];
}

/** Relay candidates one RTCPeerConnection gathers through `server` (in the page). */
async function gatherRelays(server) {
  const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: 'relay' });
  const relays = [];
  const errors = [];
  pc.onicecandidate = (e) => { if (e.candidate?.type === 'relay') relays.push(e.candidate.candidate); };
  pc.onicecandidateerror = (e) => errors.push(e.errorCode);
  const complete = new Promise((resolve) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
  });
  pc.createDataChannel('probe');
  await pc.setLocalDescription();
  await Promise.race([complete, new Promise((resolve) => { setTimeout(resolve, 20_000); })]);
  pc.close();
  return { relays: relays.length, errors };
}

test('participants reach each other only through coturn, with the credentials the server minted', { timeout: 120_000 }, async () => {
  const coturn = await startCoturn();
  const server = await startServer({ extraArgs: ['--ice-server', coturn.url, '--turn-secret', SECRET] });
  const pages = [];
  try {
    const [alice, bob] = await relayOnlyCall(server, 'turn', pages);
    for (const [who, from] of [[bob, alice], [alice, bob]]) {
      const seen = await who.selectedPair(from.identity);
      assert.equal(seen?.local?.type, 'relay', `${who.label}'s selected pair runs through the relay: ${JSON.stringify(seen)}`);
      assert.ok(seen.framesDecoded > 0, `${who.label} decodes ${from.label}'s video: ${JSON.stringify(seen)}`);
    }
    // The server minted a credential per participant; coturn logged their allocations.
    const allocations = coturn.lines.filter((l) => /ALLOCATE processed, success/.test(l) || /session .* new, realm/.test(l));
    assert.ok(allocations.length > 0, `coturn allocated relays:\n${coturn.lines.slice(-20).join('\n')}`);
    console.log(`coturn: ${allocations.length} allocation lines, e.g. ${allocations[0]}`);

    // The same secret with an expiry in the past: coturn refuses it, so no relay; one in the
    // future (the control) gets one.
    const now = Math.floor(Date.now() / 1000);
    const expired = await bob.page.evaluate(gatherRelays, { urls: coturn.url, ...credential('late', now - 60) });
    const valid = await bob.page.evaluate(gatherRelays, { urls: coturn.url, ...credential('timely', now + 600) });
    assert.equal(expired.relays, 0, `an expired credential gets no relay: ${JSON.stringify(expired)}`);
    assert.ok(expired.errors.includes(401), `coturn answered 401: ${JSON.stringify(expired)}`);
    assert.ok(valid.relays > 0, `a current credential gets a relay: ${JSON.stringify(valid)}`);
    console.log(`expired: ${JSON.stringify(expired)}; current: ${JSON.stringify(valid)}`);
  } catch (err) {
    console.error(server.logTail(60));
    console.error(coturn.lines.slice(-40).join('\n'));
    for (const page of pages) console.error(await page.describe(`turn-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    await server.stop();
    await coturn.stop();
  }
});

/** The server's ICE-TCP port, from its "listening" log line. */
function iceTcpPort(server) {
  // eslint-disable-next-line no-control-regex
  const plain = server.stderrLines.map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''));
  for (const line of plain) {
    const m = /media_tcp=Some\([^)]*:(\d+)\)/.exec(line);
    if (m) return Number(m[1]);
  }
  throw new Error(`the server logged no ICE-TCP port:\n${plain.slice(-20).join('\n')}`);
}

/** A self-signed certificate for `ip` (a server certificate: rustls refuses one that could be a CA). */
async function selfSigned(ip) {
  const dir = await mkdtemp(join(tmpdir(), 'switchboard-turn-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=turn.switchboard.test',
    '-addext', `subjectAltName=IP:${ip}`, '-addext', 'basicConstraints=critical,CA:FALSE']);
  return { dir, cert, key };
}

/** coturn with TLS only, inside `ns` on `ip`; resolves once its TLS port accepts connections. */
async function startCoturnTls(pair, ns, ip) {
  const { dir, cert, key } = await selfSigned(ip);
  const tlsPort = 5349;
  const args = [
    'netns', 'exec', ns, 'turnserver', '-n', '--listening-ip', ip, '--listening-port', '3478',
    '--tls-listening-port', String(tlsPort), '--cert', cert, '--pkey', key, '--relay-ip', ip,
    '--min-port', '49200', '--max-port', '49400', '--use-auth-secret', '--static-auth-secret', SECRET,
    '--realm', 'switchboard.test', '--fingerprint', '--no-dtls', '--no-cli',
    '--allow-loopback-peers', '--log-file', 'stdout', '--simple-log', '--verbose',
  ];
  const proc = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  createInterface({ input: proc.stdout }).on('line', (l) => lines.push(l));
  createInterface({ input: proc.stderr }).on('line', (l) => lines.push(l));
  let exited = null;
  proc.once('exit', (code) => { exited = `exited (${code})`; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const open = await pair.exec(ns, 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${tlsPort}`).then(() => true, () => false);
    if (open) break;
    if (exited || Date.now() > deadline) {
      throw new Error(`coturn (TLS) ${exited ?? 'not listening in 10 s'}:\n${lines.slice(-30).join('\n')}`);
    }
    await delay(100);
  }
  return {
    url: `turns:${ip}:${tlsPort}?transport=tcp`,
    lines,
    stop: async () => {
      if (!exited) await new Promise((resolve) => { proc.once('exit', resolve); proc.kill('SIGTERM'); });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

for (const which of ['embedded', 'coturn']) test(`behind a firewall that drops UDP and the ICE-TCP port, a participant relays through TURN over TLS (${which})`, { timeout: 180_000 }, async () => {
  const pair = await createLinkPair();
  const browsers = [];
  const pages = [];
  let coturn = null;
  let server = null;
  let tls = null;
  try {
    if (which === 'coturn') {
      coturn = await startCoturnTls(pair, pair.serverNs, pair.serverIp);
      server = await startServer({
        netns: pair.serverNs, host: pair.serverIp, extraArgs: ['--ice-server', coturn.url, '--turn-secret', SECRET],
      });
    } else {
      // The server's own TURN server, UDP and TLS; the walled page can reach only the TLS port.
      tls = await selfSigned(pair.serverIp);
      server = await startServer({
        netns: pair.serverNs,
        host: pair.serverIp,
        extraArgs: ['--turn-udp-port', '3478', '--turn-relay-ports', '0', '--turn-tls-port', '5349',
          '--turn-cert', tls.cert, '--turn-key', tls.key],
      });
    }
    await pair.blockUdp();
    await pair.blockTcpFrom(iceTcpPort(server));
    const room = `turn-tls-${randomBytes(4).toString('hex')}`;
    const open = async (name, netns) => {
      // Chromium checks a TURN server's certificate like a website's; this one is self-signed.
      const b = await launchBrowser({ netns, args: ['--ignore-certificate-errors'] });
      browsers.push(b);
      const page = await b.openDemo(name);
      pages.push(page);
      await page.open(server.url, { room, name, autojoin: '1' });
      await page.joined(JOIN_MS);
      return page;
    };
    const stay = await open('Stay', pair.serverNs);
    const walled = await open('Walled', pair.clientNs);
    await walled.mediaFrom([stay.identity], 45_000);
    await stay.mediaFrom([walled.identity], 45_000);
    const seen = await walled.selectedPair(stay.identity);
    assert.equal(seen?.local?.type, 'relay', `the walled participant's selected pair runs through the relay: ${JSON.stringify(seen)}`);
    assert.equal(seen.local.relayProtocol, 'tls', `…reached over TLS: ${JSON.stringify(seen)}`);
    assert.ok(seen.framesDecoded > 0, `…and decodes video: ${JSON.stringify(seen)}`);
    console.log(`walled participant over TURN/TLS: ${JSON.stringify(seen)}`);
  } catch (err) {
    if (server) console.error(server.logTail(60));
    if (coturn) console.error(coturn.lines.slice(-40).join('\n'));
    for (const page of pages) console.error(await page.describe(`turn-tls-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    for (const b of browsers) await b.close();
    await server?.stop();
    await coturn?.stop();
    if (tls) await rm(tls.dir, { recursive: true, force: true });
    await pair.teardown();
  }
});

test('the embedded TURN server: relay-only participants exchange video through it', { timeout: 120_000 }, async () => {
  const server = await startServer({ extraArgs: ['--turn-udp-port', '0', '--turn-relay-ports', '0'] });
  const pages = [];
  try {
    const [alice, bob] = await relayOnlyCall(server, 'turn-embedded', pages);
    for (const [who, from] of [[bob, alice], [alice, bob]]) {
      const seen = await who.selectedPair(from.identity);
      assert.equal(seen?.local?.type, 'relay', `${who.label}'s selected pair runs through the embedded relay: ${JSON.stringify(seen)}`);
      assert.equal(seen.local.relayProtocol, 'udp', JSON.stringify(seen));
      assert.ok(seen.framesDecoded > 0, `${who.label} decodes ${from.label}'s video: ${JSON.stringify(seen)}`);
    }
    const log = server.stderrLines.join('\n');
    assert.match(log, /embedded TURN server listening/, 'the server said where its TURN server listens');
  } catch (err) {
    console.error(server.logTail(60));
    for (const page of pages) console.error(await page.describe(`turn-embedded-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    await server.stop();
  }
});
