//! SQL for escalations (schema `sql/004_escalations.sql`): rung claims, delivery outcomes,
//! acknowledge tokens and acknowledgements. Plain functions over a connection; the escalation runner and
//! the HTTP handlers call them through [`Db`], on their own connections (WAL, short transactions), which
//! sends them to PostgreSQL's copies (`store::pg::escalations`) when that is the store.
//!
//! Invariant (one message per stop per rung): [`claim`] inserts `(stop_key, rung)` under a UNIQUE key and is
//! committed before the message is sent; the runner delivers only rows it claimed (or, after a restart,
//! rows still `pending`), and marks them `sent` after delivery. A crash between the claim and `sent` re-sends
//! that one message after the restart (its `id` lets a receiver drop the repeat); a crash at any other point
//! sends nothing twice.

use crate::escalate::ladder::{Action, Claimed, History};
use crate::timeline::Downtime;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// A message to deliver: a claimed row still `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: i64,
    pub stop_key: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    pub rung: u32,
    pub target: String,
    pub reason: String,
    pub skills: Vec<String>,
    pub person: String,
    pub channel: String,
    pub address: String,
    pub availability: String,
    pub attempts: u32,
}

/// Open downtime rows (no end), by start.
///
/// # Errors
/// SQLite errors.
pub fn open_downtime(conn: &Connection) -> rusqlite::Result<Vec<Downtime>> {
    let mut stmt = conn.prepare_cached(
        "SELECT site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap FROM downtime
         WHERE end_ms IS NULL ORDER BY start_ms, site, asset",
    )?;
    let rows = stmt.query_map([], crate::store::events::downtime_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(r?);
    }
    Ok(out)
}

/// Whether the stop `(site, asset, start_ms)` is still open and unacknowledged.
///
/// # Errors
/// SQLite errors.
pub fn still_wanted(
    conn: &Connection,
    stop_key: &str,
    site: &str,
    asset: &str,
    start_ms: i64,
) -> rusqlite::Result<bool> {
    let open: bool = conn
        .prepare_cached("SELECT end_ms IS NULL FROM downtime WHERE site = ?1 AND asset = ?2 AND start_ms = ?3")?
        .query_row(params![site, asset, start_ms], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    Ok(open && !acked(conn, stop_key)?)
}

fn acked(conn: &Connection, stop_key: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM escalation_ack WHERE stop_key = ?1")?.exists([stop_key])
}

/// Claimed rungs since `since_ms` and all rungs of `keys`, and which of `keys` are acknowledged.
///
/// # Errors
/// SQLite errors.
pub fn history(conn: &Connection, since_ms: i64, keys: &[String]) -> rusqlite::Result<History> {
    let mut h = History::default();
    let mut seen = HashSet::new();
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, Claimed)> {
        Ok((
            r.get(0)?,
            Claimed {
                stop_key: r.get(1)?,
                site: r.get(2)?,
                rung: r.get::<_, i64>(3)? as u32,
                person: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                at_ms: r.get(5)?,
            },
        ))
    };
    let mut recent = conn
        .prepare_cached("SELECT id, stop_key, site, rung, person, claimed_ms FROM escalation WHERE claimed_ms > ?1")?;
    for c in recent.query_map([since_ms], row)? {
        let (id, c) = c?;
        seen.insert(id);
        h.claimed.push(c);
    }
    let mut of_stop =
        conn.prepare_cached("SELECT id, stop_key, site, rung, person, claimed_ms FROM escalation WHERE stop_key = ?1")?;
    for k in keys {
        for c in of_stop.query_map([k], row)? {
            let (id, c) = c?;
            if seen.insert(id) {
                h.claimed.push(c);
            }
        }
        if acked(conn, k)? {
            h.acked.insert(k.clone());
        }
    }
    Ok(h)
}

/// Claims `a`'s rung with a token hash; `Ok(None)` when the rung was already claimed (nothing to send).
/// A rung with nobody to ask is stored as `skipped`.
///
/// # Errors
/// SQLite errors.
pub fn claim(
    conn: &Connection,
    a: &Action,
    now_ms: i64,
    token_hash: &[u8; 32],
    expires_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    let to = a.to.as_ref();
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO escalation (stop_key, site, asset, start_ms, rung, target, reason, skills, person,
               channel, address, availability, claimed_ms, state, token_hash, token_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            a.stop_key,
            a.site,
            a.asset,
            a.start_ms,
            a.rung,
            a.target.as_str(),
            a.reason.as_str(),
            a.skills.join(" "),
            to.map(|r| r.person.as_str()),
            to.map(|r| r.channel.as_str()),
            to.map(|r| r.address.as_str()),
            to.map(|r| r.availability),
            now_ms,
            if to.is_some() { "pending" } else { "skipped" },
            to.map(|_| token_hash.as_slice()),
            to.map(|_| expires_ms),
        ])?;
    Ok((n == 1).then(|| conn.last_insert_rowid()))
}

