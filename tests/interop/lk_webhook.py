"""Verifies and parses one webhook with LiveKit's Python `livekit-api` (WebhookReceiver), so
tests/delivery_e2e.rs checks Switchboard's webhooks against LiveKit's own Python code as well
as livekit-server-sdk's: the JWT signature and expiry, the body's sha256 claim, and the body
as a protojson WebhookEvent.

  lk_webhook.py KEY SECRET AUTH_HEADER BODY_FILE

Prints the parsed event as JSON (protobuf's own JSON rendering). Exit status 0 on success,
1 when verification or parsing fails (the reason on stderr).
"""

import sys

from google.protobuf.json_format import MessageToJson
from livekit import api


def main():
    key, secret, auth, body_file = sys.argv[1:5]
    with open(body_file, encoding="utf-8") as f:
        body = f.read()
    receiver = api.WebhookReceiver(api.TokenVerifier(key, secret))
    try:
        event = receiver.receive(body, auth)
    except Exception as e:  # the SDK raises plain exceptions for every refusal
        print(f"livekit-api refused the webhook: {e!r}", file=sys.stderr)
        sys.exit(1)
    print(MessageToJson(event))


if __name__ == "__main__":
    main()
