//! Transcript segments from a speech-to-text worker (seed 004).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::from_millis;

/// A segment as the worker reports it; interim versions of a segment share its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    pub session_id: String,
    pub segment_id: String,
    pub participant_identity: String,
    pub text: String,
    pub language: Option<String>,
    pub is_final: bool,
    pub start_ms: i64,
    pub end_ms: i64,
    pub at: DateTime<Utc>,
}

/// A stored segment (`at` of the writes became `created_at` / `updated_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptRecord {
    pub session_id: String,
    pub segment_id: String,
    pub participant_identity: String,
    pub text: String,
    pub language: Option<String>,
    pub is_final: bool,
    pub start_ms: i64,
    pub end_ms: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `transcript_segments` row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TranscriptRow {
    session_id: String,
    segment_id: String,
    participant_identity: String,
    text: String,
    language: Option<String>,
    is_final: bool,
    start_ms: i64,
    end_ms: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TranscriptRow> for TranscriptRecord {
    type Error = sqlx::Error;

    fn try_from(row: TranscriptRow) -> Result<Self, Self::Error> {
        Ok(Self {
            created_at: from_millis(row.created_at, "transcript_segments.created_at")?,
            updated_at: from_millis(row.updated_at, "transcript_segments.updated_at")?,
            session_id: row.session_id,
            segment_id: row.segment_id,
            participant_identity: row.participant_identity,
            text: row.text,
            language: row.language,
            is_final: row.is_final,
            start_ms: row.start_ms,
            end_ms: row.end_ms,
        })
    }
}
