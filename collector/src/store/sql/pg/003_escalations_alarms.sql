-- Escalation and alarm load on PostgreSQL: the same tables and view as the SQLite migrations 004
-- (escalations) and 005 (alarm attributes), so both backends keep one data model.

-- Escalation of open stops (owned by escalate, store/escalations.rs and store/pg/escalations.rs).
-- One row per (stop, rung), inserted ("claimed") and committed before anything is sent: the UNIQUE key makes
-- a rung happen once however many collectors plan it. Only the collector whose store writer holds the
-- site's ownership lock (the timeline's owner, store/pg/writer.rs) claims and delivers the site's rungs.
-- `state`: pending (claimed, not yet delivered), sent, dead (every attempt failed: the dead letter), skipped
-- (nobody to ask), cancelled (the stop closed or was acknowledged before delivery).
CREATE TABLE escalation (
    id               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stop_key         text    COLLATE "C" NOT NULL,
    site             text    COLLATE "C" NOT NULL,
    asset            text    COLLATE "C" NOT NULL,
    start_ms         bigint  NOT NULL,
    rung             integer NOT NULL,
    target           text    NOT NULL,
    reason           text    NOT NULL,
    skills           text    NOT NULL,
    person           text,
    channel          text,
    -- Personal data, kept only to deliver after a restart or a change of owner; cleared once the row is no
    -- longer pending.
    address          text,
    availability     text,
    claimed_ms       bigint  NOT NULL,
    state            text    NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    sent_ms          bigint,
    error            text,
    -- SHA-256 of the acknowledge token (the token itself is only in the message).
    token_hash       bytea,
    token_expires_ms bigint,
    token_used_ms    bigint,
    UNIQUE (stop_key, rung)
);
CREATE UNIQUE INDEX escalation_token ON escalation (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX escalation_claimed ON escalation (claimed_ms);
CREATE INDEX escalation_pending ON escalation (site) WHERE state = 'pending';

-- The first acknowledgement of a stop: who responded and when (response time = ack_ms - start_ms).
CREATE TABLE escalation_ack (
    stop_key      text   COLLATE "C" PRIMARY KEY,
    site          text   COLLATE "C" NOT NULL,
    asset         text   COLLATE "C" NOT NULL,
    start_ms      bigint NOT NULL,
    escalation_id bigint NOT NULL REFERENCES escalation (id),
    person        text   NOT NULL,
    via           text   NOT NULL,
    ack_ms        bigint NOT NULL
);
CREATE INDEX escalation_ack_asset ON escalation_ack (site, asset, start_ms);

-- Open stops are read every planning pass.
CREATE INDEX downtime_open ON downtime (site, asset) WHERE end_ms IS NULL;

-- Alarm events with their attributes as columns, for alarm-load figures (ISA-18.2 / EEMUA 191) and BI
-- tools, as SQLite's view: priority, acked, shelved and suppressed are NULL for alarms from version 1
-- batches or sources without such notions (Modbus). Booleans are boolean here (0/1 in SQLite).
CREATE VIEW alarm_events AS
SELECT e.site, e.gateway, e.epoch, e.seq, e.asset, e.ts_ms, e.received_ms,
       a.alarm ->> 'id'                     AS alarm_id,
       (a.alarm ->> 'active')::boolean      AS active,
       (a.alarm ->> 'severity')::bigint     AS severity,
       a.alarm ->> 'text'                   AS text,
       a.alarm ->> 'class'                  AS class,
       a.alarm ->> 'priority'               AS priority,
       (a.alarm ->> 'acked')::boolean       AS acked,
       (a.alarm ->> 'shelved')::boolean     AS shelved,
       (a.alarm ->> 'suppressed')::boolean  AS suppressed
FROM events e, LATERAL (SELECT e.body::jsonb -> 'alarm' AS alarm) a
WHERE e.kind = 'alarm';
