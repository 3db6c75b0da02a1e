//! SQL for events, dead letters, gateway status and downtime. Plain functions over a connection or a
//! transaction; the writer thread in `store` decides when to call them.
//!
//! Invariant: `(site, gateway, epoch, seq)` is the primary key of `events` and rows are inserted with
//! `INSERT OR IGNORE`, so a redelivered event changes nothing and is reported as not new.

use crate::timeline::{Downtime, FirstOut, Input};
use rusqlite::{params, Connection, OptionalExtension, Row};
use shiftlens_common::{status::Status, AssetId, Batch, Event, EventBody, GatewayId, SiteId};

/// Bytes of a dead payload kept for diagnosis.
pub const DEAD_LETTER_HEAD: usize = 64;

/// A payload that could not be ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub received_ms: i64,
    /// Short stable name for counting (`malformed`, `too_large`, `gateway_mismatch`, ...).
    pub kind: String,
    pub reason: String,
    pub size: usize,
    pub head: Vec<u8>,
}

impl DeadLetter {
    /// NUL characters of `topic` and `reason` (a decoder's message may quote the payload) are written `\0`:
    /// PostgreSQL's text cannot hold them, and the transaction with the dead letter would fail.
    pub fn new(topic: &str, received_ms: i64, kind: &str, reason: String, payload: &[u8]) -> Self {
        let no_nul = |s: &str| s.replace('\0', "\\0");
        Self {
            topic: no_nul(&topic.chars().take(256).collect::<String>()),
            received_ms,
            kind: kind.to_string(),
            reason: no_nul(&reason),
            size: payload.len(),
            head: payload.iter().take(DEAD_LETTER_HEAD).copied().collect(),
        }
    }
}

pub(crate) fn kind(body: &EventBody) -> &'static str {
    match body {
        EventBody::State { .. } => "state",
        EventBody::Alarm(_) => "alarm",
        EventBody::Source { .. } => "source",
        EventBody::Gap { .. } => "gap",
    }
}

/// A decoded batch with its per-row work done: every event body serialized as JSON. Built by the ingest
/// task, so this work runs in parallel with the single writer thread, which then only binds and inserts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub batch: Batch,
    /// The JSON bodies of all events, back to back; event `i`'s body ends at `ends[i]`.
    json: String,
    ends: Vec<usize>,
}

impl Rows {
    /// Serializes the bodies of `batch`'s events.
    ///
    /// # Errors
    /// A body that serde_json cannot serialize (not expected for `EventBody`), or a text field holding a NUL
    /// character: PostgreSQL's text cannot store it (the downtime row's reason, an alarm's text), so such a
    /// batch would fail every transaction it is in, on every resend.
    pub fn new(batch: Batch) -> Result<Self, serde_json::Error> {
        let mut json = Vec::with_capacity(batch.events.len() * 64);
        let mut ends = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            serde_json::to_writer(&mut json, &e.body)?;
            ends.push(json.len());
        }
        let other = |e: Box<dyn std::error::Error + Send + Sync>| serde_json::Error::io(std::io::Error::other(e));
        if holds_nul(&json) {
            return Err(other("a text field holds a NUL character".into()));
        }
        // serde_json writes valid UTF-8.
        let json = String::from_utf8(json).map_err(|e| other(e.into()))?;
        Ok(Self { batch, json, ends })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn body(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.json[start..self.ends[i]]
    }
}

/// Whether JSON written by serde_json holds a NUL character: an escape `\u0000`, that is `u0000` after an odd
/// number of backslashes (an even number is escaped backslashes followed by the text `u0000`).
fn holds_nul(json: &[u8]) -> bool {
    json.contains(&b'\\')
        && json
            .windows(5)
            .enumerate()
            .any(|(i, w)| w == b"u0000" && json[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1)
}

/// Rows per multi-row `INSERT`: one statement run per 64 events rather than one per event (9 parameters a
/// row, far below SQLite's limit of 32,766).
const ROWS_PER_INSERT: usize = 64;
const INSERT_EVENTS: &str =
    "INSERT OR IGNORE INTO events (gateway, epoch, seq, site, asset, ts_ms, kind, body, received_ms) VALUES ";
const INSERT_ONE: &str =
    "INSERT OR IGNORE INTO events (gateway, epoch, seq, site, asset, ts_ms, kind, body, received_ms) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// The multi-row insert: `RETURNING seq` yields only the rows really inserted (not those ignored as
/// already stored), which says which events are new.
fn insert_many_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
        format!("{INSERT_EVENTS}{} RETURNING seq", vec![row; ROWS_PER_INSERT].join(", "))
    })
}

