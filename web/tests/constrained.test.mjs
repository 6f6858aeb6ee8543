// Issue 18, "every subscriber gets the best picture its link allows", first acceptance test:
// a subscriber whose downlink is capped at 500 kbit/s still decodes a lower layer of a 720p
// publisher, and gets the top layer back once the cap is lifted. Twice: with livekit-client's
// default VP8 simulcast (three encodings, one SSRC each), and with VP9 and AV1 SVC (one L3T3_KEY
// stream whose upper spatial layers the server leaves out for this subscriber, sfu/src/svc/: the
// VP9 payload descriptor says where a packet sits, for AV1 the dependency descriptor).
//
// The server estimates each subscriber's link from its transport-wide congestion feedback and
// gives it the layers that fit (sfu/src/congestion.rs, allocator.rs).
// Needs root (network namespaces, tc, nft), Chromium and a built binary; see web/README.md.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  measureWindow, publisherLayers, report, serverMetric, startConstrainedCall, stopConstrainedCall, topLayerWidth,
  waitForWidth,
} from './support/constrained.mjs';

const CAP = '500kbit';
/** Time the server gets after the subscription to find the link's rate and switch layers. */
const SETTLE_MS = 5_000;
const WINDOW_S = 10;
const MIN_FPS = 10;
const MAX_FROZEN_S = 2;
const RECOVER_MS = 20_000;

async function cappedThenLifted(codec) {
  const call = await startConstrainedCall({ cap: CAP, codec });
  try {
    await delay(SETTLE_MS);
    const capped = await measureWindow(call, WINDOW_S);
    const layers = await publisherLayers(call);
    const top = await topLayerWidth(call);
    const seen = JSON.stringify({ capped, layers });
    console.log(`${codec ?? 'vp8 simulcast'} capped at ${CAP}: ${seen}`);
    assert.ok(top > 0, `the publisher sends video: ${seen}`);
    assert.ok(capped.fps >= MIN_FPS, `decodes ≥ ${MIN_FPS} fps behind the cap: ${seen}`);
    // Chromium counts no freeze before the first decoded frame, hence also the sampled stall time.
    assert.ok(capped.freezeSeconds < MAX_FROZEN_S && capped.stalledSeconds < MAX_FROZEN_S,
      `frozen < ${MAX_FROZEN_S} s of ${WINDOW_S} s: ${seen}`);
    assert.ok(capped.width > 0 && capped.width < top, `a lower layer than the top (${top} wide): ${seen}`);
    if (codec === 'vp9' || codec === 'av1') {
      // The layers left out must leave no holes in the numbering: each would count as a lost
      // packet (more than one per frame) and draw a NACK.
      assert.ok(capped.packetsLost < capped.framesDecoded / 2, `no gaps where layers were left out: ${seen}`);
    }

    // Chromium's transport-wide feedback is read before str0m (sfu/src/feedback_in.rs): its
    // SRTCP decrypts with the keys our path derives, and the estimate above came from it.
    const taken = await serverMetric(call, 'switchboard_transport_feedback_taken_total');
    assert.ok(taken > 0, `feedback reports taken before str0m: ${taken}`);

    await call.pair.removeCap();
    const topNow = await topLayerWidth(call);
    const took = await waitForWidth(call, topNow, RECOVER_MS);
    assert.ok(took !== null, `the top layer (${topNow} wide) within ${RECOVER_MS / 1000} s of lifting the cap`);
    console.log(`top layer ${topNow} wide after ${took} s uncapped`);
  } catch (err) {
    console.error(await report(call));
    throw err;
  } finally {
    await stopConstrainedCall(call);
  }
}

test(`a subscriber capped at ${CAP} decodes a lower simulcast layer, and the top one once the cap is lifted`, { timeout: 180_000 }, () => cappedThenLifted(null));

test(`a subscriber capped at ${CAP} decodes a lower VP9 SVC spatial layer, and the top one once the cap is lifted`, { timeout: 180_000 }, () => cappedThenLifted('vp9'));

test(`a subscriber capped at ${CAP} decodes a lower AV1 SVC spatial layer, and the top one once the cap is lifted`, { timeout: 180_000 }, () => cappedThenLifted('av1'));
