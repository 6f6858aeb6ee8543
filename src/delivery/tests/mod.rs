//! Delivery tests. They live inside the crate (integration tests under tests/ cannot reach a
//! binary's modules) and use only real services: a SQLite store on a temp file, an HTTP
//! receiver on 127.0.0.1, the nats-server on 127.0.0.1:4222, livekit-server-sdk through
//! node, and for two nodes (`cluster`) the PostgreSQL server of the store tests. A missing
//! service fails the test with a message saying what to install.

mod cluster;
mod nats;
mod support;
mod unit;
mod webhooks;
