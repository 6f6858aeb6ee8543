-- Placement by lease (issue 21): which node owns a room, until when.
--
-- A table of its own rather than columns on `rooms`: a lease is taken before the room's
-- first join, when the room may not be recorded yet (the join creates it), so there is no
-- foreign key to `rooms`. A row whose expires_at has passed is free: the next acquire takes
-- it over in one conditional upsert. The owner renews it while it serves the room and
-- deletes it when the room closes; a live node deletes a dead node's leases when it
-- releases that node.

CREATE TABLE room_leases (
    room_id     TEXT        NOT NULL PRIMARY KEY,
    node_id     TEXT        NOT NULL CHECK (node_id <> ''),
    -- When the current owner first took it (kept across renewals).
    acquired_at INTEGER     NOT NULL,
    expires_at  INTEGER     NOT NULL
) STRICT;

-- Releasing a dead node deletes its leases.
CREATE INDEX room_leases_node ON room_leases (node_id);
