-- Sessions, session participants, egress, the event log and the rest of issue 3.
--
-- The connection table of 0001 (`participants`, one row per PA_ sid) becomes `connections`,
-- and `participants` is now one row per person per session. Rooms gain channel_id,
-- guest_access and the per-room event counter, and their sid becomes nullable (a room created
-- through the API has no RM_ sid until someone joins).
--
-- SQLite cannot drop a NOT NULL constraint, so rooms and the connection table are rebuilt.
-- Migrations run in a transaction with foreign keys enforced, and dropping a parent table
-- that is still referenced would fail; so the new connection table first references
-- `rooms_new`, the old tables are dropped child first, and renaming `rooms_new` to `rooms`
-- rewrites that reference (SQLite >= 3.26 updates foreign keys on RENAME).

CREATE TABLE rooms_new (
    room_id            TEXT    NOT NULL PRIMARY KEY CHECK (room_id <> ''),
    -- LiveKit's RM_… id of the current incarnation; NULL until the first join after an API
    -- create, replaced when a closed room starts again.
    sid                TEXT,
    name               TEXT,
    metadata           TEXT,
    status             TEXT    NOT NULL CHECK (status IN ('active', 'closed')),
    created_at         INTEGER NOT NULL,
    last_active_at     INTEGER NOT NULL,
    closed_at          INTEGER,
    empty_timeout_secs INTEGER NOT NULL CHECK (empty_timeout_secs >= 0),
    -- 0 means unlimited, as in LiveKit.
    max_participants   INTEGER NOT NULL CHECK (max_participants >= 0),
    -- ch_<ULID> of the parent channel (seed 002).
    channel_id         TEXT,
    guest_access       INTEGER NOT NULL DEFAULT 0 CHECK (guest_access IN (0, 1)),
    -- The seq of the room's latest event. Writers increment it in the transaction that
    -- appends the event, so per-room seqs are 1, 2, 3 … without gaps or duplicates.
    last_event_seq     INTEGER NOT NULL DEFAULT 0 CHECK (last_event_seq >= 0),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
) STRICT;

INSERT INTO rooms_new (room_id, sid, name, metadata, status, created_at, last_active_at,
                       closed_at, empty_timeout_secs, max_participants)
SELECT room_id, sid, name, metadata, status, created_at, last_active_at, closed_at,
       empty_timeout_secs, max_participants
FROM rooms;

