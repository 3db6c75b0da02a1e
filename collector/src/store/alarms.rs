//! Alarm activations with their attributes, read from the raw `events` table in one query, for the
//! alarm-load report ([`crate::join::Alarms`]).
//!
//! An activation starts with an `active` event for an alarm (site, asset, id) that is not already active,
//! and ends with its next clear; an `active` for an alarm already active (a restarted agent's snapshot,
//! or an OPC UA condition whose acknowledgement, shelving or suppression changed) only adds to it. Keys are
//! interned while reading: no string is allocated per row except for an alarm seen for the first time.
//!
//! The alarm attributes (priority, acknowledged, shelved, suppressed) come from OPC UA Alarms & Conditions
//! and are read in one place, [`attributes`]: where a body has none (Modbus alarm points, batches of
//! version 1) the activation has an unknown priority and is not acknowledged, shelved or suppressed.

use crate::join::{AlarmKey, AlarmRecord, Alarms, Priority};
use rusqlite::{params, Connection};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;

/// A stored alarm body, `{"alarm": {...}}`, borrowed from the row.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    alarm: Wire<'a>,
}

/// The fields of a stored alarm that the report reads; the rest (severity, text, class) is skipped.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    active: bool,
    // The OPC UA A&C attributes as the agent's wire names them (batch version 2); absent before.
    #[serde(default, borrow)]
    priority: Option<Cow<'a, str>>,
    #[serde(default)]
    acked: Option<bool>,
    #[serde(default)]
    shelved: Option<bool>,
    #[serde(default)]
    suppressed: Option<bool>,
}

/// What one alarm event says beyond active or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attributes {
    priority: Priority,
    acked: bool,
    shelved: bool,
    suppressed: bool,
}

/// The alarm attributes of one event: absent ones are unknown priority, not acknowledged, not shelved, not
/// suppressed.
fn attributes(w: &Wire) -> Attributes {
    Attributes {
        priority: w.priority.as_deref().map_or(Priority::Unknown, Priority::parse),
        acked: w.acked == Some(true),
        shelved: w.shelved == Some(true),
        suppressed: w.suppressed == Some(true),
    }
}

/// One alarm event, compact, for sorting by time.
struct Edge {
    ts_ms: i64,
    key: u32,
    active: bool,
    a: Attributes,
}

/// Every alarm activation raised before `to_ms`, sorted by raise time, with its keys interned. Rows that
/// are not a readable alarm body are skipped (ingest stored only decoded events).
///
/// The table is read in its key's order (site, gateway, epoch, seq: no index lookup per row, no sort of the
/// bodies in SQLite) into compact edges, which a stable sort then puts in time order: events at the same
/// instant keep the agent's order, as `ORDER BY ts_ms, gateway, epoch, seq` would within a site (alarms of
/// different sites never meet: the key holds the site).
///
/// # Errors
/// SQLite failures.
pub fn alarm_records(conn: &Connection, to_ms: i64) -> rusqlite::Result<Alarms> {
    // `+ts_ms`: a table scan, not the time index (which would look every row up by its key); the ORDER BY
    // is the table's key, so SQLite sorts nothing.
    let mut st = conn.prepare(
        "SELECT site, asset, ts_ms, body FROM events WHERE kind = 'alarm' AND +ts_ms < ?1
         ORDER BY site, gateway, epoch, seq",
    )?;
    let mut rows = st.query(params![to_ms])?;
    let mut b = AlarmsBuilder::default();
    while let Some(r) = rows.next()? {
        let ts_ms: i64 = r.get(2)?;
        let (Ok(site), Ok(asset), Ok(body)) = (r.get_ref(0)?.as_str(), r.get_ref(1)?.as_str(), r.get_ref(3)?.as_str())
        else {
            continue;
        };
        b.push(site, asset, ts_ms, body);
    }
    Ok(b.finish())
}

