-- Rooms and participant connections (issue 2). Later issues add sessions, egress and events.
--
-- Timestamps are INTEGER unix milliseconds (UTC): they sort and compare as numbers, and the
-- Rust side converts them to chrono::DateTime<Utc>. STRICT makes SQLite reject values of the
-- wrong type instead of silently storing them.

CREATE TABLE rooms (
    -- The LiveKit room name; rooms are created on demand at first join.
    room_id            TEXT    NOT NULL PRIMARY KEY CHECK (room_id <> ''),
    -- LiveKit's RM_… id of the current incarnation; replaced when a closed room starts again.
    sid                TEXT    NOT NULL,
    name               TEXT,
    metadata           TEXT,
    status             TEXT    NOT NULL CHECK (status IN ('active', 'closed')),
    created_at         INTEGER NOT NULL,
    last_active_at     INTEGER NOT NULL,
    closed_at          INTEGER,
    empty_timeout_secs INTEGER NOT NULL CHECK (empty_timeout_secs >= 0),
    -- 0 means unlimited, as in LiveKit.
    max_participants   INTEGER NOT NULL CHECK (max_participants >= 0),
    -- A closed room always says when it closed, an active one never does.
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
) STRICT;

CREATE INDEX rooms_status_created ON rooms (status, created_at);

-- One row per connection (keyed by LiveKit's PA_… sid), so a rejoin with the same identity
-- adds a row and never overwrites the history of the earlier connection.
CREATE TABLE participants (
    sid          TEXT    NOT NULL PRIMARY KEY CHECK (sid <> ''),
    -- No ON DELETE CASCADE: participant history must not vanish with a room row.
    room_id      TEXT    NOT NULL REFERENCES rooms (room_id),
    identity     TEXT    NOT NULL CHECK (identity <> ''),
    name         TEXT    NOT NULL DEFAULT '',
    role         TEXT    CHECK (role IN ('host', 'guest')),
    metadata     TEXT,
    joined_at    INTEGER NOT NULL,
    left_at      INTEGER,
    -- LiveKit DisconnectReason names (CLIENT_INITIATED, DUPLICATE_IDENTITY, …) or our own.
    leave_reason TEXT,
    -- Summary written at leave; NULL while connected.
    bytes_in     INTEGER CHECK (bytes_in >= 0),
    bytes_out    INTEGER CHECK (bytes_out >= 0),
    packets_in   INTEGER CHECK (packets_in >= 0),
    packets_out  INTEGER CHECK (packets_out >= 0),
    packets_lost INTEGER CHECK (packets_lost >= 0),
    rtt_ms       INTEGER CHECK (rtt_ms >= 0),
    CHECK ((left_at IS NULL) = (leave_reason IS NULL))
) STRICT;

-- Lookups of an identity's connections in a room (rejoins, removal, issue 3's sessions).
CREATE INDEX participants_room_identity ON participants (room_id, identity);
-- list_participants orders by join time.
CREATE INDEX participants_room_joined ON participants (room_id, joined_at);