/// Every row still `pending` (to deliver after a restart).
///
/// # Errors
/// SQLite errors.
pub fn pending(conn: &Connection) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, stop_key, site, asset, start_ms, rung, target, reason, skills, person, channel, address,
                availability, attempts
         FROM escalation WHERE state = 'pending' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Pending {
            id: r.get(0)?,
            stop_key: r.get(1)?,
            site: r.get(2)?,
            asset: r.get(3)?,
            start_ms: r.get(4)?,
            rung: r.get::<_, i64>(5)? as u32,
            target: r.get(6)?,
            reason: r.get(7)?,
            skills: r.get::<_, String>(8)?.split_whitespace().map(str::to_string).collect(),
            person: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            channel: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
            address: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
            availability: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
            attempts: r.get::<_, i64>(13)? as u32,
        })
    })?;
    rows.collect()
}

/// A new token for a pending row (after a restart the old one is unknown: only its hash was stored).
///
/// # Errors
/// SQLite errors.
pub fn renew_token(conn: &Connection, id: i64, token_hash: &[u8; 32], expires_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE escalation SET token_hash = ?2, token_expires_ms = ?3 WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, token_hash.as_slice(), expires_ms])?;
    Ok(())
}

/// Records a failed attempt.
///
/// # Errors
/// SQLite errors.
pub fn attempt_failed(conn: &Connection, id: i64, error: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE escalation SET attempts = attempts + 1, error = ?2 WHERE id = ?1")?
        .execute(params![id, error])?;
    Ok(())
}

/// Ends a pending row: `sent` (delivered), `dead` (every attempt failed) or `cancelled` (no longer wanted).
/// The address is cleared: it was kept only to deliver.
///
/// # Errors
/// SQLite errors.
pub fn finish(conn: &Connection, id: i64, state: &str, now_ms: i64, error: Option<&str>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE escalation SET state = ?2, address = NULL,
           sent_ms = CASE WHEN ?2 = 'sent' THEN ?3 ELSE sent_ms END,
           attempts = attempts + CASE WHEN ?2 = 'sent' THEN 1 ELSE 0 END,
           error = COALESCE(?4, error)
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, state, now_ms, error])?;
    Ok(())
}

/// What an acknowledge token refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub stop_key: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    pub person: String,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
    /// The stop's acknowledgement, by anyone: (person, when).
    pub acked: Option<(String, i64)>,
    pub stop_open: bool,
}

impl TokenInfo {
    /// Why this token cannot acknowledge its stop at `now_ms` (used, expired, or the stop ended unacknowledged),
    /// or `None` when it can: the one rule both stores apply inside their acknowledge transaction.
    pub fn refusal(&self, now_ms: i64) -> Option<AckOutcome> {
        if let Some(at_ms) = self.used_ms {
            return Some(AckOutcome::Used { at_ms });
        }
        if now_ms >= self.expires_ms {
            return Some(AckOutcome::Expired);
        }
        if !self.stop_open && self.acked.is_none() {
            return Some(AckOutcome::StopOver);
        }
        None
    }
}

/// Looks a token up by its hash.
///
/// # Errors
/// SQLite errors.
pub fn token(conn: &Connection, hash: &[u8; 32]) -> rusqlite::Result<Option<TokenInfo>> {
    let info = conn
        .prepare_cached(
            "SELECT e.id, e.stop_key, e.site, e.asset, e.start_ms, COALESCE(e.person, ''), e.token_expires_ms,
                    e.token_used_ms, a.person, a.ack_ms, d.end_ms IS NULL AND d.start_ms IS NOT NULL
             FROM escalation e
             LEFT JOIN escalation_ack a ON a.stop_key = e.stop_key
             LEFT JOIN downtime d ON d.site = e.site AND d.asset = e.asset AND d.start_ms = e.start_ms
             WHERE e.token_hash = ?1",
        )?
        .query_row([hash.as_slice()], |r| {
            let ack: (Option<String>, Option<i64>) = (r.get(8)?, r.get(9)?);
            Ok(TokenInfo {
                id: r.get(0)?,
                stop_key: r.get(1)?,
                site: r.get(2)?,
                asset: r.get(3)?,
                start_ms: r.get(4)?,
                person: r.get(5)?,
                expires_ms: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                used_ms: r.get(7)?,
                acked: match ack {
                    (Some(p), Some(t)) => Some((p, t)),
                    _ => None,
                },
                stop_open: r.get::<_, Option<bool>>(10)?.unwrap_or(false),
            })
        })
        .optional()?;
    Ok(info)
}

