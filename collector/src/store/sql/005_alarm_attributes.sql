-- Alarm events with their attributes as columns, for alarm-load figures (ISA-18.2 / EEMUA 191).
-- Batch version 2 added priority, acked, shelved and suppressed to alarm bodies (OPC UA Alarms & Conditions);
-- they are stored in the body JSON like every field, and NULL for alarms from version 1 batches or sources
-- without such notions (Modbus).
CREATE INDEX events_alarm_ts ON events (ts_ms) WHERE kind = 'alarm';

CREATE VIEW alarm_events AS
SELECT site, gateway, epoch, seq, asset, ts_ms, received_ms,
       json_extract(body, '$.alarm.id')         AS alarm_id,
       json_extract(body, '$.alarm.active')     AS active,
       json_extract(body, '$.alarm.severity')   AS severity,
       json_extract(body, '$.alarm.text')       AS text,
       json_extract(body, '$.alarm.class')      AS class,
       json_extract(body, '$.alarm.priority')   AS priority,
       json_extract(body, '$.alarm.acked')      AS acked,
       json_extract(body, '$.alarm.shelved')    AS shelved,
       json_extract(body, '$.alarm.suppressed') AS suppressed
FROM events
WHERE kind = 'alarm';
