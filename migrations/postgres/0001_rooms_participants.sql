-- Rooms and participant connections (issue 2). Later issues add sessions, egress and events.
--
-- Tables are created unqualified so they land in the first schema of search_path: production
-- uses the default, the conformance tests use a fresh schema per test.

CREATE TABLE rooms (
    -- The LiveKit room name; rooms are created on demand at first join.
    room_id            TEXT        NOT NULL PRIMARY KEY CHECK (room_id <> ''),
    -- LiveKit's RM_… id of the current incarnation; replaced when a closed room starts again.
    sid                TEXT        NOT NULL,
    name               TEXT,
    metadata           TEXT,
    status             TEXT        NOT NULL CHECK (status IN ('active', 'closed')),
    created_at         TIMESTAMPTZ NOT NULL,
    last_active_at     TIMESTAMPTZ NOT NULL,
    closed_at          TIMESTAMPTZ,
    empty_timeout_secs BIGINT      NOT NULL CHECK (empty_timeout_secs >= 0),
    -- 0 means unlimited, as in LiveKit.
    max_participants   BIGINT      NOT NULL CHECK (max_participants >= 0),
    -- A closed room always says when it closed, an active one never does.
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);

CREATE INDEX rooms_status_created ON rooms (status, created_at);

-- One row per connection (keyed by LiveKit's PA_… sid), so a rejoin with the same identity
-- adds a row and never overwrites the history of the earlier connection.
CREATE TABLE participants (
    sid          TEXT        NOT NULL PRIMARY KEY CHECK (sid <> ''),
    -- No ON DELETE CASCADE: participant history must not vanish with a room row.
    room_id      TEXT        NOT NULL REFERENCES rooms (room_id),
    identity     TEXT        NOT NULL CHECK (identity <> ''),
    name         TEXT        NOT NULL DEFAULT '',
    role         TEXT        CHECK (role IN ('host', 'guest')),
    metadata     TEXT,
    joined_at    TIMESTAMPTZ NOT NULL,
    left_at      TIMESTAMPTZ,
    -- LiveKit DisconnectReason names (CLIENT_INITIATED, DUPLICATE_IDENTITY, …) or our own.
    leave_reason TEXT,
    -- Summary written at leave; NULL while connected.
    bytes_in     BIGINT      CHECK (bytes_in >= 0),
    bytes_out    BIGINT      CHECK (bytes_out >= 0),
    packets_in   BIGINT      CHECK (packets_in >= 0),
    packets_out  BIGINT      CHECK (packets_out >= 0),
    packets_lost BIGINT      CHECK (packets_lost >= 0),
    rtt_ms       BIGINT      CHECK (rtt_ms >= 0),
    CHECK ((left_at IS NULL) = (leave_reason IS NULL))
);

-- Lookups of an identity's connections in a room (rejoins, removal, issue 3's sessions).
CREATE INDEX participants_room_identity ON participants (room_id, identity);
-- list_participants orders by join time.
CREATE INDEX participants_room_joined ON participants (room_id, joined_at);
