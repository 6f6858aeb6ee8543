//! Delivery tests. They live inside the crate (integration tests under tests/ cannot reach a
//! binary's modules) and use only real services: a SQLite store on a temp file, an HTTP
//! receiver on 127.0.0.1, the nats-server on 127.0.0.1:4222 and livekit-server-sdk through
//! node. A missing service fails the test with a message saying what to install.

mod nats;
mod support;
mod unit;
mod webhooks;
