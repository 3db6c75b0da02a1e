//! SQLite persistence of personnel records and join snapshots (schema `sql/002_people.sql`).
//!
//! Invariants: an import is one transaction, so a file is stored whole or not at all; records are
//! versioned, never updated in place: a changed or dropped key closes its current version
//! (`superseded_by`) and a changed key gets a new one; re-importing the same file changes nothing.
//! Join snapshots are insert-only (triggers refuse UPDATE and DELETE): a different join result for an
//! event becomes its next revision.

use crate::join::{AlarmStart, JoinedEvent};
use crate::people::import::{self, Kind, Record};
use crate::people::{Personnel, Settings};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum PeopleStoreError {
    #[error("SQLite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("migrating the store: {0}")]
    Migrate(#[from] rusqlite_migration::Error),
    #[error("stored {kind} record {key:?} is unreadable: {source}")]
    Body { kind: String, key: String, source: serde_json::Error },
}

/// Opens (creating if needed) a store file and applies all migrations.
///
/// # Errors
/// When the file cannot be opened or migrated.
pub fn open(path: &Path) -> Result<Connection, PeopleStoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    crate::store::migrations::migrations().to_latest(&mut conn)?;
    Ok(conn)
}

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// The new data revision, `None` when nothing changed.
    pub import_id: Option<i64>,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Stores a validated file of `kind` as the full current list of that kind, in one transaction.
///
/// # Errors
/// SQLite failures; the store is then unchanged.
pub fn import(
    conn: &mut Connection,
    kind: Kind,
    file: &str,
    records: &[Record],
    now_ms: i64,
) -> Result<ImportSummary, PeopleStoreError> {
    // IMMEDIATE: wait (busy_timeout) for another writer (ingest, a snapshot save) rather than fail on a
    // read that a commit made stale meanwhile.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut current: HashMap<String, (i64, String)> = HashMap::new();
    {
        let mut st = tx.prepare("SELECT id, key, body FROM people_record WHERE kind = ?1 AND superseded_by IS NULL")?;
        let rows =
            st.query_map([kind.name()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        for row in rows {
            let (id, key, body) = row?;
            current.insert(key, (id, body));
        }
    }
    let mut s = ImportSummary::default();
    let mut to_add: Vec<(&str, String)> = Vec::new();
    let mut to_close: Vec<i64> = Vec::new();
    for r in records {
        let body = r.body.to_string();
        match current.remove(&r.key) {
            Some((_, old)) if old == body => s.unchanged += 1,
            Some((id, _)) => {
                s.changed += 1;
                to_close.push(id);
                to_add.push((&r.key, body));
            }
            None => {
                s.added += 1;
                to_add.push((&r.key, body));
            }
        }
    }
    s.removed = current.len();
    to_close.extend(current.values().map(|(id, _)| *id));
    if to_add.is_empty() && to_close.is_empty() {
        return Ok(s);
    }
    tx.execute(
        "INSERT INTO people_import (kind, file, imported_ms, added, changed, removed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![kind.name(), file, now_ms, s.added as i64, s.changed as i64, s.removed as i64],
    )?;
    let import_id = tx.last_insert_rowid();
    {
        let mut close = tx.prepare("UPDATE people_record SET superseded_by = ?1 WHERE id = ?2")?;
        for id in &to_close {
            close.execute(params![import_id, id])?;
        }
        let mut add = tx.prepare("INSERT INTO people_record (kind, key, body, import_id) VALUES (?1, ?2, ?3, ?4)")?;
        for (key, body) in &to_add {
            add.execute(params![kind.name(), key, body, import_id])?;
        }
    }
    tx.commit()?;
    s.import_id = Some(import_id);
    Ok(s)
}

/// The current data revision: the latest import id, 0 before any import.
///
/// # Errors
/// SQLite failures.
pub fn data_revision(conn: &Connection) -> Result<i64, PeopleStoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM people_import", [], |r| r.get(0))?)
}

/// The current asset records (the assets import only): what the live feed's line lookup needs.
///
/// # Errors
/// SQLite failures, or a stored asset record that does not read back.
pub fn current_assets(conn: &Connection) -> Result<Vec<crate::people::model::Asset>, PeopleStoreError> {
    let kind = Kind::Assets.name();
    let mut st = conn.prepare("SELECT key, body FROM people_record WHERE kind = ?1 AND superseded_by IS NULL")?;
    let rows = st.query_map([kind], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, body) = row?;
        out.push(serde_json::from_str(&body).map_err(|source| PeopleStoreError::Body {
            kind: kind.to_string(),
            key,
            source,
        })?);
    }
    Ok(out)
}

