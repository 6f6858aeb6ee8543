// A constrained link for browser tests: two network namespaces (server side, client side) joined
// by a veth pair on 127.0.x.1 / 127.0.x.2, with a tbf bandwidth cap on the server→client direction
// and random loss on the client's input (the recipe in shared/docs/TESTING.md, "Network
// impairment": this kernel has no netem). Needs root, `ip`, `tc` and `nft` (Debian: iproute2,
// nftables). Nothing here touches the machine's real interfaces: every link and rule lives in the
// namespaces this module creates, and they are removed on teardown, process exit or a signal.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

// Namespace names carry the creating pid (and its pid namespace, so that a run in a container
// with its own pids is never mistaken for a dead one), so a later run can sweep what a killed
// run (SIGKILL, where no handler runs) left behind without touching a live parallel run's.
const PREFIX = 'sbt';
const PID_NS = (() => {
  try { return /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))[1]; } catch { return '0'; }
})();
const NAME_RE = new RegExp(`^${PREFIX}-${PID_NS}-(\\d+)-[0-9a-f]+-[sc]$`);

/** Runs a command, throwing with the command line and its stderr if it fails. */
async function run(cmd, args) {
  try {
    const { stdout } = await execFileP(cmd, args, { timeout: 15_000 });
    return stdout;
  } catch (e) {
    const why = (e.stderr || '').trim() || e.message;
    throw new Error(`netns: \`${cmd} ${args.join(' ')}\` failed (exit ${e.code}): ${why}`);
  }
}

function runSync(cmd, args) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 15_000 }).toString();
  } catch {
    return ''; // teardown is best effort: the namespace may already be gone
  }
}

function pidAlive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

/** Kills every process still inside namespace `ns` (all started by this harness), then deletes it. */
function destroyNsSync(ns) {
  for (const pid of runSync('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
    try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
  }
  runSync('ip', ['netns', 'del', ns]);
}

/** Removes namespaces of ours whose creating process is dead (left by a killed run). */
export function sweepStale() {
  for (const line of runSync('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    const m = NAME_RE.exec(name);
    if (m && !pidAlive(Number(m[1]))) destroyNsSync(name);
  }
}

function checkRoot() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error('netns: network namespaces, tc and nft need root (run the test as root)');
  }
}

async function checkTools() {
  for (const [cmd, args, pkg] of [['ip', ['-V'], 'iproute2'], ['tc', ['-V'], 'iproute2'], ['nft', ['--version'], 'nftables']]) {
    await run(cmd, args).catch((e) => {
      throw new Error(`netns: \`${cmd}\` is not usable (apt-get install -y ${pkg}): ${e.message}`);
    });
  }
}

// Every live pair, for the exit and signal handlers.
const live = new Set();
let handlersInstalled = false;

function installHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => { for (const pair of live) pair.teardownSync(); });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    const onSignal = () => {
      for (const pair of live) pair.teardownSync();
      // Die of the same signal, as without the handler (unless another handler keeps us alive).
      process.removeListener(sig, onSignal);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/**
 * Creates the two namespaces and the veth between them. Returns a pair:
 *   serverNs, clientNs, serverIp, clientIp   names and addresses
 *   exec(ns, cmd, ...args)                    a command inside a namespace
 *   setCap(rate, {burst, latency})            tbf on server→client ('500kbit'); call again to change
 *   removeCap()
 *   setLoss(percent) / removeLoss()           random UDP loss on the client's input
 *   blockUdp() / removeLoss()                 every UDP datagram dropped on the client's input
 *   blockTcpFrom(port)                        TCP from the server's `port` dropped too (with blockUdp:
 *                                             a firewall that lets only some TCP ports through)
 *   cut() / restore()                         a silent outage both ways: everything arriving
 *                                             over the veth is dropped, in both namespaces
 *   linkDown() / linkUp()                     the client's interface goes down (what a laptop
 *                                             sees when Wi-Fi drops), then up again
 *   moveClient()                              the client gets a new address (another network):
 *                                             its old one is gone, so is every 5-tuple it used
 *   teardown()                                kills what runs inside, deletes both namespaces
 */
export async function createLinkPair() {
  checkRoot();
  await checkTools();
  sweepStale();
  installHandlers();

  const id = `${PID_NS}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const serverNs = `${PREFIX}-${id}-s`;
  const clientNs = `${PREFIX}-${id}-c`;
  // Interface names are at most 15 characters and only need to be unique inside a namespace.
  const serverDev = 'sbs0';
  const clientDev = 'sbc0';
  // Each pair is isolated, so the subnet need not be unique; a random one makes logs tell runs apart.
  const subnet = randomInt(1, 255);
  const serverIp = `127.0.${subnet}.1`;
  const clientIp = `127.0.${subnet}.2`;

  const exec = (ns, cmd, ...args) => run('ip', ['netns', 'exec', ns, cmd, ...args]);
  let capped = false;
  let lossy = false;
  let cutReady = false;

  const pair = {
    serverNs, clientNs, serverIp, clientIp, serverDev, clientDev, exec,
    async setCap(rate, { burst = '16kb', latency = '300ms' } = {}) {
      // `replace` both installs and changes the qdisc, so a test can move the cap mid-call.
      await exec(serverNs, 'tc', 'qdisc', 'replace', 'dev', serverDev, 'root', 'tbf',
        'rate', rate, 'burst', burst, 'latency', latency);
      capped = true;
    },
    async removeCap() {
      if (!capped) return;
      await exec(serverNs, 'tc', 'qdisc', 'del', 'dev', serverDev, 'root');
      capped = false;
    },
    async setLoss(percent) {
      if (!(percent >= 0 && percent <= 100)) throw new Error(`netns: loss must be 0–100 %, got ${percent}`);
      // Dropped on the client's INPUT hook: an output-hook drop makes the sender's sendto fail
      // with EPERM, which a lossy link does not do. Basis points allow fractional percentages.
      await exec(clientNs, 'nft', 'flush', 'chain', 'inet', 'sbimp', 'in');
      await exec(clientNs, 'nft', 'add', 'rule', 'inet', 'sbimp', 'in',
        'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '10000', 'lt', String(Math.round(percent * 100)), 'drop');
      lossy = true;
    },
    async blockUdp() {
      // A firewall that drops UDP: nothing the server sends over UDP reaches the client, so
      // no UDP ICE pair ever completes; TCP (signaling, ICE-TCP) passes.
      await exec(clientNs, 'nft', 'flush', 'chain', 'inet', 'sbimp', 'in');
      await exec(clientNs, 'nft', 'add', 'rule', 'inet', 'sbimp', 'in', 'meta', 'l4proto', 'udp', 'drop');
      lossy = true;
    },
    async cut() {
      // Drops on both input hooks: nothing crosses, and no sender gets an error (an
      // output-hook drop would fail its sendto, which a dead link does not do). The
      // namespaces' routes stay, as they would on a real link that went quiet.
      for (const [ns, dev] of [[clientNs, clientDev], [serverNs, serverDev]]) {
        if (!cutReady) {
          await exec(ns, 'nft', 'add', 'table', 'inet', 'sbcut');
          await exec(ns, 'nft', 'add', 'chain', 'inet', 'sbcut', 'in', '{ type filter hook input priority -10; }');
        }
        await exec(ns, 'nft', 'add', 'rule', 'inet', 'sbcut', 'in', 'iifname', dev, 'drop');
      }
      cutReady = true;
    },
    async restore() {
      if (!cutReady) return;
      for (const ns of [clientNs, serverNs]) await exec(ns, 'nft', 'flush', 'chain', 'inet', 'sbcut', 'in');
    },
    async blockTcpFrom(port) {
      await exec(clientNs, 'nft', 'add', 'rule', 'inet', 'sbimp', 'in', 'tcp', 'sport', String(port), 'drop');
      lossy = true;
    },
    async linkDown() {
      await exec(clientNs, 'ip', 'link', 'set', clientDev, 'down');
    },
    async linkUp() {
      await exec(clientNs, 'ip', 'link', 'set', clientDev, 'up');
      // Taking the interface down removed the host routes through it.
      await exec(clientNs, 'ip', 'route', 'replace', `${serverIp}/32`, 'dev', clientDev);
      await exec(serverNs, 'ip', 'route', 'replace', `${pair.clientIp}/32`, 'dev', serverDev);
    },
    async moveClient() {
      const [a, b, c] = pair.clientIp.split('.');
      const moved = `${a}.${b}.${c}.3`;
      if (moved === pair.clientIp) throw new Error('netns: the client has moved already');
      // lo's 127.0.0.0/8 makes every 127.x address local: without narrowing it, the old
      // address would stay usable after it is removed from the veth.
      await exec(clientNs, 'ip', 'addr', 'del', '127.0.0.1/8', 'dev', 'lo');
      await exec(clientNs, 'ip', 'addr', 'add', '127.0.0.1/32', 'dev', 'lo');
      await exec(clientNs, 'ip', 'addr', 'add', `${moved}/32`, 'dev', clientDev);
      await exec(clientNs, 'ip', 'addr', 'del', `${pair.clientIp}/32`, 'dev', clientDev);
      await exec(clientNs, 'ip', 'route', 'replace', `${serverIp}/32`, 'dev', clientDev, 'src', moved);
      await exec(serverNs, 'ip', 'route', 'del', `${pair.clientIp}/32`, 'dev', serverDev);
      await exec(serverNs, 'ip', 'route', 'replace', `${moved}/32`, 'dev', serverDev);
      pair.clientIp = moved;
    },
    async removeLoss() {
      if (!lossy) return;
      await exec(clientNs, 'nft', 'flush', 'chain', 'inet', 'sbimp', 'in');
      lossy = false;
    },
    teardownSync() {
      live.delete(pair);
      destroyNsSync(clientNs);
      destroyNsSync(serverNs);
    },
    async teardown() { pair.teardownSync(); },
  };

  live.add(pair);
  try {
    await run('ip', ['netns', 'add', serverNs]);
    await run('ip', ['netns', 'add', clientNs]);
    await run('ip', ['link', 'add', 'name', serverDev, 'netns', serverNs, 'type', 'veth',
      'peer', 'name', clientDev, 'netns', clientNs]);
    for (const [ns, dev, ip, peer] of [[serverNs, serverDev, serverIp, clientIp], [clientNs, clientDev, clientIp, serverIp]]) {
      await exec(ns, 'ip', 'link', 'set', 'lo', 'up');
      // 127/8 on a non-loopback device is "martian" unless route_localnet is on.
      await exec(ns, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1');
      await exec(ns, 'sysctl', '-qw', `net.ipv4.conf.${dev}.route_localnet=1`);
      await exec(ns, 'ip', 'addr', 'add', `${ip}/32`, 'dev', dev);
      await exec(ns, 'ip', 'link', 'set', dev, 'up');
      await exec(ns, 'ip', 'route', 'add', `${peer}/32`, 'dev', dev);
    }
    await exec(clientNs, 'nft', 'add', 'table', 'inet', 'sbimp');
    await exec(clientNs, 'nft', 'add', 'chain', 'inet', 'sbimp', 'in', '{ type filter hook input priority 0; }');
  } catch (e) {
    pair.teardownSync();
    throw e;
  }
  return pair;
}
