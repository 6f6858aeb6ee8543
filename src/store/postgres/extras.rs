//! Transcript segments and revoked identities.

use chrono::{DateTime, Utc};

use super::PostgresStore;
use crate::store::records::{all, from_millis, to_millis, TranscriptRow};
use crate::store::{StoreError, TranscriptRecord, TranscriptSegment};

impl PostgresStore {
    pub(super) async fn upsert_transcript_impl(
        &self,
        t: &TranscriptSegment,
    ) -> Result<(TranscriptRecord, bool), StoreError> {
        let mut tx = self.write().await?;
        let session: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM sessions WHERE session_id = $1")
                .bind(&t.session_id)
                .fetch_optional(&mut *tx)
                .await?;
        if session.is_none() {
            return Err(StoreError::not_found(format!("session `{}`", t.session_id)));
        }
        // One statement decides (so concurrent versions of a segment cannot interleave):
        // insert, or update in place unless the stored version is final and this one is
        // not (a late interim result of a finished utterance is stale). created_at stays
        // that of the first version.
        let row: Option<TranscriptRow> = sqlx::query_as(concat!(
            "INSERT INTO transcript_segments (session_id, segment_id, participant_identity, \
                 text, language, is_final, start_ms, end_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ",
            ts!("$9"),
            ", ",
            ts!("$9"),
            ") ON CONFLICT (session_id, segment_id) DO UPDATE SET \
                 participant_identity = EXCLUDED.participant_identity, text = EXCLUDED.text, \
                 language = EXCLUDED.language, is_final = EXCLUDED.is_final, \
                 start_ms = EXCLUDED.start_ms, end_ms = EXCLUDED.end_ms, \
                 updated_at = EXCLUDED.updated_at \
             WHERE NOT transcript_segments.is_final OR EXCLUDED.is_final \
             RETURNING ",
            transcript_columns!()
        ))
        .bind(&t.session_id)
        .bind(&t.segment_id)
        .bind(&t.participant_identity)
        .bind(&t.text)
        .bind(&t.language)
        .bind(t.is_final)
        .bind(t.start_ms)
        .bind(t.end_ms)
        .bind(to_millis(t.at))
        .fetch_optional(&mut *tx)
        .await?;
        let result = match row {
            Some(row) => (row.try_into()?, true),
            None => {
                let stored: TranscriptRow = sqlx::query_as(concat!(
                    "SELECT ",
                    transcript_columns!(),
                    " FROM transcript_segments WHERE session_id = $1 AND segment_id = $2"
                ))
                .bind(&t.session_id)
                .bind(&t.segment_id)
                .fetch_one(&mut *tx)
                .await?;
                (stored.try_into()?, false)
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    pub(super) async fn list_transcripts_impl(
        &self,
        session_id: &str,
    ) -> Result<Vec<TranscriptRecord>, StoreError> {
        let rows: Vec<TranscriptRow> = sqlx::query_as(concat!(
            "SELECT ",
            transcript_columns!(),
            " FROM transcript_segments WHERE session_id = $1 \
             ORDER BY start_ms, segment_id COLLATE \"C\""
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.session_exists(session_id).await? {
            return Err(StoreError::not_found(format!("session `{session_id}`")));
        }
        Ok(all(rows)?)
    }

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
            ") ON CONFLICT (room_id, identity) DO UPDATE SET \
                 revoked_at = GREATEST(revocations.revoked_at, EXCLUDED.revoked_at)"
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
            "SELECT room_id, identity, FLOOR(EXTRACT(EPOCH FROM revoked_at) * 1000)::BIGINT \
             FROM revocations WHERE revoked_at > ",
            ts!("$1"),
            " ORDER BY revoked_at, room_id COLLATE \"C\", identity COLLATE \"C\""
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
