// Starts and stops a `switchboard serve --dev` process for browser tests.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const READY = /^switchboard ready (http:\/\/\S+)\s*$/;
const KEEP_LINES = 2000;

export function switchboardBinary() {
  return process.env.SWITCHBOARD_BIN || join(REPO_ROOT, 'target/debug/switchboard');
}

function keep(lines, line) {
  lines.push(line);
  if (lines.length > KEEP_LINES) lines.splice(0, lines.length - KEEP_LINES);
}

/**
 * Runs `switchboard serve --dev` on ephemeral ports with a fresh data dir and resolves once it
 * prints `switchboard ready http://127.0.0.1:<port>`. Rejects with the reason and the stderr tail
 * if the binary is missing, exits first, or is not ready within `readyTimeoutMs`.
 * `netns` runs it inside that network namespace (`ip netns exec`, which execs the binary, so the
 * pid and signals are still the server's) listening on `host` there (support/netns.mjs).
 */
export async function startServer({
  readyTimeoutMs = 20_000, extraArgs = [], dataDir: reuse = null, env = {}, netns = null, host = '127.0.0.1',
} = {}) {
  const bin = switchboardBinary();
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}: run \`cargo build\` in ${REPO_ROOT} first `
      + '(or point SWITCHBOARD_BIN at a built binary)');
  }
  // A caller that passes its own data dir (a restart after a crash) keeps it afterwards.
  const dataDir = reuse ?? await mkdtemp(join(tmpdir(), 'switchboard-e2e-'));
  // Tests poll the API far faster than one real client would; the per-address request rates
  // are tested in tests/attack_http.rs.
  const rates = ['api_requests_per_minute', 'rtc_requests_per_minute', 'whip_requests_per_minute']
    .flatMap((name) => ['--limit', `${name}=1000000`]);
  const args = ['serve', '--dev', '--http-addr', `${host}:0`, '--rtc-port', '0', '--rtc-tcp-port', '0', '--data-dir', dataDir, ...rates, ...extraArgs];
  const [cmd, cmdArgs] = netns ? ['ip', ['netns', 'exec', netns, bin, ...args]] : [bin, args];
  const proc = spawn(cmd, cmdArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { RUST_BACKTRACE: '1', ...process.env, ...env },
  });
  const stdout = [];
  const stderr = [];
  createInterface({ input: proc.stderr }).on('line', (l) => keep(stderr, l));
  // 'close' fires after the process exited and its stdout/stderr are drained.
  const exited = new Promise((res) => proc.once('close', (code, signal) => res({ code, signal })));
  let exit = null;
  exited.then((e) => { exit = e; });

  const server = {
    url: null,
    proc,
    dataDir,
    command: `${cmd} ${cmdArgs.join(' ')}`,
    stdoutLines: stdout,
    stderrLines: stderr,
    get exit() { return exit; },
    /** Last `n` lines of the server's stderr (and where it stands), for failure reports. */
    logTail(n = 80) {
      const state = exit ? `exited (code ${exit.code}, signal ${exit.signal})` : `running (pid ${proc.pid})`;
      const tail = stderr.slice(-n);
      const out = stdout.slice(-20);
      return [`server: ${server.command}`, `server state: ${state}`,
        `--- server stderr, last ${tail.length} of ${stderr.length} lines ---`, ...tail,
        ...(out.length ? ['--- server stdout (tail) ---', ...out] : [])].join('\n');
    },
    /** POST /v1/dev/token → {token, url, room_id, identity}. */
    async devToken(roomId, name) {
      const resp = await fetch(`${server.url}/v1/dev/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ room_id: roomId, name }),
      });
      const text = await resp.text();
      if (resp.status !== 200) throw new Error(`POST /v1/dev/token → HTTP ${resp.status}: ${text}`);
      return JSON.parse(text);
    },
    /** SIGTERM, then SIGKILL if it has not exited after `graceMs`; removes the data dir. */
    async stop({ graceMs = 5_000 } = {}) {
      if (!exit && proc.pid !== undefined) {
        proc.kill('SIGTERM');
        let timer;
        const killed = new Promise((res) => {
          timer = setTimeout(() => { proc.kill('SIGKILL'); res(); }, graceMs);
        });
        await Promise.race([exited, killed]);
        clearTimeout(timer);
        await exited;
      }
      if (!reuse) await rm(dataDir, { recursive: true, force: true });
    },
    /** SIGKILL, as a crash: nothing gets to clean up. The data dir stays. */
    async kill() {
      if (!exit && proc.pid !== undefined) proc.kill('SIGKILL');
      await exited;
    },
  };

  const lines = createInterface({ input: proc.stdout });
  try {
    server.url = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(
        `switchboard did not print "switchboard ready http://…" within ${readyTimeoutMs / 1000}s`)), readyTimeoutMs);
      lines.on('line', (l) => {
        keep(stdout, l);
        const m = READY.exec(l);
        if (m) { clearTimeout(timer); res(m[1].replace(/\/$/, '')); }
      });
      proc.once('error', (e) => { clearTimeout(timer); rej(new Error(`could not start ${bin}: ${e.message}`)); });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        rej(new Error(`switchboard exited (code ${code}, signal ${signal}) before printing its ready line `
          + '"switchboard ready http://…" — is `serve` implemented and the binary up to date? (`cargo build`)'));
      });
    });
  } catch (e) {
    await server.stop();
    e.message += `\n${server.logTail(60)}`;
    throw e;
  }
  return server;
}
