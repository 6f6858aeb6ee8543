-- Cluster membership and node ownership (issue 21).
--
-- `nodes`: one row per node that ever served from this database, kept up to date by the
-- node itself (registered at start, a heartbeat every few seconds, stopped at a clean
-- shutdown). Whether a node is alive is not stored: readers compare heartbeat_at with their
-- own timeout.
--
-- Rooms, connections and egress get the node_id of the node that serves them. Rows written
-- before this migration keep NULL: they predate clustering, so whichever node restarts
-- first treats them as its own (see reconcile_after_restart).

CREATE TABLE nodes (
    node_id          TEXT        NOT NULL PRIMARY KEY CHECK (node_id <> ''),
    -- Where other nodes and operators reach its HTTP API, and the WebSocket URL clients use.
    http_url         TEXT        NOT NULL,
    public_url       TEXT        NOT NULL,
    -- Capacity: rooms it may hold at once (limits.max_rooms).
    max_rooms        BIGINT      NOT NULL CHECK (max_rooms >= 0),
    -- Load at the last heartbeat.
    rooms            BIGINT      NOT NULL DEFAULT 0 CHECK (rooms >= 0),
    participants     BIGINT      NOT NULL DEFAULT 0 CHECK (participants >= 0),
    state            TEXT        NOT NULL CHECK (state IN ('active', 'draining', 'stopped')),
    started_at       TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL,
    -- When a live node closed the records this one left open after it stopped
    -- heartbeating; cleared when it registers again.
    released_at      TIMESTAMPTZ
);

ALTER TABLE rooms ADD COLUMN node_id TEXT;
ALTER TABLE connections ADD COLUMN node_id TEXT;
ALTER TABLE egress ADD COLUMN node_id TEXT;

-- Per-node recovery looks for a node's open connections and unfinished egress.
CREATE INDEX connections_open_node ON connections (node_id) WHERE left_at IS NULL;
CREATE INDEX egress_unfinished_node ON egress (node_id)
    WHERE status IN ('starting', 'active', 'ending');
CREATE INDEX rooms_node ON rooms (node_id) WHERE node_id IS NOT NULL;
