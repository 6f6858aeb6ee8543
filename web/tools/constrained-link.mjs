#!/usr/bin/env node
// Measures what a subscriber behind a capped downlink decodes (issue 18), for before/after
// comparisons; not part of `npm test`. Needs root (network namespaces), nft, Chromium and a
// built binary. Prints one JSON summary on stdout, progress on stderr.
//
//   node web/tools/constrained-link.mjs --cap 500kbit --seconds 10 [--settle 5] [--bin PATH]
//        [--timeline out.json] [--codec vp9]
//
// Phases: the subscriber joins behind the cap; after --settle seconds a window of --seconds is
// measured ("capped"). The cap is lifted; "recovery" is how long until it decodes the
// publisher's top layer again (at most 20 s), then another window is measured ("uncapped").
// --timeline also writes, every 250 ms over the whole run, what the subscriber received
// (kbit/s, decoded width, fps) and the server's estimate of its link (from the server's
// debug log), for web/tools/timeline-svg.mjs to draw.
import { existsSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { REPO_ROOT } from '../tests/support/server.mjs';
import {
  measureWindow, publisherLayers, report, sampleSubscriber, startConstrainedCall, stopConstrainedCall, topLayerWidth,
  waitForWidth,
} from '../tests/support/constrained.mjs';

const { values: opt } = parseArgs({
  options: {
    cap: { type: 'string', default: '500kbit' },
    seconds: { type: 'string', default: '10' },
    settle: { type: 'string', default: '5' },
    bin: { type: 'string' },
    timeline: { type: 'string' },
    codec: { type: 'string' },
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
if (opt.timeline) {
  // The estimate comes from the server's "subscriber link" debug lines (sfu/src/congestion.rs).
  process.env.SWITCHBOARD_LOG = `${process.env.SWITCHBOARD_LOG || 'info'},switchboard_sfu::congestion=debug`;
}
const call = await startConstrainedCall({ cap: opt.cap, codec: opt.codec });
const timeline = { samples: [], estimates: [], events: [] };
let sampling = null;
if (opt.timeline) {
  const t0 = Date.now();
  const at = () => (Date.now() - t0) / 1000;
  createInterface({ input: call.server.proc.stderr }).on('line', (line) => {
    // Colours, if any, off; then the UTC time at the start and the fields.
    const plain = line.replace(/\x1b\[[0-9;]*m/g, '');
    const m = plain.match(/^(\S+Z)\s.*subscriber link .*estimate=(\d+) congested=(\w+)/);
    if (m) {
      timeline.estimates.push({
        t: (Date.parse(m[1]) - t0) / 1000, estimateKbps: Number(m[2]) / 1000, congested: m[3] === 'true',
      });
    }
  });
  timeline.events.push({ t: at(), what: `joined behind ${opt.cap}` });
  sampling = (async () => {
    let prev = null;
    while (sampling !== 'stop') {
      const s = await sampleSubscriber(call).catch(() => null);
      if (s && prev) {
        const dt = s.t - prev.t;
        timeline.samples.push({
          t: at(),
          kbps: ((s.bytesReceived - prev.bytesReceived) * 8) / dt / 1000,
          fps: (s.framesDecoded - prev.framesDecoded) / dt,
          width: s.frameWidth,
        });
      }
      prev = s || prev;
      await delay(250);
    }
  })();
  timeline.mark = (what) => timeline.events.push({ t: at(), what });
}
try {
  log(`joined (server ${call.server.url}); settling ${settle} s`);
  await delay(settle * 1000);
  const layersCapped = await publisherLayers(call);
  log(`measuring ${seconds} s capped`);
  const capped = await measureWindow(call, seconds);

  await call.pair.removeCap();
  timeline.mark?.('cap lifted');
  const top = await topLayerWidth(call);
  log(`cap lifted; waiting for the top layer (${top} wide)`);
  const toTop = await waitForWidth(call, top, 20_000);
  log(`measuring ${seconds} s uncapped`);
  const uncapped = await measureWindow(call, seconds);

  if (opt.timeline) {
    const running = sampling;
    sampling = 'stop';
    await running;
    delete timeline.mark;
    writeFileSync(opt.timeline, JSON.stringify({ cap: opt.cap, binary: bin, ...timeline }, null, 1));
    log(`timeline: ${opt.timeline}`);
  }
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