/// Builds [`Alarms`] from stored alarm rows given in the events table's key order (site, gateway, epoch,
/// seq); each store's loader feeds it (SQLite above, PostgreSQL in `store::pg::alarms`), so both give the
/// same activations.
#[derive(Default)]
pub struct AlarmsBuilder {
    out: Alarms,
    index: HashMap<Box<str>, u32>,
    edges: Vec<Edge>,
    buf: String,
}

impl AlarmsBuilder {
    /// One stored alarm event; a body that is not a readable alarm is skipped.
    pub fn push(&mut self, site: &str, asset: &str, ts_ms: i64, body: &str) {
        let Ok(Body { alarm: w }) = serde_json::from_str::<Body>(body) else { return };
        let buf = &mut self.buf;
        buf.clear();
        for part in [site, "\u{1f}", asset, "\u{1f}", &w.id] {
            buf.push_str(part);
        }
        let key = match self.index.get(buf.as_str()) {
            Some(&k) => k,
            None => {
                let k = self.out.keys.len() as u32;
                self.index.insert(buf.as_str().into(), k);
                self.out.keys.push(AlarmKey { site: site.into(), asset: asset.into(), alarm: w.id.to_string() });
                k
            }
        };
        self.edges.push(Edge { ts_ms, key, active: w.active, a: attributes(&w) });
    }