/// Binds event `i` of `rows` as the row starting at parameter `first` (1-based).
fn bind_event(
    stmt: &mut rusqlite::Statement<'_>,
    first: usize,
    rows: &Rows,
    i: usize,
    received_ms: i64,
) -> rusqlite::Result<()> {
    let (batch, e) = (&rows.batch, &rows.batch.events[i]);
    stmt.raw_bind_parameter(first, batch.gateway.as_str())?;
    stmt.raw_bind_parameter(first + 1, batch.epoch as i64)?;
    stmt.raw_bind_parameter(first + 2, e.seq as i64)?;
    stmt.raw_bind_parameter(first + 3, batch.site.as_str())?;
    stmt.raw_bind_parameter(first + 4, e.asset.as_str())?;
    stmt.raw_bind_parameter(first + 5, e.ts_ms)?;
    stmt.raw_bind_parameter(first + 6, kind(&e.body))?;
    stmt.raw_bind_parameter(first + 7, rows.body(i))?;
    stmt.raw_bind_parameter(first + 8, received_ms)
}

/// Inserts a batch's events; returns, in order, whether each event was new (not stored before).
///
/// # Errors
/// SQLite errors.
pub fn insert_rows(conn: &Connection, rows: &Rows, received_ms: i64) -> rusqlite::Result<Vec<bool>> {
    let events = &rows.batch.events;
    let mut new = vec![false; events.len()];
    let mut start = 0;
    if events.len() >= ROWS_PER_INSERT {
        let mut stmt = conn.prepare_cached(insert_many_sql())?;
        while start + ROWS_PER_INSERT <= events.len() {
            let end = start + ROWS_PER_INSERT;
            for i in start..end {
                bind_event(&mut stmt, (i - start) * 9 + 1, rows, i, received_ms)?;
            }
            let mut inserted = stmt.raw_query();
            // Rows come back in insertion order; a search from the start covers any other order. A seq twice
            // in one batch is stored once: its first occurrence is the new one.
            let mut k = start;
            while let Some(r) = inserted.next()? {
                let seq = r.get::<_, i64>(0)? as u64;
                let is_it = |j: usize| !new[j] && events[j].seq == seq;
                match (k..end).find(|&j| is_it(j)).or_else(|| (start..end).find(|&j| is_it(j))) {
                    Some(j) => {
                        new[j] = true;
                        k = j + 1;
                    }
                    None => return Err(rusqlite::Error::InvalidQuery),
                }
            }
            start = end;
        }
    }
    if start < events.len() {
        let mut stmt = conn.prepare_cached(INSERT_ONE)?;
        for (i, is_new) in new.iter_mut().enumerate().skip(start) {
            bind_event(&mut stmt, 1, rows, i, received_ms)?;
            *is_new = stmt.raw_execute()? == 1;
        }
    }
    Ok(new)
}

/// # Errors
/// SQLite errors.
pub fn insert_dead_letter(conn: &Connection, d: &DeadLetter) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letters (topic, received_ms, kind, reason, size, head) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![d.topic, d.received_ms, d.kind, d.reason, d.size as i64, d.head])?;
    Ok(())
}

/// Keeps only the newest `max` dead letters (ids ascend with every insert and only the oldest are ever
/// deleted, so the newest `max` are the ids above the highest minus `max`); returns how many were deleted.
///
/// # Errors
/// SQLite errors.
pub fn bound_dead_letters(conn: &Connection, max: usize) -> rusqlite::Result<usize> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?1")?.execute([max])
}

/// Deletes dead letters received before `cutoff_ms`; returns how many.
///
/// # Errors
/// SQLite errors.
pub fn prune_dead_letters(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM dead_letters WHERE received_ms < ?1", [cutoff_ms])
}

