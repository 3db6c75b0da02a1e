-- Escalation of open stops (owned by escalate, store/escalations.rs).
-- One row per (stop, rung), inserted ("claimed") and committed before anything is sent: the UNIQUE key makes
-- a rung happen once however often the planner runs or the collector restarts. `state`: pending (claimed,
-- not yet delivered), sent, dead (every attempt failed: the dead letter), skipped (nobody to ask), cancelled
-- (the stop closed or was acknowledged before delivery).
CREATE TABLE escalation (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    stop_key         TEXT NOT NULL,
    site             TEXT NOT NULL,
    asset            TEXT NOT NULL,
    start_ms         INTEGER NOT NULL,
    rung             INTEGER NOT NULL,
    target           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    skills           TEXT NOT NULL,
    person           TEXT,
    channel          TEXT,
    -- Personal data, kept only to deliver after a restart; cleared once the row is no longer pending.
    address          TEXT,
    availability     TEXT,
    claimed_ms       INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent_ms          INTEGER,
    error            TEXT,
    -- SHA-256 of the acknowledge token (the token itself is only in the message).
    token_hash       BLOB,
    token_expires_ms INTEGER,
    token_used_ms    INTEGER,
    UNIQUE (stop_key, rung)
);
CREATE UNIQUE INDEX escalation_token ON escalation(token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX escalation_claimed ON escalation(claimed_ms);
CREATE INDEX escalation_pending ON escalation(state) WHERE state = 'pending';

-- The first acknowledgement of a stop: who responded and when (response time = ack_ms - start_ms).
CREATE TABLE escalation_ack (
    stop_key      TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    asset         TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    escalation_id INTEGER NOT NULL REFERENCES escalation(id),
    person        TEXT NOT NULL,
    via           TEXT NOT NULL,
    ack_ms        INTEGER NOT NULL
);
CREATE INDEX escalation_ack_asset ON escalation_ack(site, asset, start_ms);

-- Open stops are read every planning pass.
CREATE INDEX downtime_open ON downtime(site, asset) WHERE end_ms IS NULL;