/// The outcome of using a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// This acknowledgement is the stop's: response time starts counting from here.
    Acknowledged {
        person: String,
        stop_key: String,
        response_ms: i64,
    },
    /// The token is valid, but someone acknowledged the stop first.
    AlreadyAcknowledged {
        by: String,
        at_ms: i64,
    },
    Unknown,
    Expired,
    /// Used before (single use).
    Used {
        at_ms: i64,
    },
    /// The stop has ended: nothing to acknowledge (the token stays unused).
    StopOver,
}

/// Uses a token: single use, before its expiry. The first acknowledgement of a stop is recorded with who
/// responded and when; later ones only use up their token. One transaction.
///
/// # Errors
/// SQLite errors.
pub fn acknowledge(conn: &mut Connection, hash: &[u8; 32], via: &str, now_ms: i64) -> rusqlite::Result<AckOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let Some(t) = token(&tx, hash)? else { return Ok(AckOutcome::Unknown) };
    if let Some(refused) = t.refusal(now_ms) {
        return Ok(refused);
    }
    tx.execute("UPDATE escalation SET token_used_ms = ?2 WHERE id = ?1", params![t.id, now_ms])?;
    let outcome = match t.acked {
        Some((by, at_ms)) => AckOutcome::AlreadyAcknowledged { by, at_ms },
        None => {
            tx.execute(
                "INSERT INTO escalation_ack (stop_key, site, asset, start_ms, escalation_id, person, via, ack_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![t.stop_key, t.site, t.asset, t.start_ms, t.id, t.person, via, now_ms],
            )?;
            AckOutcome::Acknowledged { person: t.person, stop_key: t.stop_key, response_ms: now_ms - t.start_ms }
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Acknowledgement instants of stops, by `site/asset/start_ms` key.
///
/// # Errors
/// SQLite errors.
pub fn ack_times(conn: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached("SELECT stop_key, ack_ms FROM escalation_ack")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Sets `ack_ms` of each event from the escalation acknowledgements (by key). A store without the tables
/// (not yet migrated) leaves them unset.
pub fn fill_acks(conn: &Connection, events: &mut [crate::join::JoinedEvent]) {
    match ack_times(conn) {
        Ok(acks) => set_acks(&acks, events),
        Err(e) => tracing::debug!(error = %e, "no escalation acknowledgements read"),
    }
}

/// Sets `ack_ms` of each event from `acks` (by key), when there are any.
pub fn set_acks(acks: &HashMap<String, i64>, events: &mut [crate::join::JoinedEvent]) {
    if !acks.is_empty() {
        for e in events {
            e.ack_ms = acks.get(&e.key).copied();
        }
    }
}

/// One message as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoardMessage {
    pub rung: u32,
    pub target: String,
    pub person: Option<String>,
    pub channel: Option<String>,
    pub availability: Option<String>,
    pub state: String,
    pub claimed_ms: i64,
    pub sent_ms: Option<i64>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Messages of each stop in `keys`, by rung, and their acknowledgements (person, via, when).
///
/// # Errors
/// SQLite errors.
#[allow(clippy::type_complexity)]
pub fn board(
    conn: &Connection,
    keys: &[String],
) -> rusqlite::Result<(HashMap<String, Vec<BoardMessage>>, HashMap<String, (String, String, i64)>)> {
    let mut msgs: HashMap<String, Vec<BoardMessage>> = HashMap::new();
    let mut acks = HashMap::new();
    let mut m = conn.prepare_cached(
        "SELECT rung, target, person, channel, availability, state, claimed_ms, sent_ms, attempts, error
         FROM escalation WHERE stop_key = ?1 ORDER BY rung",
    )?;
    let mut a = conn.prepare_cached("SELECT person, via, ack_ms FROM escalation_ack WHERE stop_key = ?1")?;
    for k in keys {
        let rows = m.query_map([k], |r| {
            Ok(BoardMessage {
                rung: r.get::<_, i64>(0)? as u32,
                target: r.get(1)?,
                person: r.get(2)?,
                channel: r.get(3)?,
                availability: r.get(4)?,
                state: r.get(5)?,
                claimed_ms: r.get(6)?,
                sent_ms: r.get(7)?,
                attempts: r.get::<_, i64>(8)? as u32,
                error: r.get(9)?,
            })
        })?;
        msgs.insert(k.clone(), rows.collect::<rusqlite::Result<_>>()?);
        if let Some(x) = a.query_row([k], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()? {
            acks.insert(k.clone(), x);
        }
    }
    Ok((msgs, acks))
}

/// Whether a claimed message is still to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Yes,
    /// The stop closed or was acknowledged: cancel the message.
    No,
    /// Another collector owns the site now (PostgreSQL): leave the message pending for it.
    NotOwner,
}

/// The escalation state in the collector's store, SQLite or PostgreSQL: the one interface the runner and
/// the HTTP handlers use (blocking: call it off the async threads).
///
/// With PostgreSQL several collectors share the state; the steps that must happen once per site take
/// `owner`, the writer session that holds the site's ownership lock (`store::pg::owner`), and do nothing
/// for a site it does not hold. SQLite has one collector, which owns every site: `owner` is ignored.
pub enum Db {
    Sqlite(Connection),
    Postgres(PgDb),
}

/// A blocking PostgreSQL connection (with its own small runtime) that may be dropped anywhere: dropped on
/// an async thread, where a runtime must not be shut down, it is closed on a thread of its own.
pub struct PgDb(Option<Box<crate::store::pg::read::Reader>>);

impl PgDb {
    fn new(r: crate::store::pg::read::Reader) -> Self {
        Self(Some(Box::new(r)))
    }
}

impl std::ops::Deref for PgDb {
    type Target = crate::store::pg::read::Reader;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for PgDb {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_deref_mut().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(r));
            }
        }
    }
}