/// Records a status message; returns true when it is a transition to offline (a last will to apply).
///
/// # Errors
/// SQLite errors.
pub fn upsert_status(
    conn: &Connection,
    site: &SiteId,
    gateway: &GatewayId,
    status: &Status,
    received_ms: i64,
) -> rusqlite::Result<bool> {
    let was_online: Option<bool> = conn
        .query_row(
            "SELECT online FROM gateways WHERE site = ?1 AND gateway = ?2",
            [site.as_str(), gateway.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let json = serde_json::to_string(status).unwrap_or_default();
    conn.execute(
        "INSERT INTO gateways (gateway, site, online, last_seen_ms, status) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (site, gateway) DO UPDATE SET online = ?3, last_seen_ms = ?4, status = ?5",
        params![gateway.as_str(), site.as_str(), status.online, received_ms, json],
    )?;
    let went_offline = !status.online && was_online != Some(false);
    if went_offline {
        conn.execute(
            "INSERT OR IGNORE INTO gateway_offline (gateway, site, ts_ms) VALUES (?1, ?2, ?3)",
            params![gateway.as_str(), site.as_str(), received_ms],
        )?;
    }
    Ok(went_offline)
}

/// Marks offline, at `now_ms`, every gateway online whose last status arrived before `cutoff_ms` (its
/// heartbeat is overdue); returns them.
///
/// # Errors
/// SQLite errors.
pub fn mark_overdue(conn: &Connection, cutoff_ms: i64, now_ms: i64) -> rusqlite::Result<Vec<(SiteId, GatewayId)>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE gateways SET online = 0 WHERE online = 1 AND last_seen_ms < ?1 RETURNING site, gateway",
    )?;
    let rows: Vec<(String, String)> =
        stmt.query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (site, gateway) in rows {
        conn.execute(
            "INSERT OR IGNORE INTO gateway_offline (gateway, site, ts_ms) VALUES (?1, ?2, ?3)",
            params![gateway, site, now_ms],
        )?;
        if let (Ok(site), Ok(gateway)) = (SiteId::parse(site), GatewayId::parse(gateway)) {
            out.push((site, gateway));
        }
    }
    Ok(out)
}

/// # Errors
/// SQLite errors.
pub fn upsert_downtime(conn: &Connection, d: &Downtime) -> rusqlite::Result<()> {
    let fo = d.first_out.as_ref().and_then(|f| serde_json::to_string(f).ok());
    conn.prepare_cached(
        "INSERT INTO downtime (site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (site, asset, start_ms) DO UPDATE SET
           end_ms = ?4, gateway = ?5, reason = ?6, first_out = ?7, data_gap = ?8",
    )?
    .execute(params![
        d.site.as_str(),
        d.asset.as_str(),
        d.start_ms,
        d.end_ms,
        d.gateway.as_str(),
        d.reason,
        fo,
        d.data_gap
    ])?;
    Ok(())
}

/// # Errors
/// SQLite errors.
pub fn delete_downtime(conn: &Connection, site: &SiteId, asset: &AssetId, start_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM downtime WHERE site = ?1 AND asset = ?2 AND start_ms = ?3")?.execute(params![
        site.as_str(),
        asset.as_str(),
        start_ms
    ])?;
    Ok(())
}

/// Every stored event and last-will mark as timeline inputs, for rebuilding the timeline at start.
///
/// # Errors
/// SQLite errors; rows that no longer parse are skipped with a warning.
pub fn load_inputs(conn: &Connection) -> rusqlite::Result<Vec<Input>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT site, gateway, epoch, seq, asset, ts_ms, body FROM events")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (site, gateway, asset, body): (String, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(4)?, r.get(6)?);
        let parsed = (SiteId::parse(site), GatewayId::parse(gateway), AssetId::parse(asset));
        let (Ok(site), Ok(gateway), Ok(asset), Ok(body)) =
            (parsed.0, parsed.1, parsed.2, serde_json::from_str::<EventBody>(&body))
        else {
            tracing::warn!("skipping an unreadable stored event");
            continue;
        };
        let event = Event { seq: r.get::<_, i64>(3)? as u64, ts_ms: r.get(5)?, asset, body };
        out.push(Input::Event { site, gateway, epoch: r.get::<_, i64>(2)? as u64, event });
    }
    let mut stmt = conn.prepare("SELECT site, gateway, ts_ms FROM gateway_offline")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let (Ok(site), Ok(gateway)) =
            (SiteId::parse(r.get::<_, String>(0)?), GatewayId::parse(r.get::<_, String>(1)?))
        {
            out.push(Input::Offline { site, gateway, ts_ms: r.get(2)? });
        }
    }
    Ok(out)
}

/// Filters for reading downtime: events overlapping `[from_ms, to_ms)`.
#[derive(Debug, Clone, Default)]
pub struct DowntimeFilter {
    pub site: Option<SiteId>,
    pub asset: Option<AssetId>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

pub(crate) fn downtime_row(r: &Row<'_>) -> rusqlite::Result<Option<Downtime>> {
    let site = SiteId::parse(r.get::<_, String>(0)?);
    let asset = AssetId::parse(r.get::<_, String>(1)?);
    let gateway = GatewayId::parse(r.get::<_, String>(4)?);
    let first_out: Option<String> = r.get(6)?;
    let (Ok(site), Ok(asset), Ok(gateway)) = (site, asset, gateway) else { return Ok(None) };
    Ok(Some(Downtime {
        site,
        gateway,
        asset,
        start_ms: r.get(2)?,
        end_ms: r.get(3)?,
        reason: r.get(5)?,
        first_out: first_out.and_then(|f| serde_json::from_str::<FirstOut>(&f).ok()),
        data_gap: r.get(7)?,
    }))
}

/// Downtime events matching `f`, ordered by start.
///
/// # Errors
/// SQLite errors.
pub fn query_downtime(conn: &Connection, f: &DowntimeFilter) -> rusqlite::Result<Vec<Downtime>> {
    let mut stmt = conn.prepare_cached(
        "SELECT site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap FROM downtime
         WHERE (?1 IS NULL OR site = ?1) AND (?2 IS NULL OR asset = ?2)
           AND (?3 IS NULL OR end_ms IS NULL OR end_ms > ?3) AND (?4 IS NULL OR start_ms < ?4)
         ORDER BY start_ms, site, asset",
    )?;
    let rows = stmt.query_map(
        params![f.site.as_ref().map(|s| s.as_str()), f.asset.as_ref().map(|a| a.as_str()), f.from_ms, f.to_ms],
        downtime_row,
    )?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(r?);
    }
    Ok(out)
}

