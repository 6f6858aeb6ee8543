// Issue 18 on changing and lossy links: the same call as constrained.test.mjs (720p simulcast
// publisher, a subscriber behind its own link), with the link's cap stepped down and up, and
// with random loss. Needs root (network namespaces, tc, nft), Chromium and a built binary.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  measureWindow, publisherLayers, report, sampleAudio, sampleSubscriber, startConstrainedCall, stopConstrainedCall,
  waitForPublisherTop,
  waitForWidth,
} from './support/constrained.mjs';

/** After a layer went down, the server holds it for 3 s before going up, and 1.5 s between
 * steps up (sfu/src/allocator.rs). */
const UP_AFTER_DOWN_S = 3;
const UP_AFTER_UP_S = 1.5;
/** Log timestamps are taken just after the worker's clock reading they report on. */
const LOG_JITTER_S = 0.01;
/** The server logs each layer target it sets for a down-track (at debug level). */
const LOG = 'info,switchboard_sfu::layer_selection=debug';

/**
 * The server's layer targets for the subscriber's video, in order: {t (s), level} with level
 * quality × 16 + temporal layers, -1 for none (paused). The hold times apply to these
 * choices; when the browser decodes a switched layer adds a keyframe's delay, longer when the
 * link is congested than when it is not.
 */
function layerTargets(server) {
  return server.stderrLines
    // eslint-disable-next-line no-control-regex
    .map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''))
    .filter((l) => l.includes('layer target'))
    .map((l) => {
      const step = /quality: (\d+), temporal: (\d+)/.exec(l);
      return { t: Date.parse(l.split(' ')[0]) / 1000, level: step ? Number(step[1]) * 16 + Number(step[2]) : -1 };
    });
}

/** Records the width of every decoded frame size change while `body` runs. */
async function watchWidths(call, body) {
  const changes = [];
  let last = null;
  let running = true;
  const sampler = (async () => {
    while (running) {
      const s = await sampleSubscriber(call);
      if (s.frameWidth && s.frameWidth !== last) {
        changes.push({ t: s.t, width: s.frameWidth });
        last = s.frameWidth;
      }
      await delay(200);
    }
  })();
  try {
    await body();
  } finally {
    running = false;
    await sampler;
  }
  return changes;
}

test('a cap stepped down and up makes layers follow it, no faster than the hold times', { timeout: 240_000 }, async () => {
  const call = await startConstrainedCall({ serverOptions: { env: { SWITCHBOARD_LOG: LOG } } });
  try {
    // The publisher's own estimate adds its top layer a few seconds after it joined: until
    // then its "top" is a lower layer, and a cap would take nothing away from it.
    const top = await waitForPublisherTop(call, 20_000);
    assert.ok(top !== null, `the publisher sends all its layers: ${JSON.stringify(await publisherLayers(call))}`);
    assert.ok(await waitForWidth(call, top, 20_000) !== null, `the top layer (${top} wide) uncapped`);
    const windows = [];
    const changes = await watchWidths(call, async () => {
      for (let i = 0; i < 3; i += 1) {
        await call.pair.setCap('500kbit');
        await delay(3_000);
        windows.push(await measureWindow(call, 4));
        await call.pair.removeCap();
        await delay(7_000);
      }
    });
    const targets = layerTargets(call.server);
    const seen = JSON.stringify({ changes, windows, targets });
    console.log(`layer changes: ${seen}`);
    // The picture keeps going through every step (which layer a capped window ends on is
    // constrained.test.mjs's business: here a probe may try one layer up and come back).
    for (const w of windows) {
      assert.ok(w.fps >= 10, `decodes ≥ 10 fps while capped: ${seen}`);
      assert.ok(w.freezeSeconds < 2 && w.stalledSeconds < 2, `frozen < 2 s while capped: ${seen}`);
    }
    assert.ok(windows.some((w) => w.widthsSeen.some((x) => x < top)), `a lower layer behind the cap: ${seen}`);
    // Every step down was followed by a step up (as decoded) ...
    const ups = changes.filter((c, i) => i > 0 && c.width > changes[i - 1].width);
    assert.ok(ups.length >= 3, `the layer went back up after each cap: ${seen}`);
    // ... and the server chose each step up at least its hold time after the change before
    // it (3 s after a step down, 1.5 s after a step up).
    assert.ok(targets.some((x, i) => i > 0 && x.level < targets[i - 1].level), `the server stepped down: ${seen}`);
    for (let i = 2; i < targets.length; i += 1) {
      if (targets[i].level > targets[i - 1].level) {
        const afterUp = targets[i - 1].level > targets[i - 2].level;
        const hold = afterUp ? UP_AFTER_UP_S : UP_AFTER_DOWN_S;
        const held = targets[i].t - targets[i - 1].t;
        assert.ok(held >= hold - LOG_JITTER_S, `up ${held.toFixed(3)} s after the previous change (hold ${hold} s): ${seen}`);
      }
    }
  } catch (err) {
    console.error(await report(call));
    throw err;
  } finally {
    await stopConstrainedCall(call);
  }
});

test('5 % random loss: retransmissions keep the picture going', { timeout: 180_000 }, async () => {
  const call = await startConstrainedCall();
  try {
    await call.pair.setLoss(5);
    await delay(3_000);
    const audioBefore = await sampleAudio(call);
    const w = await measureWindow(call, 10);
    const audioAfter = await sampleAudio(call);
    const audio = Object.fromEntries(Object.keys(audioAfter).map((k) => [k, audioAfter[k] - audioBefore[k]]));
    const seen = JSON.stringify({ video: w, audio });
    console.log(`5 % loss: ${seen}`);
    assert.ok(w.nacks > 0, `the subscriber NACKed what it lost: ${seen}`);
    assert.ok(w.fps >= 15, `decodes ≥ 15 fps: ${seen}`);
    assert.ok(w.freezeSeconds < 1, `frozen < 1 s in 10 s: ${seen}`);
    // Audio too is NACKed (our offer has rtcp-fb nack for Opus) and resent: what stays lost
    // is well under the link's 5 %.
    assert.ok(audio.nackCount > 0, `the subscriber NACKed lost audio: ${seen}`);
    const lostShare = audio.packetsLost / (audio.packetsReceived + audio.packetsLost);
    assert.ok(lostShare < 0.025, `under 2.5 % of the audio stays lost: ${seen}`);
  } catch (err) {
    console.error(await report(call));
    throw err;
  } finally {
    await stopConstrainedCall(call);
  }
});
