//! Column lists shared by SELECT and RETURNING clauses. Macros, because `concat!` needs
//! literals; every list matches a row struct in `records`. `ms!` and `json_text!` are the
//! dialect's (`<dialect>/dialect.rs`): they read a timestamp as unix milliseconds and JSON
//! as text.

macro_rules! room_columns {
    () => {
        concat!(
            "room_id, sid, name, metadata, status, ",
            ms!("created_at"),
            ", ",
            ms!("last_active_at"),
            ", ",
            ms!("closed_at"),
            ", empty_timeout_secs, max_participants, channel_id, guest_access"
        )
    };
}

macro_rules! connection_columns {
    () => {
        concat!(
            "sid, room_id, identity, name, role, metadata, ",
            ms!("joined_at"),
            ", ",
            ms!("left_at"),
            ", leave_reason, bytes_in, bytes_out, packets_in, packets_out, packets_lost, rtt_ms"
        )
    };
}

macro_rules! session_columns {
    () => {
        concat!(
            "session_id, room_id, channel_id, owner_identity, state, ",
            ms!("created_at"),
            ", ",
            ms!("updated_at"),
            ", ",
            ms!("ended_at"),
            ", version"
        )
    };
}

macro_rules! session_participant_columns {
    () => {
        concat!(
            "session_id, room_id, identity, sid, name, role, metadata, ",
            ms!("joined_at"),
            ", ",
            ms!("left_at"),
            ", leave_reason, connections, bytes_in, bytes_out, packets_in, packets_out, \
             packets_lost, rtt_ms"
        )
    };
}

macro_rules! egress_columns {
    () => {
        concat!(
            "egress_id, session_id, room_id, kind, status, ",
            json_text!("output"),
            ", error, ",
            ms!("created_at"),
            ", ",
            ms!("updated_at"),
            ", ",
            ms!("started_at"),
            ", ",
            ms!("ended_at")
        )
    };
}

macro_rules! event_columns {
    () => {
        concat!(
            "id, room_id, seq, kind, session_id, ",
            json_text!("payload"),
            ", ",
            ms!("created_at")
        )
    };
}

macro_rules! audit_columns {
    () => {
        concat!(
            "id, actor, action, target, remote_addr, outcome, detail, ",
            ms!("at")
        )
    };
}

macro_rules! transcript_columns {
    () => {
        concat!(
            "session_id, segment_id, participant_identity, text, language, is_final, start_ms, \
             end_ms, ",
            ms!("created_at"),
            ", ",
            ms!("updated_at")
        )
    };
}

macro_rules! node_columns {
    () => {
        concat!(
            "node_id, http_url, public_url, max_rooms, rooms, participants, state, ",
            ms!("started_at"),
            ", ",
            ms!("heartbeat_at"),
            ", ",
            ms!("released_at")
        )
    };
}