/// Number of dead letters stored.
///
/// # Errors
/// SQLite errors.
pub fn dead_letter_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// Deletes raw events received before `cutoff_ms` (by arrival, so a late or replayed old event is still
/// kept for the whole retention); returns how many. The events of an asset's open downtime (from its start
/// on, and alarms from the longest first-out window, 1 d, before it) are kept until it closes: the timeline
/// rebuilt at start needs them, or the event that ends it would find no stop to close and the row would
/// stay open for ever.
///
/// # Errors
/// SQLite errors.
pub fn prune_events(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    // Open downtime rows are few (at most one per asset); the scan of `downtime` for them runs once.
    conn.execute(
        "WITH open AS MATERIALIZED (
           SELECT site, asset, MIN(start_ms) AS start_ms FROM downtime WHERE end_ms IS NULL GROUP BY site, asset)
         DELETE FROM events WHERE received_ms < ?1 AND NOT EXISTS (
           SELECT 1 FROM open o WHERE o.site = events.site AND o.asset = events.asset
             AND events.ts_ms >= o.start_ms - CASE WHEN events.kind = 'alarm' THEN 86400000 ELSE 0 END)",
        [cutoff_ms],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftlens_common::MachineState;

    fn rows(seqs: &[u64]) -> Rows {
        let events = seqs
            .iter()
            .map(|&seq| Event {
                seq,
                ts_ms: 1_700_000_000_000 + seq as i64,
                asset: AssetId::parse("press-1").unwrap(),
                body: EventBody::State { state: MachineState::Running, reason: Some(format!("r{seq}")) },
            })
            .collect();
        let batch = Batch::new(SiteId::parse("s").unwrap(), GatewayId::parse("gw").unwrap(), 7, events);
        Rows::new(batch).unwrap()
    }

    #[test]
    fn a_nul_in_any_text_is_refused_and_a_backslash_before_u0000_is_not_one() {
        let with = |reason: &str| {
            let body = EventBody::State { state: MachineState::Down, reason: Some(reason.into()) };
            let e = Event { seq: 1, ts_ms: 1_700_000_000_000, asset: AssetId::parse("press-1").unwrap(), body };
            Rows::new(Batch::new(SiteId::parse("s").unwrap(), GatewayId::parse("gw").unwrap(), 7, vec![e]))
        };
        for bad in ["E\0STOP", "\0", "a\\\0"] {
            assert!(with(bad).unwrap_err().to_string().contains("NUL"), "{bad:?}");
        }
        for good in ["E-STOP", "\\u0000", "\\\\u0000", "u0000", "\u{1}"] {
            assert!(with(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn multi_row_inserts_say_exactly_which_events_were_new() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("c.db")).unwrap();
        let first: Vec<u64> = (1..=150).collect();
        assert!(insert_rows(&conn, &rows(&first), 0).unwrap().iter().all(|&n| n));
        // Overlapping the stored range, out of order, seqs twice (in one chunk, across chunks): 200 events,
        // three full chunks of 64 and a tail of 8.
        let mut second: Vec<u64> = (100..=297).rev().collect();
        second.insert(10, 290);
        second.insert(70, 250);
        let new = insert_rows(&conn, &rows(&second), 0).unwrap();
        assert_eq!(new.len(), second.len());
        for (i, (&seq, &n)) in second.iter().zip(&new).enumerate() {
            let first_time = seq > 150 && !second[..i].contains(&seq);
            assert_eq!(n, first_time, "seq {seq} at {i}");
        }
        let stored: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 297);
        let body: String = conn.query_row("SELECT body FROM events WHERE seq = 200", [], |r| r.get(0)).unwrap();
        assert_eq!(serde_json::from_str::<EventBody>(&body).unwrap(), rows(&[200]).batch.events[0].body);
    }
}
