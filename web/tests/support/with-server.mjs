// One test against a fresh `switchboard serve --dev`, with the peers it starts: child
// processes (support/jsonl-process.mjs) and demo pages go in the arrays `body` is handed,
// and are stopped and closed afterwards. On failure it prints the server's log tail, each
// process's output and each page's state (screenshots named `${prefix}-${label}`).
// `serverOptions` go to startServer (support/server.mjs).
import { startServer } from './server.mjs';

export async function withServer(prefix, body, serverOptions = {}) {
  const server = await startServer(serverOptions);
  const procs = [];
  const pages = [];
  try {
    await body(server, procs, pages);
  } catch (err) {
    console.error(server.logTail(80));
    for (const p of procs) console.error(p.describe());
    for (const page of pages) console.error(await page.describe(`${prefix}-${page.label}`));
    throw err;
  } finally {
    for (const p of procs) if (!p.exit) await p.stop(5_000);
    for (const page of pages) await page.close();
    await server.stop();
  }
}
