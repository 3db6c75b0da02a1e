-- Ingest speed (issue 17). Neither change alters what is stored or what a query returns.

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

-- A site's owner reads what other collectors committed by `xid` range (events_xid, a BRIN index). A BRIN
-- index holds no summary for the block ranges filled since the last vacuum, and every lookup reads all of
-- those blocks (autovacuum runs on an insert-only table only after a fifth of it is new: on a large table,
-- millions of rows each time). With autosummarize, a range is summarized as soon as the next one starts
-- (autovacuum's work items), so a lookup reads about the last 128 pages and the ranges that match.
ALTER INDEX events_xid SET (autosummarize = on);
