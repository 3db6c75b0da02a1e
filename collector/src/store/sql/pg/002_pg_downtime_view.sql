-- The read-only view for BI tools: one row per downtime event, the columns of the feed record
-- (docs/feed.md, schema shiftlens.downtime/1), with SQL types: times as timestamptz (UTC), the first-out
-- alarm spread over four columns as in the feed's CSV. Grant SELECT on this view alone to BI users.
CREATE VIEW downtime_v1 AS
WITH lines AS (
    SELECT (body::jsonb) ->> 'site' AS site, (body::jsonb) ->> 'id' AS asset, (body::jsonb) ->> 'line' AS line
    FROM people_record WHERE kind = 'assets' AND superseded_by IS NULL)
SELECT
    'shiftlens.downtime/1'::text                                        AS schema,
    d.site                                                              AS site,
    l.line                                                              AS line,
    d.asset                                                             AS asset,
    to_timestamp(d.start_ms / 1000.0)                                   AS start,
    to_timestamp(d.end_ms / 1000.0)                                     AS "end",
    (d.end_ms - d.start_ms) / 1000.0                                    AS duration_s,
    CASE WHEN d.end_ms IS NULL THEN 'open' ELSE 'closed' END            AS state,
    d.reason                                                            AS reason,
    (d.first_out::jsonb) ->> 'id'                                       AS first_out_alarm_id,
    (d.first_out::jsonb) ->> 'text'                                     AS first_out_alarm_text,
    (d.first_out::jsonb) ->> 'class'                                    AS first_out_alarm_class,
    to_timestamp(((d.first_out::jsonb) ->> 'ts_ms')::bigint / 1000.0)   AS first_out_alarm_at,
    d.data_gap                                                          AS data_gap,
    d.gateway                                                           AS gateway
FROM downtime d LEFT JOIN lines l ON l.site = d.site AND l.asset = d.asset;