/// Loads the current records of every kind.
///
/// # Errors
/// SQLite failures, or a stored body that does not read back.
pub fn load(conn: &Connection, settings: Settings) -> Result<Personnel, PeopleStoreError> {
    let mut p = Personnel::new(settings);
    let mut st =
        conn.prepare("SELECT key, body FROM people_record WHERE kind = ?1 AND superseded_by IS NULL ORDER BY id")?;
    for kind in Kind::ALL {
        let mut bodies = Vec::new();
        for row in st.query_map([kind.name()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (key, body) = row?;
            let v = serde_json::from_str(&body).map_err(|source| PeopleStoreError::Body {
                kind: kind.name().into(),
                key: key.clone(),
                source,
            })?;
            bodies.push(v);
        }
        import::load_into(&mut p, kind, bodies).map_err(|source| PeopleStoreError::Body {
            kind: kind.name().into(),
            key: String::new(),
            source,
        })?;
    }
    Ok(p.rebuilt())
}

/// Versions of one record key, oldest first: (import id that added it, import id that closed it, body).
///
/// # Errors
/// SQLite failures.
pub fn history(conn: &Connection, kind: Kind, key: &str) -> Result<Vec<(i64, Option<i64>, String)>, PeopleStoreError> {
    let mut st = conn
        .prepare("SELECT import_id, superseded_by, body FROM people_record WHERE kind = ?1 AND key = ?2 ORDER BY id")?;
    let rows = st.query_map(params![kind.name(), key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What saving snapshots did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotSummary {
    pub new: usize,
    pub revised: usize,
    pub unchanged: usize,
}

/// Stores the join of each event unless its latest snapshot says the same; a different result is
/// inserted as the next revision. The latest revisions are compared first, outside any write: when
/// nothing changed nothing is written (the store is left as it was); otherwise the new rows go in one
/// `IMMEDIATE` transaction, which waits for the writer rather than failing on a stale read.
///
/// # Errors
/// SQLite failures; nothing is then stored.
pub fn save_snapshots(
    conn: &mut Connection,
    data_rev: i64,
    events: &[JoinedEvent],
    now_ms: i64,
) -> Result<SnapshotSummary, PeopleStoreError> {
    let mut s = SnapshotSummary::default();
    let mut latest: HashMap<String, (i64, String)> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT s.event_key, s.revision, s.body FROM join_snapshot s
             JOIN (SELECT event_key, MAX(revision) AS rev FROM join_snapshot GROUP BY event_key) m
               ON m.event_key = s.event_key AND m.rev = s.revision",
        )?;
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))? {
            let (k, rev, body) = row?;
            latest.insert(k, (rev, body));
        }
    }
    let mut rows: Vec<(&str, i64, String)> = Vec::new();
    for e in events {
        let body = serde_json::to_string(e).map_err(|source| PeopleStoreError::Body {
            kind: "join".into(),
            key: e.key.clone(),
            source,
        })?;
        let revision = match latest.remove(&e.key) {
            Some((_, old)) if old == body => {
                s.unchanged += 1;
                continue;
            }
            Some((rev, _)) => {
                s.revised += 1;
                rev + 1
            }
            None => {
                s.new += 1;
                1
            }
        };
        rows.push((e.key.as_str(), revision, body));
    }
    if rows.is_empty() {
        return Ok(s);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO join_snapshot (event_key, revision, data_rev, computed_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (key, revision, body) in &rows {
            insert.execute(params![key, revision, data_rev, now_ms, body])?;
        }
    }
    tx.commit()?;
    Ok(s)
}

/// One stored revision of an event's join.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub data_rev: i64,
    pub computed_ms: i64,
    pub event: JoinedEvent,
}

