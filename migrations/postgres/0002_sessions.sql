-- Sessions, session participants, egress, the event log and the rest of issue 3.
--
-- The connection table of 0001 (`participants`, one row per PA_ sid) becomes `connections`,
-- and `participants` is now one row per person per session. Rooms gain channel_id,
-- guest_access and the per-room event counter, and their sid becomes nullable (a room created
-- through the API has no RM_ sid until someone joins).

ALTER TABLE rooms ALTER COLUMN sid DROP NOT NULL;
-- ch_<ULID> of the parent channel (seed 002).
ALTER TABLE rooms ADD COLUMN channel_id TEXT;
ALTER TABLE rooms ADD COLUMN guest_access BOOLEAN NOT NULL DEFAULT FALSE;
-- The seq of the room's latest event. Writers increment it (UPDATE … RETURNING, which takes
-- the row lock) in the transaction that appends the event, so per-room seqs are 1, 2, 3 …
-- without gaps or duplicates.
ALTER TABLE rooms ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0
    CHECK (last_event_seq >= 0);

-- The old names would collide with the new `participants` table's constraints and indexes.
ALTER TABLE participants RENAME TO connections;
ALTER INDEX participants_pkey RENAME TO connections_pkey;
ALTER TABLE connections RENAME CONSTRAINT participants_room_id_fkey TO connections_room_id_fkey;
ALTER INDEX participants_room_identity RENAME TO connections_room_identity;
ALTER INDEX participants_room_joined RENAME TO connections_room_joined;
-- open_connections / idle_rooms look for connections still open.
CREATE INDEX connections_open ON connections (room_id) WHERE left_at IS NULL;

-- One broadcast lifecycle (seed 002). Many per room over time, at most one open.
CREATE TABLE sessions (
    session_id     TEXT        NOT NULL PRIMARY KEY CHECK (session_id <> ''),
    room_id        TEXT        NOT NULL REFERENCES rooms (room_id),
    channel_id     TEXT,
    owner_identity TEXT,
    state          TEXT        NOT NULL CHECK (state IN ('IDLE', 'READY', 'PUBLISHING', 'LIVE',
                                                         'ENDING', 'STOPPED', 'CANCELLED')),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    ended_at       TIMESTAMPTZ,
    -- Bumped by every transition (an ETag for callers).
    version        BIGINT      NOT NULL CHECK (version >= 1),
    CHECK ((state IN ('STOPPED', 'CANCELLED')) = (ended_at IS NOT NULL))
);

-- At most one open session per room; the store's Conflict comes from here in the end.
CREATE UNIQUE INDEX sessions_one_open_per_room ON sessions (room_id)
    WHERE state IN ('IDLE', 'READY', 'PUBLISHING', 'LIVE', 'ENDING');
-- list_sessions (newest first).
CREATE INDEX sessions_room_created ON sessions (room_id, created_at);

-- The session this connection belongs to (at join, or attached when a session was created
-- while it was open); the session_id of its participant_left event.
ALTER TABLE connections ADD COLUMN session_id TEXT REFERENCES sessions (session_id);

-- One row per person (identity) per session, updated on rejoin.
CREATE TABLE participants (
    session_id   TEXT        NOT NULL REFERENCES sessions (session_id),
    -- Denormalised from the session so a room's people are one index away.
    room_id      TEXT        NOT NULL REFERENCES rooms (room_id),
    identity     TEXT        NOT NULL CHECK (identity <> ''),
    -- The current (latest) connection.
    sid          TEXT        NOT NULL REFERENCES connections (sid),
    name         TEXT        NOT NULL DEFAULT '',
    role         TEXT        CHECK (role IN ('host', 'guest')),
    metadata     TEXT,
    joined_at    TIMESTAMPTZ NOT NULL,
    left_at      TIMESTAMPTZ,
    leave_reason TEXT,
    -- How many connections this person made in the session.
    connections  BIGINT      NOT NULL CHECK (connections >= 1),
    -- Totals over the connections that have left (rtt_ms: the latest measured).
    bytes_in     BIGINT      NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out    BIGINT      NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    packets_in   BIGINT      NOT NULL DEFAULT 0 CHECK (packets_in >= 0),
    packets_out  BIGINT      NOT NULL DEFAULT 0 CHECK (packets_out >= 0),
    packets_lost BIGINT      NOT NULL DEFAULT 0 CHECK (packets_lost >= 0),
    rtt_ms       BIGINT      CHECK (rtt_ms >= 0),
    PRIMARY KEY (session_id, identity),
    CHECK ((left_at IS NULL) = (leave_reason IS NULL))
);

