// The demo page on its own (no switchboard): served from web/ by a tiny static server whose
// /v1/dev/token answers like a server started without --dev.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { launchBrowser } from './support/browser.mjs';
import { REPO_ROOT } from './support/server.mjs';

const WEB = join(REPO_ROOT, 'web');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

let http;
let base;
let browser;

before(async () => {
  http = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/v1/dev/token') {
      res.writeHead(404, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify({ title: 'Not Found', status: 404, detail: 'dev tokens need `serve --dev`' }));
      return;
    }
    const file = normalize(join(WEB, path === '/' ? 'index.html' : path));
    if (!file.startsWith(WEB) || file.includes('node_modules') || file.includes('/tests/')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((res) => http.listen(0, '127.0.0.1', res));
  base = `http://127.0.0.1:${http.address().port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await new Promise((res) => http?.close(res));
});

async function withPage(label, params, fn) {
  const page = await browser.openDemo(label);
  try {
    await page.open(base, params);
    await fn(page);
  } catch (err) {
    console.error(await page.describe(`page-${label}`));
    throw err;
  } finally {
    await page.close();
  }
}

test('the join form renders with labels and no console errors', { timeout: 30_000 }, async () => {
  await withPage('form', {}, async (page) => {
    const p = page.page;
    assert.ok(await p.getByLabel('Room', { exact: true }).isVisible());
    assert.ok(await p.getByLabel('Display name').isVisible());
    assert.ok(await p.getByRole('button', { name: 'Join' }).isVisible());
    assert.equal(await p.locator('#error').isVisible(), false);
    assert.equal(await p.locator('#call').isVisible(), false);
    const demo = await p.evaluate(() => ({
      state: window.demo.state, error: window.demo.error, chat: window.demo.chat,
      joined: window.demo.joined, room: window.demo.room, layoutFor: typeof window.demo.layoutFor,
      lk: typeof window.LivekitClient.Room,
    }));
    assert.deepEqual(demo, {
      state: 'idle', error: null, chat: [], joined: null, room: null, layoutFor: 'function', lk: 'function',
    });
    const errors = page.log.filter((l) => /^\[(error|pageerror|requestfailed|http)/.test(l));
    assert.deepEqual(errors, []);
  });
});

test('the grid is 1 large tile, 2–4 in 2×2, 5+ in 3×3', { timeout: 30_000 }, async () => {
  await withPage('layout', {}, async (page) => {
    const got = await page.page.evaluate(() => {
      const grid = document.getElementById('grid');
      document.getElementById('call').hidden = false;
      return [1, 2, 3, 4, 5, 9].map((n) => {
        const cls = window.demo.layoutFor(n);
        grid.className = `grid ${cls}`;
        return [n, cls, getComputedStyle(grid).gridTemplateColumns.split(' ').length];
      });
    });
    assert.deepEqual(got, [
      [1, 'layout-1', 1], [2, 'layout-2x2', 2], [3, 'layout-2x2', 2],
      [4, 'layout-2x2', 2], [5, 'layout-3x3', 3], [9, 'layout-3x3', 3],
    ]);
  });
});

test('a refused token request shows the problem detail in #error', { timeout: 30_000 }, async () => {
  await withPage('no-dev', { room: 'r1', name: 'Ann', autojoin: '1' }, async (page) => {
    assert.equal(await page.settled(10_000), 'failed');
    const shown = await page.page.locator('#error').textContent();
    assert.match(shown, /HTTP 404.*dev tokens need `serve --dev`/);
    assert.equal(await page.page.evaluate(() => window.demo.error), shown);
    assert.equal(await page.page.evaluate(() => window.demo.joined), false);
    assert.ok(await page.page.getByLabel('Room', { exact: true }).isVisible(), 'the form stays usable');
    assert.equal(await page.page.getByLabel('Room', { exact: true }).inputValue(), 'r1');
  });
});

test('?url=&token= joins with the given token and reports a connection failure', { timeout: 45_000 }, async () => {
  // a loopback port nobody listens on any more
  const probe = createServer();
  await new Promise((res) => probe.listen(0, '127.0.0.1', res));
  const { port } = probe.address();
  await new Promise((res) => probe.close(res));
  await withPage('bad-url', { url: `ws://127.0.0.1:${port}`, token: 'x.y.z', autojoin: '1' }, async (page) => {
    assert.equal(await page.settled(30_000), 'failed');
    assert.match(await page.page.locator('#error').textContent(), /^Could not join the room: .+/);
  });
});
