//! The `Store` trait for a backend: each method runs the inherent `*_impl` method of the
//! same name through the store's `guarded` wrapper (PostgreSQL's circuit breaker).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{DialectStore, BACKEND};
use crate::store::{
    AuditEntry, AuditRecord, DeliveryLease, DeliveryLeaseOutcome, EgressRecord, EgressUpdate,
    EventRecord, LeaseOutcome, NewEgress, NewRoom, NewSession, NodeLoad, NodeRecord,
    NodeRegistration, NodeState, ParticipantJoin, ParticipantLeave, ParticipantRecord, Reconciled,
    RoomLease, RoomRecord, RoomSpec, RoomStatus, RoomUpdate, SessionParticipantRecord,
    SessionRecord, SessionState, Store, StoreError, TrackEvent, TranscriptRecord,
    TranscriptSegment,
};

#[async_trait]
impl Store for DialectStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn health(&self) -> Result<(), StoreError> {
        // A readiness probe gives up after a second or so; a database that is down
        // must make it answer 503, not time out waiting for a connection.
        let waited = crate::store::HEALTH_TIMEOUT;
        let query = sqlx::query("SELECT 1").execute(&self.pool);
        self.guarded(async {
            match tokio::time::timeout(waited, query).await {
                Ok(done) => done.map(drop).map_err(StoreError::from),
                Err(_) => Err(StoreError::Unavailable {
                    reason: format!("no answer within {} ms", waited.as_millis()),
                }),
            }
        })
        .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_room(&self, spec: &RoomSpec) -> Result<(RoomRecord, bool), StoreError> {
        self.guarded(self.create_room_impl(spec)).await
    }

    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError> {
        self.guarded(self.room_started_impl(room)).await
    }

    async fn update_room(
        &self,
        room_id: &str,
        update: &RoomUpdate,
    ) -> Result<RoomRecord, StoreError> {
        self.guarded(self.update_room_impl(room_id, update)).await
    }

    async fn room_finished(
        &self,
        room_id: &str,
        at: DateTime<Utc>,
        reason_for_open: &str,
    ) -> Result<(), StoreError> {
        self.guarded(self.room_finished_impl(room_id, at, reason_for_open))
            .await
    }

    async fn get_room(&self, room_id: &str) -> Result<RoomRecord, StoreError> {
        self.guarded(self.get_room_impl(room_id)).await
    }

    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError> {
        self.guarded(self.list_rooms_impl(status)).await
    }

    async fn list_rooms_page(
        &self,
        status: Option<RoomStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        self.guarded(self.list_rooms_page_impl(status, after, limit))
            .await
    }

    async fn idle_rooms(&self, now: DateTime<Utc>) -> Result<Vec<RoomRecord>, StoreError> {
        self.guarded(self.idle_rooms_impl(now)).await
    }

    async fn create_session(&self, s: &NewSession) -> Result<SessionRecord, StoreError> {
        self.guarded(self.create_session_impl(s)).await
    }

    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, StoreError> {
        self.guarded(self.get_session_impl(session_id)).await
    }

    async fn list_sessions(&self, room_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.guarded(self.list_sessions_impl(room_id)).await
    }

    async fn open_session(&self, room_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.guarded(self.open_session_impl(room_id)).await
    }