-- participant_left finds the rows whose current connection is leaving.
CREATE INDEX participants_sid ON participants (sid);

CREATE TABLE egress (
    egress_id  TEXT        NOT NULL PRIMARY KEY CHECK (egress_id <> ''),
    session_id TEXT        REFERENCES sessions (session_id),
    room_id    TEXT        NOT NULL REFERENCES rooms (room_id),
    kind       TEXT        NOT NULL,
    status     TEXT        NOT NULL CHECK (status IN ('starting', 'active', 'ending',
                                                      'complete', 'failed')),
    -- Where the output goes.
    output     JSONB       NOT NULL,
    error      TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    ended_at   TIMESTAMPTZ
);

CREATE INDEX egress_room_created ON egress (room_id, created_at);
CREATE INDEX egress_session ON egress (session_id);
-- reconcile_after_restart looks for egress that never finished.
CREATE INDEX egress_unfinished ON egress (room_id)
    WHERE status IN ('starting', 'active', 'ending');

-- The append-only event log (transactional outbox). Writers serialise event appends with a
-- transaction-scoped advisory lock, so ids become visible in id order and a delivery
-- cursor (id > n) never skips an event that committed late.
CREATE TABLE events (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id    TEXT        NOT NULL REFERENCES rooms (room_id),
    seq        BIGINT      NOT NULL CHECK (seq >= 1),
    kind       TEXT        NOT NULL,
    -- No foreign key: the log stands on its own.
    session_id TEXT,
    payload    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (room_id, seq)
);

-- Per delivery sink (webhook URL, NATS): the id of the last event it has delivered.
CREATE TABLE delivery_cursors (
    sink       TEXT        NOT NULL PRIMARY KEY CHECK (sink <> ''),
    event_id   BIGINT      NOT NULL CHECK (event_id >= 0),
    updated_at TIMESTAMPTZ NOT NULL
);

-- Who did which admin operation (seed 001). Listed newest first by id.
CREATE TABLE audit_log (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       TEXT        NOT NULL,
    action      TEXT        NOT NULL,
    target      TEXT        NOT NULL,
    remote_addr TEXT,
    outcome     TEXT        NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail      TEXT,
    at          TIMESTAMPTZ NOT NULL
);

-- Speech-to-text segments (seed 004); interim versions update the row in place.
CREATE TABLE transcript_segments (
    session_id           TEXT        NOT NULL REFERENCES sessions (session_id),
    segment_id           TEXT        NOT NULL CHECK (segment_id <> ''),
    participant_identity TEXT        NOT NULL,
    text                 TEXT        NOT NULL,
    language             TEXT,
    is_final             BOOLEAN     NOT NULL,
    start_ms             BIGINT      NOT NULL,
    end_ms               BIGINT      NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, segment_id)
);

CREATE INDEX transcript_segments_order ON transcript_segments (session_id, start_ms);

-- Removed identities: tokens for (room, identity) issued at or before revoked_at are refused.
-- No foreign key: a revocation outlives the room row's state and must load at start.
CREATE TABLE revocations (
    room_id    TEXT        NOT NULL,
    identity   TEXT        NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, identity)
);

CREATE INDEX revocations_at ON revocations (revoked_at);
