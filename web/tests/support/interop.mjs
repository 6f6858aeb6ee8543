// The third-party peers in tests/interop/ and what they run on: a venv (.venv-interop/) with
// aiortc and LiveKit's Python SDKs, and Debian's GStreamer. scripts/interop-deps.sh installs
// them; `ensureInteropDeps()` runs it (idempotent, a second or two when all is there) and
// fails with its output when it cannot: a missing peer fails the run, never skips it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './server.mjs';

const run = promisify(execFile);

export const INTEROP = join(REPO_ROOT, 'tests/interop');
/** The venv's Python: aiortc, `livekit` (the Rust core through FFI), `livekit-api`. */
export const INTEROP_PY = join(REPO_ROOT, '.venv-interop/bin/python');

export async function ensureInteropDeps() {
  try {
    const { stdout } = await run('bash', [join(REPO_ROOT, 'scripts/interop-deps.sh')],
      { timeout: 15 * 60_000, maxBuffer: 16 << 20 });
    process.stderr.write(stdout);
  } catch (e) {
    throw new Error('the interop dependencies are missing and scripts/interop-deps.sh could not install them '
      + `(a venv at .venv-interop/ with aiortc and LiveKit's Python SDKs, Debian's GStreamer): ${e.message}\n`
      + `${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}
