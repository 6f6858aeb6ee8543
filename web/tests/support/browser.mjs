// Headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) and a handle on one
// demo page (web/index.html) with its console captured for failure reports.
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { REPO_ROOT } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const RESULTS_DIR = join(REPO_ROOT, 'web/test-results');

// The flags from docs/TESTING.md, plus: play audio without a user gesture, and keep background
// tabs (several participants share one browser) from being throttled.
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/**
 * Playwright drives Chromium over a pipe, not the network, so a launcher script that enters a
 * network namespace first is enough to put the whole browser inside it (support/netns.mjs).
 */
async function netnsLauncher(dir, netns) {
  const path = join(dir, 'chromium-in-netns.sh');
  await writeFile(path, `#!/bin/sh\nexec ip netns exec '${netns}' '${CHROMIUM}' "$@"\n`);
  await chmod(path, 0o755);
  return path;
}

/**
 * One headless Chromium with a fresh profile; `close()` removes the profile. With `netns` it
 * runs inside that network namespace; `args` are added to CHROMIUM_ARGS.
 */
export async function launchBrowser({ netns = null, args = [] } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  }
  const profile = await mkdtemp(join(tmpdir(), 'switchboard-chromium-'));
  const launcherDir = netns ? await mkdtemp(join(tmpdir(), 'switchboard-launcher-')) : null;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: netns ? await netnsLauncher(launcherDir, netns) : CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    viewport: { width: 1100, height: 760 },
  });
  return {
    context,
    async openDemo(label) {
      return new DemoPage(label, await context.newPage());
    },
    async close() {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
      if (launcherDir) await rm(launcherDir, { recursive: true, force: true });
    },
  };
}

// Runs in the page: per remote participant, the best inbound-rtp numbers of its tracks, read with
// livekit-client's RemoteTrack.getRTCStatsReport().
async function collectInbound() {
  const out = {};
  const room = window.demo && window.demo.room;
  if (!room) return out;
  for (const p of room.remoteParticipants.values()) {
    const r = {
      framesDecoded: 0, audioPacketsReceived: 0, audioSamplesReceived: 0, frameWidth: 0, videoCodec: '', audioCodec: '', tracks: [],
    };
    for (const pub of p.trackPublications.values()) {
      r.tracks.push(`${pub.source}:${pub.kind}${pub.isSubscribed ? ':subscribed' : ''}${pub.isMuted ? ':muted' : ''}`);
      if (!pub.track) continue;
      const report = await pub.track.getRTCStatsReport();
      if (!report) continue;
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          r.framesDecoded = Math.max(r.framesDecoded, s.framesDecoded || 0);
          r.frameWidth = Math.max(r.frameWidth, s.frameWidth || 0);
          const codec = s.codecId && report.get(s.codecId);
          if (codec) r.videoCodec = codec.mimeType;
        }
        if (s.kind === 'audio') {
          r.audioPacketsReceived = Math.max(r.audioPacketsReceived, s.packetsReceived || 0);
          r.audioSamplesReceived = Math.max(r.audioSamplesReceived, s.totalSamplesReceived || 0);
          const codec = s.codecId && report.get(s.codecId);
          if (codec) r.audioCodec = codec.mimeType;
        }
      });
    }
    out[p.identity] = r;
  }
  return out;
}

