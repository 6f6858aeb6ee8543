// ICE-TCP (issue 19): a participant behind a firewall that drops UDP joins over the server's
// passive TCP candidate (one port for every worker, RFC 4571 framing, sfu/src/ice_tcp/) and
// exchanges video both ways; a participant whose UDP works keeps UDP although TCP is offered.
// The firewall is nftables in a network namespace (support/netns.mjs): every UDP datagram
// arriving at the client's namespace is dropped. Needs root, iproute2, nftables, Chromium.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { launchBrowser } from './support/browser.mjs';
import { serverMetric } from './support/constrained.mjs';
import { createLinkPair } from './support/netns.mjs';
import { startServer } from './support/server.mjs';

const JOIN_MS = 30_000;

test('a participant whose UDP is dropped joins over ICE-TCP; one whose UDP works keeps UDP', { timeout: 180_000 }, async () => {
  const pair = await createLinkPair();
  const browsers = [];
  const pages = [];
  let server = null;
  try {
    await pair.blockUdp();
    server = await startServer({ netns: pair.serverNs, host: pair.serverIp });
    const room = `ice-tcp-${randomBytes(4).toString('hex')}`;
    const open = async (name, netns) => {
      const browser = await launchBrowser({ netns });
      browsers.push(browser);
      const page = await browser.openDemo(name);
      pages.push(page);
      await page.open(server.url, { room, name, autojoin: '1' });
      await page.joined(JOIN_MS);
      return page;
    };
    // Same namespace as the server: UDP works. Behind the firewall: only TCP does.
    const open_ = await open('Open', pair.serverNs);
    const walled = await open('Walled', pair.clientNs);
    await walled.mediaFrom([open_.identity], JOIN_MS);
    await open_.mediaFrom([walled.identity], JOIN_MS);

    const walledSees = await walled.selectedPair(open_.identity);
    // Chromium's side of a TCP pair shows as prflx: its active candidate announced port 9.
    assert.equal(walledSees?.local?.protocol, 'tcp', `the walled participant receives over TCP: ${JSON.stringify(walledSees)}`);
    assert.deepEqual([walledSees.remote?.protocol, walledSees.remote?.type, walledSees.remote?.address], ['tcp', 'host', pair.serverIp],
      `…from the server's TCP candidate: ${JSON.stringify(walledSees)}`);
    assert.ok(walledSees.framesDecoded > 0, `…and decodes video: ${JSON.stringify(walledSees)}`);
    const openSees = await open_.selectedPair(walled.identity);
    assert.deepEqual([openSees?.local?.protocol, openSees?.local?.type], ['udp', 'host'],
      `a participant whose UDP works keeps UDP: ${JSON.stringify(openSees)}`);
    assert.ok(openSees.framesDecoded > 0, `…and decodes the walled participant's video: ${JSON.stringify(openSees)}`);
    const connections = await serverMetric({ pair, server }, 'switchboard_tcp_connections');
    assert.ok(connections >= 2, `the server holds the walled participant's two PeerConnections over TCP: ${connections}`);
    console.log(`walled: ${JSON.stringify(walledSees)}; open: ${JSON.stringify(openSees)}; TCP connections: ${connections}`);
  } catch (err) {
    if (server) console.error(server.logTail(60));
    for (const page of pages) console.error(await page.describe(`ice-tcp-${page.label}`));
    throw err;
  } finally {
    for (const page of pages) await page.close();
    for (const browser of browsers) await browser.close();
    await server?.stop();
    await pair.teardown();
  }
});
