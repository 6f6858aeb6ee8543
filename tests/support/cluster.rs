//! Several real nodes on one PostgreSQL database (tests/cluster_*.rs): short membership
//! timing, and a reader pool of the test's own on what the nodes wrote.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::postgres::TestDatabase;
use super::Server;

/// Short membership timing so a dead node is noticed within seconds. The timeout leaves a
/// restart (well under a second here) plenty of room before the live node would release.
pub const TIMING: [&str; 4] = [
    "--cluster-heartbeat-interval",
    "1s",
    "--cluster-node-timeout",
    "6s",
];

/// A node on `db` with [`TIMING`] and `node_args`.
pub fn start(db: &TestDatabase, node_args: &[&str]) -> Server {
    let mut args = vec!["--database-url", db.url.as_str()];
    args.extend(TIMING);
    args.extend(node_args);
    Server::start_with(&args)
}

/// A small pool of the test's own, to read what the nodes wrote.
pub async fn reader(db: &TestDatabase) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .expect("connect to the test database")
}

/// The node holding `room`'s lease, if any row is there.
pub async fn lease_holder(pool: &PgPool, room: &str) -> Option<String> {
    sqlx::query_scalar("SELECT node_id FROM room_leases WHERE room_id = $1")
        .bind(room)
        .fetch_optional(pool)
        .await
        .expect("read room_leases")
}