type DbResult<T> = Result<T, crate::store::reads::ReadError>;

impl Db {
    /// The store of `config`, for writing.
    ///
    /// # Errors
    /// The store cannot be opened (or the database reached).
    pub fn open(config: &crate::store::StoreConfig) -> DbResult<Self> {
        if config.backend == crate::store::Backend::Postgres {
            let target = crate::store::pg::Target::from_store(config)?;
            return Ok(Self::Postgres(PgDb::new(crate::store::pg::read::Reader::open(&target)?)));
        }
        Ok(Self::Sqlite(crate::store::open_writer(&config.path)?))
    }

    /// The store the dashboard reads at `path` (PostgreSQL when registered by
    /// `reads::serve_from_postgres`): read-only unless `write` (SQLite).
    ///
    /// # Errors
    /// The store cannot be opened.
    pub fn at(path: &std::path::Path, write: bool) -> DbResult<Self> {
        if let Some(target) = crate::store::reads::postgres_for(path) {
            return Ok(Self::Postgres(PgDb::new(crate::store::pg::read::Reader::open(&target)?)));
        }
        let open = if write { crate::store::open_writer } else { crate::store::open_reader };
        Ok(Self::Sqlite(open(path)?))
    }

    /// Closes the connection here and now (a blocking call: not on an async thread).
    pub fn close(self) {
        if let Self::Postgres(mut p) = self {
            drop(p.0.take());
        }
    }

    /// True when several collectors share this store (PostgreSQL): a message whose state cannot be
    /// checked is then left to the site's owner rather than sent regardless.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Reconnects when the PostgreSQL connection was lost (the next call would fail).
    ///
    /// # Errors
    /// The database cannot be reached.
    pub fn reconnect_if_lost(&mut self) -> DbResult<()> {
        if let Self::Postgres(r) = self {
            if r.is_closed() {
                *r = PgDb::new(r.reopened()?);
            }
        }
        Ok(())
    }

    /// The personnel data's revision (the latest import's id).
    ///
    /// # Errors
    /// Store failures.
    pub fn people_revision(&self) -> DbResult<i64> {
        match self {
            Self::Sqlite(c) => Ok(crate::store::people::data_revision(c)?),
            Self::Postgres(r) => Ok(r.people_revision()?),
        }
    }

    /// The current personnel records.
    ///
    /// # Errors
    /// Store failures.
    pub fn people(&self, settings: crate::people::Settings) -> DbResult<crate::people::Personnel> {
        match self {
            Self::Sqlite(c) => Ok(crate::store::people::load(c, settings)?),
            Self::Postgres(r) => Ok(r.people(settings)?),
        }
    }

