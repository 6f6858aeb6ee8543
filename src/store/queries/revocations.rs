//! Revoked identities: tokens of (room, identity) issued before a moment are refused.

use chrono::{DateTime, Utc};

use super::DialectStore;
use crate::store::records::{from_millis, to_millis};
use crate::store::StoreError;

impl DialectStore {
    pub(super) async fn revoke_identity_impl(
        &self,
        room_id: &str,
        identity: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // A revocation only ever moves forward: an older, replayed one must not re-admit
        // tokens the newer one refused.
        sqlx::query(concat!(
            "INSERT INTO revocations (room_id, identity, revoked_at) VALUES ($1, $2, ",
            ts!("$3"),
            ") ON CONFLICT (room_id, identity) DO UPDATE SET revoked_at = ",
            greatest!(),
            "(revocations.revoked_at, excluded.revoked_at)"
        ))
        .bind(room_id)
        .bind(identity)
        .bind(to_millis(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn list_revocations_impl(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(concat!(
            "SELECT room_id, identity, ",
            ms!("revoked_at"),
            " FROM revocations WHERE revoked_at > ",
            ts!("$1"),
            " ORDER BY revoked_at, room_id",
            by_bytes!(),
            ", identity",
            by_bytes!()
        ))
        .bind(to_millis(since))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(room_id, identity, at)| {
                Ok((
                    room_id,
                    identity,
                    from_millis(at, "revocations.revoked_at")?,
                ))
            })
            .collect()
    }
}
