-- Events, dead letters, gateway status and derived downtime (owned by ingest/store).
-- epoch and seq are u64 on the wire, stored as the same 64 bits in SQLite's signed INTEGER.

CREATE TABLE events (
    gateway     TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    site        TEXT    NOT NULL,
    asset       TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,  -- state | alarm | source | gap
    body        TEXT    NOT NULL,  -- JSON of the event body
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX events_ts ON events (ts_ms);
CREATE INDEX events_received ON events (received_ms);  -- retention

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    received_ms INTEGER NOT NULL,
    kind        TEXT    NOT NULL,  -- a short stable name: malformed, too_large, gateway_mismatch, ...
    reason      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    head        BLOB    NOT NULL   -- the first 64 bytes of the payload
);

CREATE TABLE gateways (
    gateway      TEXT    PRIMARY KEY,
    site         TEXT    NOT NULL,
    online       INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    status       TEXT    NOT NULL  -- the last status message, JSON
);

-- Moments a gateway's last will was seen: its assets are unknown from then on.
CREATE TABLE gateway_offline (
    gateway TEXT    NOT NULL,
    site    TEXT    NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (gateway, ts_ms)
) WITHOUT ROWID;

-- Derived from events by the timeline; rewritten whenever the timeline changes an event.
CREATE TABLE downtime (
    site       TEXT    NOT NULL,
    asset      TEXT    NOT NULL,
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER,            -- NULL while open
    gateway    TEXT    NOT NULL,
    reason     TEXT,
    first_out  TEXT,               -- JSON of the first-out alarm
    data_gap   INTEGER NOT NULL,
    PRIMARY KEY (site, asset, start_ms)
) WITHOUT ROWID;
CREATE INDEX downtime_start ON downtime (start_ms);