    async fn transition_session(
        &self,
        session_id: &str,
        from: SessionState,
        to: SessionState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError> {
        self.guarded(self.transition_session_impl(session_id, from, to, reason, at))
            .await
    }

    async fn participant_joined(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError> {
        self.guarded(self.participant_joined_impl(p)).await
    }

    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError> {
        self.guarded(self.participant_left_impl(sid, left)).await
    }

    async fn get_participant(&self, sid: &str) -> Result<ParticipantRecord, StoreError> {
        self.guarded(self.get_participant_impl(sid)).await
    }

    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.guarded(self.list_participants_impl(room_id)).await
    }

    async fn list_session_participants(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionParticipantRecord>, StoreError> {
        self.guarded(self.list_session_participants_impl(session_id))
            .await
    }

    async fn open_connections(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.guarded(self.open_connections_impl(room_id)).await
    }

    async fn record_track(&self, t: &TrackEvent) -> Result<(), StoreError> {
        self.guarded(self.record_track_impl(t)).await
    }

    async fn create_egress(&self, e: &NewEgress) -> Result<EgressRecord, StoreError> {
        self.guarded(self.create_egress_impl(e)).await
    }

    async fn update_egress(
        &self,
        egress_id: &str,
        u: &EgressUpdate,
    ) -> Result<EgressRecord, StoreError> {
        self.guarded(self.update_egress_impl(egress_id, u)).await
    }

    async fn get_egress(&self, egress_id: &str) -> Result<EgressRecord, StoreError> {
        self.guarded(self.get_egress_impl(egress_id)).await
    }

    async fn list_egress(
        &self,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<EgressRecord>, StoreError> {
        self.guarded(self.list_egress_impl(room_id, session_id))
            .await
    }

    async fn list_events(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.guarded(self.list_events_impl(room_id, after_seq, limit))
            .await
    }

    async fn events_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.guarded(self.events_after_impl(after_id, limit)).await
    }

    async fn delivery_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        self.guarded(self.delivery_cursor_impl(sink)).await
    }

    async fn set_delivery_cursor(&self, sink: &str, event_id: i64) -> Result<(), StoreError> {
        self.guarded(self.set_delivery_cursor_impl(sink, event_id))
            .await
    }

    async fn set_delivery_cursor_fenced(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
        event_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.guarded(self.set_delivery_cursor_fenced_impl(sink, node_id, generation, event_id, now))
            .await
    }

    async fn acquire_delivery_lease(
        &self,
        sink: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<DeliveryLeaseOutcome, StoreError> {
        self.guarded(self.acquire_delivery_lease_impl(sink, node_id, now, ttl))
            .await
    }

    async fn release_delivery_lease(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        self.guarded(self.release_delivery_lease_impl(sink, node_id, generation))
            .await
    }

    async fn delivery_lease(&self, sink: &str) -> Result<Option<DeliveryLease>, StoreError> {
        self.guarded(self.delivery_lease_impl(sink)).await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        self.guarded(self.record_audit_impl(entry)).await
    }

    async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.guarded(self.list_audit_impl(limit, before_id)).await
    }

    async fn upsert_transcript(
        &self,
        t: &TranscriptSegment,
    ) -> Result<(TranscriptRecord, bool), StoreError> {
        self.guarded(self.upsert_transcript_impl(t)).await
    }

    async fn list_transcripts(
        &self,
        session_id: &str,
    ) -> Result<Vec<TranscriptRecord>, StoreError> {
        self.guarded(self.list_transcripts_impl(session_id)).await
    }

    async fn revoke_identity(
        &self,
        room_id: &str,
        identity: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.guarded(self.revoke_identity_impl(room_id, identity, at))
            .await
    }

    async fn list_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        self.guarded(self.list_revocations_impl(since)).await
    }

    async fn register_node(&self, node: &NodeRegistration) -> Result<(), StoreError> {
        self.guarded(self.register_node_impl(node)).await
    }

    async fn node_heartbeat(
        &self,
        node_id: &str,
        load: NodeLoad,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.guarded(self.node_heartbeat_impl(node_id, load, at))
            .await
    }

    async fn set_node_state(
        &self,
        node_id: &str,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.guarded(self.set_node_state_impl(node_id, state, at))
            .await
    }

    async fn list_nodes(
        &self,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        self.guarded(self.list_nodes_impl(now, timeout)).await
    }

    async fn acquire_room_lease(
        &self,
        room_id: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.guarded(self.acquire_room_lease_impl(room_id, node_id, now, ttl))
            .await
    }

    async fn renew_room_leases(
        &self,
        node_id: &str,
        room_ids: &[String],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        self.guarded(self.renew_room_leases_impl(node_id, room_ids, now, ttl))
            .await
    }

    async fn release_room_lease(&self, room_id: &str, node_id: &str) -> Result<bool, StoreError> {
        self.guarded(self.release_room_lease_impl(room_id, node_id))
            .await
    }

    async fn room_owner(
        &self,
        room_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomLease>, StoreError> {
        self.guarded(self.room_owner_impl(room_id, now)).await
    }

    async fn reconcile_after_restart(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Reconciled, StoreError> {
        self.guarded(self.reconcile_after_restart_impl(node_id, at))
            .await
    }

    async fn release_node(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Reconciled, StoreError> {
        self.guarded(self.release_node_impl(node_id, at, timeout))
            .await
    }
}
