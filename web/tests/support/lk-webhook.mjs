// Verifies and parses one webhook with the real livekit-server-sdk `WebhookReceiver`, so the
// Rust delivery tests (src/delivery/tests/) can check Switchboard's webhooks against LiveKit's
// own code: the JWT signature, issuer and expiry, the body's sha256 claim, and the body as a
// protojson WebhookEvent.
//
//   node lk-webhook.mjs KEY SECRET AUTH_HEADER BODY_FILE
//
// Prints the parsed event as JSON (the SDK's own protojson rendering). Exit status: 0 on
// success, 1 when verification or parsing fails, 2 on a usage or setup error. Results go to
// stdout, reasons to stderr.

import { readFile } from 'node:fs/promises';

const USAGE = 'usage: node lk-webhook.mjs KEY SECRET AUTH_HEADER BODY_FILE';

function fail(status, message) {
  console.error(message);
  // exitCode rather than exit(): let stdout drain first.
  process.exitCode = status;
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 4 || args.some((arg) => arg === '')) {
    fail(2, USAGE);
    return;
  }
  const [apiKey, apiSecret, authHeader, bodyFile] = args;
  let sdk;
  try {
    sdk = await import('livekit-server-sdk');
  } catch (err) {
    fail(2, `cannot load livekit-server-sdk (run \`npm install\` in web/): ${err.message}`);
    return;
  }
  let body;
  try {
    // The receiver hashes the body as a string, as a web framework would hand it over.
    body = await readFile(bodyFile, 'utf8');
  } catch (err) {
    fail(2, `cannot read ${bodyFile}: ${err.message}`);
    return;
  }
  try {
    const receiver = new sdk.WebhookReceiver(apiKey, apiSecret);
    const event = await receiver.receive(body, authHeader);
    console.log(JSON.stringify(event.toJson()));
  } catch (err) {
    fail(1, `webhook rejected: ${err.code ?? err.name}: ${err.message}`);
  }
}

main().catch((err) => fail(1, `lk-webhook failed: ${err.stack ?? err}`));