/// Every revision of an event's join, oldest first.
///
/// # Errors
/// SQLite failures or an unreadable body.
pub fn snapshots(conn: &Connection, event_key: &str) -> Result<Vec<Snapshot>, PeopleStoreError> {
    let mut st = conn.prepare(
        "SELECT revision, data_rev, computed_ms, body FROM join_snapshot WHERE event_key = ?1 ORDER BY revision",
    )?;
    let rows = st.query_map([event_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (revision, data_rev, computed_ms, body) = row?;
        let event = serde_json::from_str(&body).map_err(|source| PeopleStoreError::Body {
            kind: "join".into(),
            key: event_key.into(),
            source,
        })?;
        out.push(Snapshot { revision, data_rev, computed_ms, event });
    }
    Ok(out)
}

/// The latest revision of every stored join.
///
/// # Errors
/// SQLite failures or an unreadable body.
pub fn latest_snapshots(conn: &Connection) -> Result<Vec<JoinedEvent>, PeopleStoreError> {
    let mut st = conn.prepare(
        "SELECT s.event_key, s.body FROM join_snapshot s
         JOIN (SELECT event_key, MAX(revision) AS rev FROM join_snapshot GROUP BY event_key) m
           ON m.event_key = s.event_key AND m.rev = s.revision ORDER BY s.event_key",
    )?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, body) = row?;
        out.push(serde_json::from_str(&body).map_err(|source| PeopleStoreError::Body {
            kind: "join".into(),
            key,
            source,
        })?);
    }
    Ok(out)
}

/// Alarm activations in `[from, to)` from the raw events table, sorted by time (for the alarm-load report).
///
/// An activation is an `active` event for an alarm that was not already active on that asset: a restarted
/// agent's snapshot (or any re-sent `active` without a clear between) is not counted again. Events before
/// `from` are read for that state, not counted.
///
/// # Errors
/// SQLite failures.
pub fn alarm_starts(conn: &Connection, from_ms: i64, to_ms: i64) -> Result<Vec<AlarmStart>, PeopleStoreError> {
    let mut st = conn.prepare(
        "SELECT site, asset, ts_ms, body FROM events WHERE kind = 'alarm' AND ts_ms < ?1
         ORDER BY ts_ms, gateway, epoch, seq",
    )?;
    let rows = st.query_map(params![to_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
    })?;
    let mut active: std::collections::HashSet<(String, String, String)> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for row in rows {
        let (site, asset, ts_ms, body) = row?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
        let id = v["alarm"]["id"].as_str().unwrap_or_default().to_string();
        let key = (site, asset, id);
        if v["alarm"]["active"].as_bool().unwrap_or(false) {
            if active.insert(key.clone()) && ts_ms >= from_ms {
                out.push(AlarmStart { asset: key.1, ts_ms });
            }
        } else {
            active.remove(&key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod alarm_start_tests {
    use super::alarm_starts;
    use crate::store::events::{insert_rows, Rows};
    use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, SiteId};

    /// A restarted agent's snapshot (an `active` for an alarm already active, no clear between) is not a new
    /// activation; an `active` after a clear is; the window counts only activations inside it but knows the
    /// state from before.
    #[test]
    fn a_resent_activation_is_not_a_new_activation() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("c.db")).unwrap();
        // (epoch, seq, ts, asset, alarm, active)
        let events = [
            (1, 1, 100, "press-1", "A", true),
            (1, 2, 100, "press-1", "B", true),
            (1, 3, 200, "press-2", "A", true),
            // The agent restarts (a new outbox epoch, as after a lost database) and sends its snapshot again.
            (2, 1, 300, "press-1", "A", true),
            (2, 2, 300, "press-1", "B", true),
            (2, 3, 400, "press-1", "B", false),
            (2, 4, 500, "press-1", "B", true),
            (2, 5, 600, "press-1", "A", true),
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
        let starts = |from, to| -> Vec<(String, i64)> {
            alarm_starts(&conn, from, to).unwrap().into_iter().map(|a| (a.asset, a.ts_ms)).collect()
        };
        let all = vec![
            ("press-1".to_string(), 100),
            ("press-1".into(), 100),
            ("press-2".into(), 200),
            ("press-1".into(), 500),
        ];
        assert_eq!(starts(i64::MIN, i64::MAX), all);
        assert_eq!(starts(250, 1000), vec![("press-1".to_string(), 500)]);
    }
}