    /// The activations, sorted by raise time.
    pub fn finish(self) -> Alarms {
        let Self { mut out, mut edges, .. } = self;
        edges.sort_by_key(|e| e.ts_ms);
        // Per key: its activation still open, and its latest activation (an acknowledgement may follow the clear).
        let mut open: Vec<Option<usize>> = vec![None; out.keys.len()];
        let mut last: Vec<Option<usize>> = vec![None; out.keys.len()];
        for Edge { ts_ms, key, active, a } in edges {
            let k = key as usize;
            let current = match (active, open[k]) {
                (true, None) => {
                    out.records.push(AlarmRecord {
                        key,
                        raised_ms: ts_ms,
                        cleared_ms: None,
                        acked_ms: None,
                        priority: a.priority,
                        shelved: false,
                        suppressed: false,
                    });
                    open[k] = Some(out.records.len() - 1);
                    last[k] = open[k];
                    open[k]
                }
                (true, Some(i)) => Some(i),
                (false, Some(i)) => {
                    out.records[i].cleared_ms = Some(ts_ms);
                    open[k] = None;
                    Some(i)
                }
                (false, None) => last[k],
            };
            if let Some(rec) = current.map(|i| &mut out.records[i]) {
                if a.acked && rec.acked_ms.is_none() {
                    rec.acked_ms = Some(ts_ms);
                }
                // Shelving and suppression count while the alarm is active (or as it clears).
                if active || rec.cleared_ms == Some(ts_ms) {
                    rec.shelved |= a.shelved;
                    rec.suppressed |= a.suppressed;
                }
                if rec.priority == Priority::Unknown {
                    rec.priority = a.priority;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::alarm_records;
    use crate::join::{AlarmRecord, Priority};
    use crate::store::events::{insert_rows, Rows};
    use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, SiteId};

    fn insert(conn: &rusqlite::Connection, epoch: u64, seq: i64, ts: i64, asset: &str, body: &str) {
        conn.execute(
            "INSERT INTO events (gateway, epoch, seq, site, asset, ts_ms, kind, body, received_ms)
             VALUES ('gw', ?1, ?2, 's', ?3, ?4, 'alarm', ?5, 0)",
            rusqlite::params![epoch as i64, seq, asset, ts, body],
        )
        .unwrap();
    }

    /// Modbus-style alarms (no attributes) through the real insert path: a re-sent `active` is not a new
    /// activation, a clear ends it, and they carry unknown priority, no acknowledgement.
    #[test]
    fn alarm_records_pair_raises_with_clears_and_leave_modbus_alarms_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("c.db")).unwrap();
        let events = [
            (1, 1, 100, "press-1", "A", true),
            (1, 2, 150, "press-1", "B", true),
            (2, 1, 300, "press-1", "A", true), // restart snapshot: same activation
            (2, 2, 400, "press-1", "A", false),
            (2, 3, 500, "press-1", "A", true),
        ];
        for (epoch, seq, ts_ms, asset, id, active) in events {
            let body = EventBody::Alarm(Alarm {
                id: id.into(),
                active,
                severity: 500,
                text: String::new(),
                class: None,
                ..Default::default()
            });
            let event = Event { seq, ts_ms, asset: AssetId::parse(asset).unwrap(), body };
            let batch = Batch::new(SiteId::parse("s").unwrap(), GatewayId::parse("gw").unwrap(), epoch, vec![event]);
            insert_rows(&conn, &Rows::new(batch).unwrap(), 0).unwrap();
        }
        let a = alarm_records(&conn, i64::MAX).unwrap();
        let names: Vec<&str> = a.keys.iter().map(|k| k.alarm.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        let plain = |key, raised_ms, cleared_ms| AlarmRecord {
            key,
            raised_ms,
            cleared_ms,
            acked_ms: None,
            priority: Priority::Unknown,
            shelved: false,
            suppressed: false,
        };
        assert_eq!(a.records, [plain(0, 100, Some(400)), plain(1, 150, None), plain(0, 500, None)]);
        assert_eq!(alarm_records(&conn, 500).unwrap().records.len(), 2, "raised before `to` only");
    }

    /// OPC UA A&C attributes as the agent stores them (batch version 2): priority from the raise, the first
    /// acknowledgement (also one after the clear), shelving and suppression while active.
    #[test]
    fn alarm_records_read_priority_acknowledgement_shelving_and_suppression() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("c.db")).unwrap();
        let b = |id: &str, active: bool, extra: &str| {
            format!(r#"{{"alarm":{{"id":"{id}","active":{active},"severity":800,"text":"t"{extra}}}}}"#)
        };
        insert(&conn, 1, 1, 1_000, "p", &b("X", true, r#","priority":"high","acked":false"#));
        insert(&conn, 1, 2, 61_000, "p", &b("X", true, r#","priority":"high","acked":true"#));
        insert(&conn, 1, 3, 90_000, "p", &b("X", true, r#","acked":true,"shelved":true"#));
        insert(&conn, 1, 4, 95_000, "p", &b("X", false, r#","acked":true"#));
        insert(&conn, 1, 5, 2_000, "p", &b("Y", true, r#","priority":"Low","suppressed":true"#));
        insert(&conn, 1, 6, 3_000, "p", &b("Y", false, r#","acked":false"#));
        insert(&conn, 1, 7, 9_000, "p", &b("Y", false, r#","acked":true"#));
        insert(
            &conn,
            1,
            8,
            10_000,
            "p",
            r#"{"alarm":{"id":"Z","active":true,"severity":1,"text":"","priority":"odd"}}"#,
        );
        let a = alarm_records(&conn, i64::MAX).unwrap();
        let r = |name: &str| *a.records.iter().find(|r| a.keys[r.key as usize].alarm == name).unwrap();
        let x = r("X");
        assert_eq!(
            (x.raised_ms, x.cleared_ms, x.acked_ms, x.priority, x.shelved, x.suppressed),
            (1_000, Some(95_000), Some(61_000), Priority::High, true, false)
        );
        let y = r("Y");
        assert_eq!(
            (y.cleared_ms, y.acked_ms, y.priority, y.shelved, y.suppressed),
            (Some(3_000), Some(9_000), Priority::Low, false, true)
        );
        assert_eq!(r("Z").priority, Priority::Unknown);
        let raised: Vec<i64> = a.records.iter().map(|r| r.raised_ms).collect();
        assert_eq!(raised, [1_000, 2_000, 10_000]);
    }
}
