#!/usr/bin/env node
// Measures what a subscriber behind a capped downlink decodes (issue 18), for before/after
// comparisons; not part of `npm test`. Needs root (network namespaces), nft, Chromium and a
// built binary. Prints one JSON summary on stdout, progress on stderr.
//
//   node web/tools/constrained-link.mjs --cap 500kbit --seconds 10 [--settle 5] [--bin PATH]
//
// Phases: the subscriber joins behind the cap; after --settle seconds a window of --seconds is
// measured ("capped"). The cap is lifted; "recovery" is how long until it decodes the
// publisher's top layer again (at most 20 s), then another window is measured ("uncapped").
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { REPO_ROOT } from '../tests/support/server.mjs';
import {
  measureWindow, publisherLayers, report, startConstrainedCall, stopConstrainedCall, topLayerWidth, waitForWidth,
} from '../tests/support/constrained.mjs';

const { values: opt } = parseArgs({
  options: {
    cap: { type: 'string', default: '500kbit' },
    seconds: { type: 'string', default: '10' },
    settle: { type: 'string', default: '5' },
    bin: { type: 'string' },
  },
});
const seconds = Number(opt.seconds);
const settle = Number(opt.settle);
if (!(seconds > 0) || !(settle >= 0)) throw new Error('--seconds must be > 0 and --settle ≥ 0');

// A release build by default: the measurement should not be limited by a debug server's CPU.
const bin = opt.bin || process.env.SWITCHBOARD_BIN
  || [join(REPO_ROOT, 'target/release/switchboard'), join(REPO_ROOT, 'target/debug/switchboard')].find(existsSync);
if (!bin) throw new Error('no switchboard binary: cargo build --release --bin switchboard (or --bin PATH)');
process.env.SWITCHBOARD_BIN = bin; // what support/server.mjs starts

const log = (m) => process.stderr.write(`[constrained-link] ${m}\n`);
log(`binary ${bin}, cap ${opt.cap}`);
const call = await startConstrainedCall({ cap: opt.cap });
try {
  log(`joined (server ${call.server.url}); settling ${settle} s`);
  await delay(settle * 1000);
  const layersCapped = await publisherLayers(call);
  log(`measuring ${seconds} s capped`);
  const capped = await measureWindow(call, seconds);

  await call.pair.removeCap();
  const top = await topLayerWidth(call);
  log(`cap lifted; waiting for the top layer (${top} wide)`);
  const toTop = await waitForWidth(call, top, 20_000);
  log(`measuring ${seconds} s uncapped`);
  const uncapped = await measureWindow(call, seconds);

  console.log(JSON.stringify({
    binary: bin,
    cap: opt.cap,
    windowSeconds: seconds,
    settleSeconds: settle,
    publisherLayers: layersCapped,
    capped,
    recovery: { topLayerWidth: top, secondsToTopLayer: toTop },
    uncapped,
  }, null, 2));
} catch (e) {
  log(`failed: ${e.stack}\n${await report(call)}`);
  process.exitCode = 1;
} finally {
  // SWITCHBOARD_TOOL_LOG=N prints the server's last N log lines (with RUST_LOG for detail).
  const lines = Number(process.env.SWITCHBOARD_TOOL_LOG || 0);
  if (lines > 0) log(call.server.logTail(lines));
  await stopConstrainedCall(call);
}
