//! Column lists shared by SELECT and RETURNING clauses. Macros, because `concat!` needs
//! literals; every list matches a row struct in `records`.

/// The n-th bound parameter, for queries shared with PostgreSQL (`store/shared/`).
macro_rules! param {
    ($n:literal) => {
        concat!("?", $n)
    };
}

/// A bound unix-millisecond parameter: SQLite stores timestamps as those integers.
macro_rules! ts {
    ($param:expr) => {
        $param
    };
}

macro_rules! room_columns {
    () => {
        "room_id, sid, name, metadata, status, created_at, last_active_at, closed_at, \
         empty_timeout_secs, max_participants, channel_id, guest_access"
    };
}

macro_rules! connection_columns {
    () => {
        "sid, room_id, identity, name, role, metadata, joined_at, left_at, leave_reason, \
         bytes_in, bytes_out, packets_in, packets_out, packets_lost, rtt_ms"
    };
}

macro_rules! session_columns {
    () => {
        "session_id, room_id, channel_id, owner_identity, state, created_at, updated_at, \
         ended_at, version"
    };
}

macro_rules! session_participant_columns {
    () => {
        "session_id, room_id, identity, sid, name, role, metadata, joined_at, left_at, \
         leave_reason, connections, bytes_in, bytes_out, packets_in, packets_out, \
         packets_lost, rtt_ms"
    };
}

macro_rules! egress_columns {
    () => {
        "egress_id, session_id, room_id, kind, status, output, error, created_at, updated_at, \
         started_at, ended_at"
    };
}

macro_rules! event_columns {
    () => {
        "id, room_id, seq, kind, session_id, payload, created_at"
    };
}

macro_rules! audit_columns {
    () => {
        "id, actor, action, target, remote_addr, outcome, detail, at"
    };
}

macro_rules! transcript_columns {
    () => {
        "session_id, segment_id, participant_identity, text, language, is_final, start_ms, \
         end_ms, created_at, updated_at"
    };
}