-- One broadcast lifecycle (seed 002). Many per room over time, at most one open.
CREATE TABLE sessions (
    session_id     TEXT    NOT NULL PRIMARY KEY CHECK (session_id <> ''),
    room_id        TEXT    NOT NULL REFERENCES rooms_new (room_id),
    channel_id     TEXT,
    owner_identity TEXT,
    state          TEXT    NOT NULL CHECK (state IN ('IDLE', 'READY', 'PUBLISHING', 'LIVE',
                                                     'ENDING', 'STOPPED', 'CANCELLED')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    -- Bumped by every transition (an ETag for callers).
    version        INTEGER NOT NULL CHECK (version >= 1),
    CHECK ((state IN ('STOPPED', 'CANCELLED')) = (ended_at IS NOT NULL))
) STRICT;

-- At most one open session per room; the store's Conflict comes from here in the end.
CREATE UNIQUE INDEX sessions_one_open_per_room ON sessions (room_id)
    WHERE state IN ('IDLE', 'READY', 'PUBLISHING', 'LIVE', 'ENDING');
-- list_sessions (newest first).
CREATE INDEX sessions_room_created ON sessions (room_id, created_at);

-- One row per connection (keyed by LiveKit's PA_… sid), so a rejoin with the same identity
-- adds a row and never overwrites the history of the earlier connection.
CREATE TABLE connections (
    sid          TEXT    NOT NULL PRIMARY KEY CHECK (sid <> ''),
    -- No ON DELETE CASCADE: connection history must not vanish with a room row.
    room_id      TEXT    NOT NULL REFERENCES rooms_new (room_id),
    identity     TEXT    NOT NULL CHECK (identity <> ''),
    name         TEXT    NOT NULL DEFAULT '',
    role         TEXT    CHECK (role IN ('host', 'guest')),
    metadata     TEXT,
    joined_at    INTEGER NOT NULL,
    left_at      INTEGER,
    -- LiveKit DisconnectReason names (CLIENT_INITIATED, DUPLICATE_IDENTITY, …) or our own.
    leave_reason TEXT,
    -- Summary written at leave; NULL while connected or when closed by the store itself.
    bytes_in     INTEGER CHECK (bytes_in >= 0),
    bytes_out    INTEGER CHECK (bytes_out >= 0),
    packets_in   INTEGER CHECK (packets_in >= 0),
    packets_out  INTEGER CHECK (packets_out >= 0),
    packets_lost INTEGER CHECK (packets_lost >= 0),
    rtt_ms       INTEGER CHECK (rtt_ms >= 0),
    -- The session this connection belongs to (at join, or attached when a session was
    -- created while it was open); the session_id of its participant_left event.
    session_id   TEXT    REFERENCES sessions (session_id),
    CHECK ((left_at IS NULL) = (leave_reason IS NULL))
) STRICT;

INSERT INTO connections (sid, room_id, identity, name, role, metadata, joined_at, left_at,
                         leave_reason, bytes_in, bytes_out, packets_in, packets_out,
                         packets_lost, rtt_ms)
SELECT sid, room_id, identity, name, role, metadata, joined_at, left_at, leave_reason,
       bytes_in, bytes_out, packets_in, packets_out, packets_lost, rtt_ms
FROM participants;

-- Child first: nothing references the old connection table, and afterwards nothing
-- references the old rooms table either.
DROP TABLE participants;
DROP TABLE rooms;
ALTER TABLE rooms_new RENAME TO rooms;

CREATE INDEX rooms_status_created ON rooms (status, created_at);
-- Lookups of an identity's connections in a room (rejoins, removal).
CREATE INDEX connections_room_identity ON connections (room_id, identity);
-- list_participants orders by join time; open_connections / idle_rooms look for left_at NULL.
CREATE INDEX connections_room_joined ON connections (room_id, joined_at);
CREATE INDEX connections_open ON connections (room_id) WHERE left_at IS NULL;

-- One row per person (identity) per session, updated on rejoin.
CREATE TABLE participants (
    session_id   TEXT    NOT NULL REFERENCES sessions (session_id),
    -- Denormalised from the session so a room's people are one index away.
    room_id      TEXT    NOT NULL REFERENCES rooms (room_id),
    identity     TEXT    NOT NULL CHECK (identity <> ''),
    -- The current (latest) connection.
    sid          TEXT    NOT NULL REFERENCES connections (sid),
    name         TEXT    NOT NULL DEFAULT '',
    role         TEXT    CHECK (role IN ('host', 'guest')),
    metadata     TEXT,
    joined_at    INTEGER NOT NULL,
    left_at      INTEGER,
    leave_reason TEXT,
    -- How many connections this person made in the session.
    connections  INTEGER NOT NULL CHECK (connections >= 1),
    -- Totals over the connections that have left (rtt_ms: the latest measured).
    bytes_in     INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out    INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    packets_in   INTEGER NOT NULL DEFAULT 0 CHECK (packets_in >= 0),
    packets_out  INTEGER NOT NULL DEFAULT 0 CHECK (packets_out >= 0),
    packets_lost INTEGER NOT NULL DEFAULT 0 CHECK (packets_lost >= 0),
    rtt_ms       INTEGER CHECK (rtt_ms >= 0),
    PRIMARY KEY (session_id, identity),
    CHECK ((left_at IS NULL) = (leave_reason IS NULL))
) STRICT;

-- participant_left finds the rows whose current connection is leaving.
CREATE INDEX participants_sid ON participants (sid);

CREATE TABLE egress (
    egress_id  TEXT    NOT NULL PRIMARY KEY CHECK (egress_id <> ''),
    session_id TEXT    REFERENCES sessions (session_id),
    room_id    TEXT    NOT NULL REFERENCES rooms (room_id),
    kind       TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('starting', 'active', 'ending', 'complete',
                                                  'failed')),
    -- JSON text: where the output goes.
    output     TEXT    NOT NULL,
    error      TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at   INTEGER
) STRICT;

CREATE INDEX egress_room_created ON egress (room_id, created_at);
CREATE INDEX egress_session ON egress (session_id);
-- reconcile_after_restart looks for egress that never finished.
CREATE INDEX egress_unfinished ON egress (room_id) WHERE status IN ('starting', 'active', 'ending');

-- The append-only event log (transactional outbox). AUTOINCREMENT: ids are never reused,
-- because delivery cursors point at them.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    TEXT    NOT NULL REFERENCES rooms (room_id),
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    kind       TEXT    NOT NULL,
    -- No foreign key: the log stands on its own.
    session_id TEXT,
    -- JSON text.
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (room_id, seq)
) STRICT;

-- Per delivery sink (webhook URL, NATS): the id of the last event it has delivered.
CREATE TABLE delivery_cursors (
    sink       TEXT    NOT NULL PRIMARY KEY CHECK (sink <> ''),
    event_id   INTEGER NOT NULL CHECK (event_id >= 0),
    updated_at INTEGER NOT NULL
) STRICT;

-- Who did which admin operation (seed 001). Listed newest first by id.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    remote_addr TEXT,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail      TEXT,
    at          INTEGER NOT NULL
) STRICT;

-- Speech-to-text segments (seed 004); interim versions update the row in place.
CREATE TABLE transcript_segments (
    session_id           TEXT    NOT NULL REFERENCES sessions (session_id),
    segment_id           TEXT    NOT NULL CHECK (segment_id <> ''),
    participant_identity TEXT    NOT NULL,
    text                 TEXT    NOT NULL,
    language             TEXT,
    is_final             INTEGER NOT NULL CHECK (is_final IN (0, 1)),
    start_ms             INTEGER NOT NULL,
    end_ms               INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (session_id, segment_id)
) STRICT;

CREATE INDEX transcript_segments_order ON transcript_segments (session_id, start_ms);

-- Removed identities: tokens for (room, identity) issued at or before revoked_at are refused.
-- No foreign key: a revocation outlives the room row's state and must load at start.
CREATE TABLE revocations (
    room_id    TEXT    NOT NULL,
    identity   TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, identity)
) STRICT;

CREATE INDEX revocations_at ON revocations (revoked_at);
