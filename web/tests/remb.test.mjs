// Issue 18's fallback estimate: a player whose offer has no transport-wide feedback (TWCC)
// gets its packets stamped with abs-send-time; its browser estimates the link and reports
// REMB, and that estimate picks its layers. The player watches a 720p simulcast publisher
// over WHEP from behind its own link (support/constrained.mjs). Needs root (network
// namespaces, tc), Chromium and a built binary.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  measureWindow, report, startConstrainedCall, stopConstrainedCall, waitForPublisherTop, waitForWidth,
} from './support/constrained.mjs';

const LOG = 'info,switchboard_sfu::remb=debug,switchboard_sfu::layer_selection=debug';

/** The server's REMB estimates so far, bits per second. */
function rembEstimates(call) {
  return call.server.stderrLines
    .filter((l) => l.includes('subscriber link (REMB)'))
    // eslint-disable-next-line no-control-regex
    .map((l) => Number(/estimate\W*=(\d+)/.exec(l.replace(/\x1b\[[0-9;]*m/g, ''))?.[1]));
}

test('a player without TWCC: REMB estimates its link, a cap takes layers away and lifting it brings them back', { timeout: 240_000 }, async () => {
  const call = await startConstrainedCall({
    whep: { withoutTransportCc: true }, serverOptions: { env: { SWITCHBOARD_LOG: LOG } },
  });
  try {
    const { offer, answer } = call.whep;
    assert.doesNotMatch(offer, /transport-cc/, 'the offer has no transport-wide feedback');
    assert.doesNotMatch(answer, /transport-wide-cc|transport-cc/, answer);
    assert.match(answer, /a=extmap:\d+ http:\/\/www\.webrtc\.org\/experiments\/rtp-hdrext\/abs-send-time/, answer);
    assert.match(answer, /a=rtcp-fb:\d+ goog-remb/, answer);

    const top = await waitForPublisherTop(call, 20_000);
    assert.ok(top !== null, 'the publisher sends all its layers');
    // From the middle layer a new link starts on, padding lets the browser's estimate grow
    // to the top layer.
    const reached = await waitForWidth(call, top, 40_000);
    const uncapped = rembEstimates(call);
    assert.ok(reached !== null, `the top layer (${top} wide) uncapped; REMB estimates: ${uncapped}`);
    assert.ok(uncapped.length > 0, 'the browser reported REMB');

    await call.pair.setCap('500kbit');
    const capped = await measureCapped(call, top);
    const seen = JSON.stringify({ capped, remb: rembEstimates(call).slice(-10) });
    console.log(`REMB behind a 500 kbit/s cap: ${seen}`);
    assert.ok(capped.width > 0 && capped.width < top, `a lower layer behind the cap: ${seen}`);
    assert.ok(capped.fps >= 10, `decodes ≥ 10 fps while capped: ${seen}`);
    assert.ok(capped.freezeSeconds < 2, `frozen < 2 s in 10 s while capped: ${seen}`);

    await call.pair.removeCap();
    const back = await waitForWidth(call, top, 60_000);
    console.log(`the top layer again ${back} s after the cap was lifted`);
    assert.ok(back !== null, `the top layer within 60 s of lifting the cap: ${JSON.stringify(rembEstimates(call).slice(-15))}`);
  } catch (err) {
    console.error(await report(call));
    throw err;
  } finally {
    await stopConstrainedCall(call);
  }
});

/** Waits (up to 20 s) for a layer below `top`, then measures 10 s of it. */
async function measureCapped(call, top) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const w = await measureWindow(call, 2);
    if ((w.width > 0 && w.width < top) || Date.now() > deadline) break;
  }
  return measureWindow(call, 10);
}
