// Mints and verifies access tokens with the real livekit-server-sdk, so that the Rust test
// signaling/tests/token_interop.rs can check Switchboard's tokens against LiveKit's own code.
//
//   node lk-token.mjs mint KEY SECRET ROOM IDENTITY   prints a join token
//   node lk-token.mjs verify KEY SECRET TOKEN         prints the verified claims as JSON
//
// Exit status: 0 on success, 1 when minting or verification fails, 2 on a usage or setup error.
// Results go to stdout, reasons to stderr.

const USAGE = `usage:
  node lk-token.mjs mint KEY SECRET ROOM IDENTITY
  node lk-token.mjs verify KEY SECRET TOKEN`;

function fail(status, message) {
  console.error(message);
  // exitCode rather than exit(): let stdout drain first.
  process.exitCode = status;
}

async function loadSdk() {
  // A dynamic import so a missing package gives a hint instead of a bare ERR_MODULE_NOT_FOUND.
  try {
    return await import('livekit-server-sdk');
  } catch (err) {
    fail(2, `cannot load livekit-server-sdk (run \`npm install\` in web/): ${err.message}`);
    return null;
  }
}

async function mint(sdk, [apiKey, apiSecret, room, identity]) {
  const token = new sdk.AccessToken(apiKey, apiSecret, { identity, ttl: '10m' });
  token.addGrant({ roomJoin: true, room, canPublish: true });
  console.log(await token.toJwt());
}

async function verify(sdk, [apiKey, apiSecret, token]) {
  try {
    const claims = await new sdk.TokenVerifier(apiKey, apiSecret).verify(token);
    console.log(JSON.stringify(claims));
  } catch (err) {
    fail(1, `verify failed: ${err.code ?? err.name}: ${err.message}`);
  }
}

const commands = { mint: [mint, 4], verify: [verify, 3] };

async function main() {
  const [command, ...args] = process.argv.slice(2);
  const entry = commands[command];
  if (!entry || args.length !== entry[1] || args.some((arg) => arg === '')) {
    fail(2, USAGE);
    return;
  }
  const sdk = await loadSdk();
  if (sdk) {
    await entry[0](sdk, args);
  }
}

main().catch((err) => fail(1, `${process.argv[2]} failed: ${err.stack ?? err}`));
