-- Delivery once (issue 21): which node delivers the event log to a sink, until when.
--
-- One lease per sink (`webhook:<url>`, `nats`), named like its row in delivery_cursors, not
-- one per room: a sink is one ordered stream, so a single holder keeps the global (hence
-- per-room) order. The holder takes and renews it in one conditional upsert; a row whose
-- expires_at has passed is free. `generation` goes up by one every time the lease changes
-- hands (or its holder takes it back after letting it expire), and a cursor write is
-- refused unless it names the current holder and generation of an unexpired lease, so a
-- node that was paused past its lease cannot move the cursor after another node took over.
-- Releasing keeps the row (expires_at moved to the epoch) so the generation never restarts.

CREATE TABLE delivery_leases (
    sink        TEXT        NOT NULL PRIMARY KEY,
    node_id     TEXT        NOT NULL CHECK (node_id <> ''),
    generation  BIGINT      NOT NULL CHECK (generation > 0),
    -- When the current holder took it (kept across its renewals).
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
