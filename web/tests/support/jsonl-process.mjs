// A child process that reports what it does as one JSON object per line on stdout
// ({event, …}): the third-party peers in tests/interop/ (aiortc, GStreamer, LiveKit's Python
// SDK). `waitFor(name)` resolves with the first such event and rejects at once on an
// "error" event or an exit; `stop()` writes "stop" to its stdin and waits for it to exit.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export function jsonlProcess(label, command, args, { env = {} } = {}) {
  const proc = spawn(command, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1', ...env },
  });
  const events = [];
  const stderr = [];
  const waiters = [];
  let exit = null;
  const settle = () => {
    for (const w of [...waiters]) {
      const hit = events.find((e) => e.event === w.name);
      const err = events.find((e) => e.event === 'error');
      if (hit) w.resolve(hit);
      else if (err) w.reject(new Error(`${label}: ${err.message}`));
      else if (exit) w.reject(new Error(`${label} exited (${JSON.stringify(exit)}) before "${w.name}"`));
      else continue;
      waiters.splice(waiters.indexOf(w), 1);
    }
  };
  const exited = new Promise((res) => proc.once('close', (code, signal) => { exit = { code, signal }; settle(); res(exit); }));
  createInterface({ input: proc.stdout }).on('line', (line) => {
    try { events.push(JSON.parse(line)); } catch { stderr.push(`(stdout) ${line}`); }
    settle();
  });
  createInterface({ input: proc.stderr }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 200) stderr.shift();
  });
  proc.stdin.on('error', () => {});
  return {
    label,
    events,
    get exit() { return exit; },
    exited,
    waitFor(name, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${label}: no "${name}" within ${timeoutMs / 1000}s`)), timeoutMs);
        waiters.push({ name, resolve: (v) => { clearTimeout(timer); resolve(v); }, reject: (e) => { clearTimeout(timer); reject(e); } });
        settle();
      });
    },
    event(name) { return events.find((e) => e.event === name); },
    async stop(graceMs = 10_000) {
      if (!exit) proc.stdin.end('stop\n');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      return exit;
    },
    describe() {
      return [`--- ${label} (${exit ? `exited ${JSON.stringify(exit)}` : `running, pid ${proc.pid}`}) ---`,
        ...events.map((e) => JSON.stringify(e)), '(stderr)', ...stderr.slice(-40)].join('\n');
    },
  };
}
