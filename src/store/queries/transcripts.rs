//! Transcript segments of a session.

use super::DialectStore;
use crate::store::records::{all, to_millis, TranscriptRow};
use crate::store::{StoreError, TranscriptRecord, TranscriptSegment};

impl DialectStore {
    pub(super) async fn upsert_transcript_impl(
        &self,
        t: &TranscriptSegment,
    ) -> Result<(TranscriptRecord, bool), StoreError> {
        let mut tx = self.write().await?;
        let session: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM sessions WHERE session_id = $1")
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
                 participant_identity = excluded.participant_identity, text = excluded.text, \
                 language = excluded.language, is_final = excluded.is_final, \
                 start_ms = excluded.start_ms, end_ms = excluded.end_ms, \
                 updated_at = excluded.updated_at \
             WHERE NOT transcript_segments.is_final OR excluded.is_final \
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
            " FROM transcript_segments WHERE session_id = $1 ORDER BY start_ms, segment_id",
            by_bytes!()
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.session_exists(session_id).await? {
            return Err(StoreError::not_found(format!("session `{session_id}`")));
        }
        Ok(all(rows)?)
    }
}