export class DemoPage {
  constructor(label, page) {
    this.label = label;
    this.page = page;
    this.log = [];
    const note = (line) => {
      this.log.push(line.length > 600 ? `${line.slice(0, 600)}…` : line);
      if (this.log.length > 1000) this.log.shift();
    };
    page.on('console', (m) => note(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => note(`[pageerror] ${e.stack || e.message}`));
    page.on('requestfailed', (r) => note(`[requestfailed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => { if (r.status() >= 400) note(`[http ${r.status()}] ${r.request().method()} ${r.url()}`); });
    /** Every WebSocket the page opened (its path, e.g. `/rtc/v1`), and every failed request. */
    this.sockets = [];
    this.failures = [];
    page.on('websocket', (ws) => this.sockets.push(new URL(ws.url()).pathname));
    page.on('requestfailed', (r) => this.failures.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => { if (r.status() >= 400) this.failures.push(`${r.status()} ${r.url()}`); });
  }

  /** Opens the demo page at `baseUrl` with the given query parameters. */
  async open(baseUrl, params) {
    const url = `${baseUrl}/?${new URLSearchParams(params)}`;
    await this.page.goto(url, { waitUntil: 'load' });
  }

  /** Waits until the join attempt settles; resolves to demo.state ('joined', 'failed', …). */
  async settled(timeoutMs = 20_000) {
    const handle = await this.page.waitForFunction(
      () => window.demo && !['idle', 'joining'].includes(window.demo.state) && window.demo.state,
      null, { timeout: timeoutMs, polling: 100 },
    ).catch((e) => { throw new Error(`${this.label}: join did not settle within ${timeoutMs / 1000}s (${e.message.split('\n')[0]})`); });
    return handle.jsonValue();
  }

  /** Waits for a successful join and returns the local identity. */
  async joined(timeoutMs = 20_000) {
    const state = await this.settled(timeoutMs);
    if (state !== 'joined') {
      throw new Error(`${this.label}: join ended in state "${state}": ${await this.page.evaluate(() => window.demo.error)}`);
    }
    this.identity = await this.page.evaluate(() => window.demo.room.localParticipant.identity);
    return this.identity;
  }

  /**
   * Polls `fn(arg)` in the page until it returns truthy; the error names `what`. `fn` must be
   * synchronous: a returned promise is itself truthy, so an async check would pass at once.
   */
  async until(what, fn, arg, timeoutMs = 20_000) {
    try {
      const handle = await this.page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
      return await handle.jsonValue();
    } catch (e) {
      throw new Error(`${this.label}: ${what} — not within ${timeoutMs / 1000}s (${e.message.split('\n')[0]})`);
    }
  }

  /**
   * The ICE pair carrying `identity`'s video to this page, from getStats: each side's
   * candidate {protocol, type, address, port, relayProtocol}, and the frames decoded.
   */
  selectedPair(identity) {
    return this.page.evaluate(async (id) => {
      const p = window.demo.room.remoteParticipants.get(id);
      for (const pub of p ? p.trackPublications.values() : []) {
        if (pub.kind !== 'video' || !pub.track) continue;
        const stats = [...((await pub.track.getRTCStatsReport())?.values() ?? [])];
        const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
        const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
        const side = (cid) => {
          const c = stats.find((s) => s.id === cid);
          return c ? {
            protocol: c.protocol, type: c.candidateType, address: c.address, port: c.port, relayProtocol: c.relayProtocol ?? null,
          } : null;
        };
        return {
          local: side(pair?.localCandidateId),
          remote: side(pair?.remoteCandidateId),
          framesDecoded: stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video')?.framesDecoded ?? 0,
        };
      }
      return null;
    }, identity);
  }

  /** Inbound stats per remote identity: {framesDecoded, audioPacketsReceived, tracks}. */
  inbound() {
    return this.page.evaluate(collectInbound);
  }

  /** Video frames decoded from `identity` so far. */
  async framesFrom(identity) {
    return (await this.inbound())[identity]?.framesDecoded ?? 0;
  }

  /** Waits until `more` frames beyond `since` were decoded from `identity`; resolves to when (ms since epoch). */
  async decodesAgain(identity, since, more, timeoutMs) {
    const started = Date.now();
    for (;;) {
      if ((await this.framesFrom(identity)) >= since + more) return Date.now();
      if (Date.now() - started > timeoutMs) {
        throw new Error(`${this.label} decoded no new video from ${identity} within ${timeoutMs / 1000}s`);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  /** Polls until video frames were decoded and audio packets received from every identity. */
  async mediaFrom(identities, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const stats = await this.inbound();
      const missing = identities.filter((id) => !(stats[id]?.framesDecoded > 0 && stats[id]?.audioPacketsReceived > 0));
      if (missing.length === 0) return stats;
      if (Date.now() > deadline) {
        throw new Error(`${this.label} (${this.identity}): no decoded video and/or audio packets from `
          + `${missing.join(', ')} within ${timeoutMs / 1000}s; inbound stats: ${JSON.stringify(stats)}`);
      }
      await delay(250);
    }
  }

  /** A text block describing the page for failure reports; also saves a screenshot. */
  async describe(screenshotName) {
    const lines = [`--- page ${this.label} (${this.page.url()}) ---`];
    if (this.page.isClosed()) return [...lines, '(page closed)', ...this.log.slice(-40)].join('\n');
    const capped = async (promise) => {
      const stop = new AbortController();
      const timeout = delay(5_000, null, { signal: stop.signal })
        .then(() => { throw new Error('page did not answer within 5s'); }, () => {});
      try { return await Promise.race([promise, timeout]); } finally { stop.abort(); }
    };
    try {
      const state = await capped(this.page.evaluate(() => {
        const d = window.demo;
        if (!d) return { demo: 'window.demo missing' };
        const room = d.room;
        return {
          state: d.state,
          error: d.error,
          errorBanner: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
          roomState: room && room.state,
          local: room && room.localParticipant.identity,
          localTracks: room && [...room.localParticipant.trackPublications.values()].map((p) => `${p.source}:${p.kind}${p.isMuted ? ':muted' : ''}`),
          remotes: room && [...room.remoteParticipants.values()].map((p) => p.identity),
          tiles: [...document.querySelectorAll('#grid .tile')].map((t) => t.dataset.identity),
          grid: document.getElementById('grid').className,
          chat: d.chat,
        };
      }));
      lines.push(`demo: ${JSON.stringify(state)}`);
      if (state.roomState) lines.push(`inbound: ${JSON.stringify(await capped(this.inbound()))}`);
    } catch (e) {
      lines.push(`(could not read page state: ${e.message.split('\n')[0]})`);
    }
    if (screenshotName) {
      try {
        await mkdir(RESULTS_DIR, { recursive: true });
        const path = join(RESULTS_DIR, `${screenshotName}.png`);
        await this.page.screenshot({ path, timeout: 5_000 });
        lines.push(`screenshot: ${path}`);
      } catch (e) {
        lines.push(`(no screenshot: ${e.message.split('\n')[0]})`);
      }
    }
    lines.push(`console (last ${Math.min(60, this.log.length)} of ${this.log.length}):`, ...this.log.slice(-60));
    return lines.join('\n');
  }

  async close() {
    await this.page.close().catch(() => {});
  }
}
