-- A gateway's identity is (site, gateway): the same gateway id may exist in two sites. The events key, the
-- gateways row and the offline marks gain the site. Existing rows keep the site they were stored with.

CREATE TABLE events_new (
    site        TEXT    NOT NULL,
    gateway     TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    asset       TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,  -- state | alarm | source | gap
    body        TEXT    NOT NULL,  -- JSON of the event body
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, epoch, seq)
) WITHOUT ROWID;
INSERT INTO events_new (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms)
    SELECT site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_ts ON events (ts_ms);
CREATE INDEX events_received ON events (received_ms);  -- retention

CREATE TABLE gateways_new (
    site         TEXT    NOT NULL,
    gateway      TEXT    NOT NULL,
    online       INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    status       TEXT    NOT NULL,  -- the last status message, JSON
    PRIMARY KEY (site, gateway)
);
INSERT INTO gateways_new (site, gateway, online, last_seen_ms, status)
    SELECT site, gateway, online, last_seen_ms, status FROM gateways;
DROP TABLE gateways;
ALTER TABLE gateways_new RENAME TO gateways;

-- Moments a gateway was seen going offline (its last will, or its heartbeat overdue): its assets are
-- unknown from then on.
CREATE TABLE gateway_offline_new (
    site    TEXT    NOT NULL,
    gateway TEXT    NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, ts_ms)
) WITHOUT ROWID;
INSERT INTO gateway_offline_new (site, gateway, ts_ms) SELECT site, gateway, ts_ms FROM gateway_offline;
DROP TABLE gateway_offline;
ALTER TABLE gateway_offline_new RENAME TO gateway_offline;
