-- Ingest speed (issue 17). None of these changes alters what is stored or what a query returns.

-- The key's columns, fixed-width first. Every inserted row descends the key's b-tree, comparing its key
-- with a dozen entries; led by two text columns, each comparison compared both strings (equal within a
-- gateway's stream) before reaching seq, and found seq's offset by walking past them. Led by seq, almost
-- every comparison ends at the first column. Uniqueness is the same set of columns, so `ON CONFLICT (site,
-- gateway, epoch, seq)` still names this key. Measured by `COPY` of 1,000,000 events into the table with
-- its indexes (server CPU): one gateway 2.18 -> 1.87 µs a row; four gateways interleaved by batch, as
-- several gateways arrive, 3.20 -> 2.31 µs. No query looks events up by a prefix of the old key (owners
-- read by xid, reports by time). Rebuilding the key takes about 0.35 s of server CPU per million rows,
-- with the table locked: ingest pauses (acks stop, agents keep their events) while it runs.
ALTER TABLE events DROP CONSTRAINT events_pkey,
    ADD CONSTRAINT events_pkey PRIMARY KEY (seq, epoch, gateway, site);

-- One block-range index over the three columns read by range (time for reports, receive time for
-- retention, xid for what a site's owner has not applied yet) instead of one each: a BRIN insert costs
-- mostly its fixed per-row work (the range map), so one instead of three took `COPY` of 1,000,000 events
-- from 2.07 to 1.80 µs a row of server CPU. Each column keeps its own summary, so a condition on any one
-- of them still narrows the scan to its blocks.
-- With autosummarize, a block range is summarized as soon as the next one starts (autovacuum's work items).
-- Without it, the ranges filled since the last vacuum have no summary and every lookup reads all of their
-- blocks (autovacuum visits an insert-only table only after a fifth of it is new: millions of rows on a
-- large table); a site's owner reading other collectors' rows by xid twice a second read them all each time.
DROP INDEX events_ts, events_received, events_xid;
CREATE INDEX events_brin ON events USING brin (ts_ms, received_ms, xid) WITH (autosummarize = on);
