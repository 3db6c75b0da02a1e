-- A site's owner reads what other collectors committed by `xid` range (events_xid, a BRIN index). A BRIN
-- index holds no summary for the block ranges filled since the last vacuum, and every lookup reads all of
-- those blocks (autovacuum runs on an insert-only table only after a fifth of it is new: on a large table,
-- millions of rows each time). With autosummarize, a range is summarized as soon as the next one starts
-- (autovacuum's work items), so a lookup reads about the last 128 pages and the ranges that match.
ALTER INDEX events_xid SET (autosummarize = on);
