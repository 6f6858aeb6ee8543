// Part of the API (e.g. get_participant, the pools) has no caller in the server yet.
#![allow(dead_code)]
//! Session store: the durable record of rooms, sessions, participants, egress and the
//! event log.
//!
//! One [`Store`] trait with two implementations that behave the same (a conformance test
//! suite in `src/store/tests/` runs every test against both):
//! - [`SqliteStore`], the embedded default (`sqlite://./data/switchboard.db?mode=rwc`);
//! - [`PostgresStore`], for production and for several nodes sharing one database.
//!
//! Both apply the versioned migrations in `migrations/<dialect>/` when they open, so a
//! fresh database is usable at once and `switchboard migrate` is the same code path.
//!
//! Where things are:
//! - `queries/`: every query and the `Store` implementation, written once. Each backend
//!   module includes it as its own child, so it is compiled once per backend against that
//!   backend's driver; `queries/mod.rs` lists what it gets from the backend. One file per
//!   area: `rooms.rs`, `sessions.rs`, `participants.rs`, `egress.rs`, `transcripts.rs`,
//!   `revocations.rs`, `log.rs` (events, delivery cursors, audit), `nodes.rs` (cluster
//!   membership), `reconcile.rs` (recovery per node), plus
//!   `tx.rs` (steps inside one write transaction) and `columns.rs` (column lists).
//! - `sqlite/`, `postgres/`: opening and migrating, the write transaction, and `dialect.rs`,
//!   the spellings that differ (timestamps, JSON, `MAX`/`GREATEST`, collation, row locks)
//!   and PostgreSQL's extra lock before appending an event.
//! - `records/`: inputs, records, and the mapping from rows; `outbox.rs`: the event each
//!   change appends; `error.rs`, `breaker.rs`; `tests/`: the conformance suite.
//!
//! A new method goes into the trait here, its body into `queries/` and its forwarding into
//! `queries/store_impl.rs`; a new column into `queries/columns.rs`, the row struct in
//! `records/` and a new numbered migration per dialect.

mod breaker;
mod error;
mod outbox;
mod postgres;
mod records;
mod sqlite;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use error::StoreError;
pub use postgres::PostgresStore;
// Part of the store's API for its callers (control, HTTP, delivery), some not wired yet.
#[allow(unused_imports)]
pub use records::{
    kinds, AuditEntry, AuditRecord, DeliveryLease, DeliveryLeaseOutcome, EgressRecord,
    EgressStatus, EgressUpdate, EventRecord, LeaseOutcome, NewEgress, NewRoom, NewSession,
    NodeLoad, NodeRecord, NodeRegistration, NodeState, ParticipantJoin, ParticipantLeave,
    ParticipantRecord, ParticipantRole, ParticipantSummary, Reconciled, RoomLease, RoomRecord,
    RoomSpec, RoomStatus, RoomUpdate, SessionParticipantRecord, SessionRecord, SessionState,
    TrackEvent, TranscriptRecord, TranscriptSegment,
};
pub use sqlite::SqliteStore;

