//! Inputs and records of the session store, and the conversion from database rows.
//!
//! Both backends decode rows into the same private row structs (timestamps as unix
//! milliseconds, counters as i64, JSON as text), so the mapping to the public records lives
//! here once and the two stores cannot drift apart in how they interpret a column.
//!
//! Timestamps are kept with millisecond precision in both backends: finer parts of a
//! `DateTime` given to the store are truncated, and records come back truncated.

mod convert;
mod egress;
mod events;
mod leases;
mod nodes;
mod participants;
mod rooms;
mod sessions;
mod transcripts;

pub(crate) use convert::{all, found, from_millis, to_db_count, to_millis};
pub(crate) use egress::EgressRow;
pub use egress::{EgressRecord, EgressStatus, EgressUpdate, NewEgress};
pub use events::{kinds, AuditEntry, AuditRecord, EventRecord};
pub(crate) use events::{AuditRow, EventRow, NewEvent};
pub use leases::{DeliveryLease, DeliveryLeaseOutcome, LeaseOutcome, RoomLease};
pub(crate) use leases::{DeliveryLeaseRow, LeaseRow};
pub(crate) use nodes::NodeRow;
pub use nodes::{NodeLoad, NodeRecord, NodeRegistration, NodeState};
pub(crate) use participants::{
    same_connection, ConnectionRow, ParticipantRow, SessionParticipantRow,
};
pub use participants::{
    ParticipantJoin, ParticipantLeave, ParticipantRecord, ParticipantRole, ParticipantSummary,
    SessionParticipantRecord, TrackEvent,
};
pub(crate) use rooms::RoomRow;
pub use rooms::{NewRoom, RoomRecord, RoomSpec, RoomStatus, RoomUpdate};
pub(crate) use sessions::SessionRow;
pub use sessions::{NewSession, Reconciled, SessionRecord, SessionState};
pub(crate) use transcripts::TranscriptRow;
pub use transcripts::{TranscriptRecord, TranscriptSegment};