    /// Open downtime rows (no end), by start.
    ///
    /// # Errors
    /// Store failures.
    pub fn open_downtime(&self) -> DbResult<Vec<Downtime>> {
        match self {
            Self::Sqlite(c) => Ok(open_downtime(c)?),
            Self::Postgres(r) => Ok(r.open_downtime()?),
        }
    }

    /// Whether a message of the stop is still to be sent by this collector.
    ///
    /// # Errors
    /// Store failures.
    pub fn still_wanted(&self, stop_key: &str, site: &str, asset: &str, start_ms: i64, owner: i32) -> DbResult<Wanted> {
        match self {
            Self::Sqlite(c) => {
                Ok(if still_wanted(c, stop_key, site, asset, start_ms)? { Wanted::Yes } else { Wanted::No })
            }
            Self::Postgres(r) => Ok(r.still_wanted(stop_key, site, asset, start_ms, owner)?),
        }
    }

    /// See [`history`].
    ///
    /// # Errors
    /// Store failures.
    pub fn history(&self, since_ms: i64, keys: &[String]) -> DbResult<History> {
        match self {
            Self::Sqlite(c) => Ok(history(c, since_ms, keys)?),
            Self::Postgres(r) => Ok(r.history(since_ms, keys)?),
        }
    }

    /// See [`claim`]; with PostgreSQL only while `owner` holds the site.
    ///
    /// # Errors
    /// Store failures.
    pub fn claim(
        &self,
        a: &Action,
        now_ms: i64,
        token_hash: &[u8; 32],
        expires_ms: i64,
        owner: i32,
    ) -> DbResult<Option<i64>> {
        match self {
            Self::Sqlite(c) => Ok(claim(c, a, now_ms, token_hash, expires_ms)?),
            Self::Postgres(r) => Ok(r.claim(a, now_ms, token_hash, expires_ms, owner)?),
        }
    }

    /// Every row still `pending`.
    ///
    /// # Errors
    /// Store failures.
    pub fn pending(&self) -> DbResult<Vec<Pending>> {
        match self {
            Self::Sqlite(c) => Ok(pending(c)?),
            Self::Postgres(r) => Ok(r.pending()?),
        }
    }

    /// See [`renew_token`].
    ///
    /// # Errors
    /// Store failures.
    pub fn renew_token(&self, id: i64, token_hash: &[u8; 32], expires_ms: i64) -> DbResult<()> {
        match self {
            Self::Sqlite(c) => Ok(renew_token(c, id, token_hash, expires_ms)?),
            Self::Postgres(r) => Ok(r.renew_token(id, token_hash, expires_ms)?),
        }
    }

    /// See [`attempt_failed`].
    ///
    /// # Errors
    /// Store failures.
    pub fn attempt_failed(&self, id: i64, error: &str) -> DbResult<()> {
        match self {
            Self::Sqlite(c) => Ok(attempt_failed(c, id, error)?),
            Self::Postgres(r) => Ok(r.attempt_failed(id, error)?),
        }
    }

    /// See [`finish`].
    ///
    /// # Errors
    /// Store failures.
    pub fn finish(&self, id: i64, state: &str, now_ms: i64, error: Option<&str>) -> DbResult<()> {
        match self {
            Self::Sqlite(c) => Ok(finish(c, id, state, now_ms, error)?),
            Self::Postgres(r) => Ok(r.finish(id, state, now_ms, error)?),
        }
    }

    /// See [`token`].
    ///
    /// # Errors
    /// Store failures.
    pub fn token(&self, hash: &[u8; 32]) -> DbResult<Option<TokenInfo>> {
        match self {
            Self::Sqlite(c) => Ok(token(c, hash)?),
            Self::Postgres(r) => Ok(r.token(hash)?),
        }
    }

    /// See [`acknowledge`].
    ///
    /// # Errors
    /// Store failures.
    pub fn acknowledge(&mut self, hash: &[u8; 32], via: &str, now_ms: i64) -> DbResult<AckOutcome> {
        match self {
            Self::Sqlite(c) => Ok(acknowledge(c, hash, via, now_ms)?),
            Self::Postgres(r) => Ok(r.acknowledge(hash, via, now_ms)?),
        }
    }

    /// See [`board`].
    ///
    /// # Errors
    /// Store failures.
    #[allow(clippy::type_complexity)]
    pub fn board(
        &self,
        keys: &[String],
    ) -> DbResult<(HashMap<String, Vec<BoardMessage>>, HashMap<String, (String, String, i64)>)> {
        match self {
            Self::Sqlite(c) => Ok(board(c, keys)?),
            Self::Postgres(r) => Ok(r.board(keys)?),
        }
    }
}