/// The session store. Every method is one atomic change or one consistent read.
///
/// Transactional outbox: every method that changes room or session state appends the
/// event(s) recording the change to the event log in the same transaction, numbered per room
/// by `seq` (1, 2, 3 … without gaps) and globally by `id`. A method that fails writes no
/// event. (Audit entries, transcripts, revocations and delivery cursors are not room state
/// and have no event kind, so they write none.)
///
/// Writes are idempotent where the SFU may repeat them (a room started twice, a join retried
/// with the same sid, a second leave), because its events can be replayed after errors.
/// The contract is `docs/design/session-store-api.md`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("sqlite" or "postgres"), for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers (`SELECT 1`).
    async fn health(&self) -> Result<(), StoreError>;

    /// Closes the connection pool, waiting for running queries. Later calls fail.
    async fn close(&self);

    // ---- rooms ----

    /// Creates a room through the API, or returns the existing one unchanged (created =
    /// false). A closed room of that id is reopened (active, closed_at NULL, no sid, settings
    /// from the spec; created_at kept) — created = true. Event: room_created when created.
    async fn create_room(&self, spec: &RoomSpec) -> Result<(RoomRecord, bool), StoreError>;

    /// Records that a room started (the SFU's first join): inserts it, or marks an existing
    /// one active again with the new sid, limits and `last_active_at`. `created_at` is set
    /// only on first insert; `name`/`metadata` of `None` keep the stored values. Event:
    /// room_started whenever the stored room changed, so an identical repeat is harmless.
    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError>;

    /// Changes the given settings. Event: room_updated. NotFound for an unknown room.
    async fn update_room(
        &self,
        room_id: &str,
        update: &RoomUpdate,
    ) -> Result<RoomRecord, StoreError>;

    /// Closes a room at `at`: its open connections leave with `reason_for_open`
    /// (participant_left each), its open session ends (IDLE/READY/PUBLISHING → CANCELLED,
    /// LIVE → ENDING → STOPPED, ENDING → STOPPED, session_state_changed per step with reason
    /// `reason_for_open`), then room_finished. NotFound for an unknown room; closing a closed
    /// room is a no-op (no events, the first `closed_at` stays).
    async fn room_finished(
        &self,
        room_id: &str,
        at: DateTime<Utc>,
        reason_for_open: &str,
    ) -> Result<(), StoreError>;

    /// One room, or NotFound.
    async fn get_room(&self, room_id: &str) -> Result<RoomRecord, StoreError>;

    /// Rooms ordered by `created_at` (then `room_id`), optionally only those in `status`.
    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError>;

    /// One page of [`Store::list_rooms`], in the same order: at most `limit` rooms after
    /// `after`, the `(created_at, room_id)` of the previous page's last room.
    async fn list_rooms_page(
        &self,
        status: Option<RoomStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError>;

    /// Active rooms with no open connection whose `last_active_at` is more than their own
    /// `empty_timeout_secs` before `now`, ordered like `list_rooms`.
    async fn idle_rooms(&self, now: DateTime<Utc>) -> Result<Vec<RoomRecord>, StoreError>;

    // ---- sessions ----

    /// Creates a session. NotFound: unknown room; RoomNotActive: room closed;
    /// Conflict: the room already has an open session (or the session id is taken). Every
    /// open connection of the room becomes a participant of the new session. Event:
    /// session_state_changed {from: null, to: state}.
    async fn create_session(&self, s: &NewSession) -> Result<SessionRecord, StoreError>;

    /// One session, or NotFound.
    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, StoreError>;

    /// The room's sessions, newest first. NotFound for an unknown room.
    async fn list_sessions(&self, room_id: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// The room's open session, if any. NotFound for an unknown room.
    async fn open_session(&self, room_id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Compare-and-set: moves the session from `from` to `to` only if it is still in `from`,
    /// bumping version and updated_at (ended_at set for STOPPED/CANCELLED, cleared
    /// otherwise). StateConflict{current} when it is not in `from`; NotFound for an unknown
    /// session; Conflict if `to` is open while another session of the room is. Legality of
    /// the move is the caller's business. Event: session_state_changed {from, to, reason}.
    /// Two concurrent calls with the same `from` never both succeed.
    async fn transition_session(
        &self,
        session_id: &str,
        from: SessionState,
        to: SessionState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError>;

    // ---- participants ----

    /// Records a connection and bumps the room's `last_active_at`; when `session_id` is Some,
    /// upserts that session's participant (first join sets joined_at; a rejoin keeps it,
    /// takes the new sid, clears left_at/leave_reason, counts the connection and updates
    /// name/role/metadata). Event: participant_joined. NotFound: unknown room or session;
    /// Conflict: the session belongs to another room. Retrying with the same sid, room and
    /// identity returns the stored row (no event); the same sid for another room or identity
    /// is a Conflict. A rejoin (new sid, same identity) adds a connection row.
    async fn participant_joined(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError>;

    /// Closes a connection (reason, summary, room `last_active_at`) and every session
    /// participant whose current sid is this one (left_at, leave_reason), adding the summary
    /// to their totals (bytes/packets summed, rtt_ms = latest measured). The connection's own
    /// session participant gets the summary too when a rejoin already replaced it as the
    /// current sid (it stays present), so totals cover every connection. Event:
    /// participant_left, with the connection's session. NotFound for an unknown sid.
    /// A second leave is ignored: the first reason is the true one.
    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError>;

    /// One connection by sid, or NotFound.
    async fn get_participant(&self, sid: &str) -> Result<ParticipantRecord, StoreError>;

    /// All connections ever made to a room, ordered by `joined_at` (then sid).
    /// NotFound when the room does not exist; an empty list when nobody joined yet.
    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError>;

    /// A session's participants ordered by joined_at, identity. NotFound: unknown session.
    async fn list_session_participants(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionParticipantRecord>, StoreError>;

    /// Connections of the room that are still open, ordered by joined_at (then sid).
    /// NotFound for an unknown room.
    async fn open_connections(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError>;

    // ---- tracks ----

    /// Appends track_published / track_unpublished (no table). NotFound for an unknown room.
    async fn record_track(&self, t: &TrackEvent) -> Result<(), StoreError>;

    // ---- egress ----

    /// Records a requested egress, status starting. NotFound: unknown room or session.
    /// Event: egress_started.
    async fn create_egress(&self, e: &NewEgress) -> Result<EgressRecord, StoreError>;

    /// Applies a status report (no compare). Conflict once the egress is complete/failed.
    /// Event: egress_updated, or egress_ended for complete/failed.
    async fn update_egress(
        &self,
        egress_id: &str,
        u: &EgressUpdate,
    ) -> Result<EgressRecord, StoreError>;

    /// One egress, or NotFound.
    async fn get_egress(&self, egress_id: &str) -> Result<EgressRecord, StoreError>;

    /// Egress records, filtered by room and/or session, newest first.
    async fn list_egress(
        &self,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<EgressRecord>, StoreError>;

    // ---- event log ----

    /// Replay of one room: seq > after_seq, ascending, at most `limit`. NotFound for an
    /// unknown room.
    async fn list_events(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Delivery: every room, id > after_id, ascending, at most `limit`.
    async fn events_after(&self, after_id: i64, limit: u32)
        -> Result<Vec<EventRecord>, StoreError>;

    /// The last event id a sink has delivered; 0 when unknown.
    async fn delivery_cursor(&self, sink: &str) -> Result<i64, StoreError>;

    /// Remembers (durably) the last event id a sink has delivered, unconditionally (tests,
    /// tools; delivery itself uses [`Store::set_delivery_cursor_fenced`]).
    async fn set_delivery_cursor(&self, sink: &str, event_id: i64) -> Result<(), StoreError>;

    /// Remembers the last event id a sink has delivered, only if `node_id` holds the sink's
    /// delivery lease in `generation` and it is unexpired at `now`; the check and the write
    /// are one transaction that locks the lease row, so a takeover cannot slip in between.
    /// False (nothing written) when the lease is not held: the caller must stop delivering.
    async fn set_delivery_cursor_fenced(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
        event_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    // ---- delivery once ----

    /// Takes sink `sink`'s delivery lease for `node_id` until `now + ttl`, in one atomic
    /// conditional upsert: granted when the sink has no lease, its lease expired (at or
    /// before `now`; the generation then goes up by one, also for the same node), or
    /// `node_id` holds it unexpired (renewed: generation and `acquired_at` kept, the expiry
    /// only moves forward). Otherwise the current holder. Of nodes racing, one is granted.
    async fn acquire_delivery_lease(
        &self,
        sink: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<DeliveryLeaseOutcome, StoreError>;

    /// Gives up `node_id`'s lease of `sink` in `generation` (graceful stop): it expires at
    /// once, so any node may take it; the row stays, so generations keep counting. Whether
    /// it was held; a newer or another node's lease is left alone.
    async fn release_delivery_lease(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
    ) -> Result<bool, StoreError>;

    /// The sink's lease row, expired or not, if it ever had one.
    async fn delivery_lease(&self, sink: &str) -> Result<Option<DeliveryLease>, StoreError>;

    // ---- audit log ----

    /// Appends an audit entry and returns it with its id.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;

    /// Audit entries newest first (by id), at most `limit`, only ids below `before_id`.
    async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    // ---- transcripts ----

    /// Upserts by (session_id, segment_id): an interim segment is updated in place until a
    /// final one arrives; once final, interim updates are ignored (the stored record comes
    /// back with changed = false) and a later final replaces it. NotFound: unknown session.
    async fn upsert_transcript(
        &self,
        t: &TranscriptSegment,
    ) -> Result<(TranscriptRecord, bool), StoreError>;

    /// A session's segments ordered by start_ms, then segment_id. NotFound: unknown session.
    async fn list_transcripts(&self, session_id: &str)
        -> Result<Vec<TranscriptRecord>, StoreError>;

    // ---- removed identities ----

    /// Remembers that tokens for (room_id, identity) issued at or before `at` are refused
    /// (a later revocation moves `at` forward, never back).
    async fn revoke_identity(
        &self,
        room_id: &str,
        identity: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Revocations newer than `since` as (room_id, identity, at), oldest first.
    async fn list_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError>;

    // ---- cluster membership ----

    /// Registers a node at its start (upsert by node_id): its URLs and capacity, no load,
    /// state active, `started_at` and `heartbeat_at` = `node.started_at`, not released.
    async fn register_node(&self, node: &NodeRegistration) -> Result<(), StoreError>;

    /// A node's heartbeat: its load, `heartbeat_at` moved forward to `at` (never back), and
    /// any earlier release forgotten (the node is evidently there). NotFound for a node that
    /// never registered.
    async fn node_heartbeat(
        &self,
        node_id: &str,
        load: NodeLoad,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a node's own change of state (draining at shutdown, stopped at its end),
    /// counting as a heartbeat at `at`. NotFound for a node that never registered.
    async fn set_node_state(
        &self,
        node_id: &str,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Every node ever registered, by node_id, each alive when it is not stopped and its
    /// heartbeat is at most `timeout` older than `now`.
    async fn list_nodes(
        &self,
        now: DateTime<Utc>,
        timeout: std::time::Duration,
    ) -> Result<Vec<NodeRecord>, StoreError>;

    // ---- placement by lease ----

    /// Takes room `room_id` for node `node_id` until `now + ttl`, in one atomic conditional
    /// upsert: granted when the room has no lease, its lease expired (at or before `now`),
    /// or `node_id` already holds it (renewed; `acquired_at` kept). Otherwise the current
    /// holder, with its public URL when its `nodes` row exists. The room need not be
    /// recorded yet. Of nodes racing for one room, exactly one is granted.
    async fn acquire_room_lease(
        &self,
        room_id: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Renews (or takes again, when free or expired) `node_id`'s leases of `room_ids` until
    /// `now + ttl`, as [`Store::acquire_room_lease`] does for each; returns the rooms held by
    /// another node, in the order given (the lease was lost: this node must stop serving
    /// them).
    async fn renew_room_leases(
        &self,
        node_id: &str,
        room_ids: &[String],
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Gives up `node_id`'s lease of `room_id` (the room closed there). Whether it held one;
    /// another node's lease is left alone.
    async fn release_room_lease(&self, room_id: &str, node_id: &str) -> Result<bool, StoreError>;

    /// The room's unexpired lease at `now`, if any.
    async fn room_owner(
        &self,
        room_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomLease>, StoreError>;

    // ---- recovery per node ----

    /// Run once at start by node `node_id`, after it registered and before it serves; one
    /// transaction per room, with events. Its own rows, and rows with no node (written
    /// before clustering), are closed; other nodes' rows are left alone. Open connections
    /// (and their session participants) leave at `at` with "server_restart"; the open
    /// session of a room that ran on it moves PUBLISHING → CANCELLED, LIVE → ENDING →
    /// STOPPED, ENDING → STOPPED (reason "server_restart"); egress starting/active/ending →
    /// failed with "server restarted during egress". Rooms stay active, on no node.
    async fn reconcile_after_restart(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Reconciled, StoreError>;

    /// Run by a live node for a dead one: does what [`Store::reconcile_after_restart`] does
    /// for `node_id`'s rows only (no legacy rows), with reason "node_lost", but only while
    /// that node's heartbeat is more than `timeout` before `at` (checked under each room's
    /// lock, so a node that came back keeps its rows), then marks it released and deletes
    /// its room leases (same guard). Nothing to do
    /// (a live, unknown or already released node) is not an error; running it twice, or on
    /// two nodes at once, closes everything once.
    async fn release_node(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
        timeout: std::time::Duration,
    ) -> Result<Reconciled, StoreError>;
}

/// The backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn backend_for(database_url: &str) -> Result<Backend, StoreError> {
    // Only the scheme is inspected (and echoed in errors): the rest may hold a password.
    let scheme = database_url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        Some(other) => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
        None => Err(StoreError::UnsupportedUrl {
            scheme: "(none)".to_owned(),
        }),
    }
}

/// How long [`Store::health`] waits for the database before calling it unavailable.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// Opens the store a URL names (`sqlite:…`, `postgres://…` or `postgresql://…`) and brings
/// its schema up to date.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match backend_for(database_url)? {
        Backend::Sqlite => Arc::new(SqliteStore::open(database_url).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(database_url).await?),
    };
    tracing::info!(backend = store.backend(), "session store ready");
    Ok(store)
}

/// Applies pending migrations to the database a URL names and closes it again
/// (`switchboard migrate`).
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let store = open_store(database_url).await?;
    store.close().await;
    Ok(())
}
