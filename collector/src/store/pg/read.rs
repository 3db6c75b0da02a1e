//! The read side of the PostgreSQL store for blocking callers (the dashboard's `spawn_blocking` tasks, the
//! CLI): a [`Reader`] owns a small runtime of its own and one connection, and answers with the same plain
//! data the SQLite readers give (personnel, downtime, alarm activations, gateways), so the pure report
//! functions work unchanged.

use super::{PgError, Target};
use crate::join::AlarmStart;
use crate::people::import::{self, Kind};
use crate::people::{Personnel, Settings};
use crate::store::events::DowntimeFilter;
use crate::timeline::Downtime;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A gateway as stored: (gateway, site, online, last seen ms, last status as JSON).
pub type GatewayRow = (String, String, bool, i64, String);

/// A blocking PostgreSQL reader. Do not call it from async code: use `spawn_blocking`.
pub struct Reader {
    // pub(super): the readers of other tables (`pg::alarms`, `pg::escalations`) add methods in their files.
    pub(super) rt: Rt,
    pub(super) client: tokio_postgres::Client,
    pub(super) target: Target,
}

/// The reader's own runtime, shut down without waiting when the reader is dropped: a reader may be dropped
/// on an async thread (a dashboard dropping its cached reader when the server stops), where dropping a
/// runtime the plain way panics.
pub(super) struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Reader {
    /// Connects (and migrates, so a reader never sees an older schema than it expects).
    ///
    /// # Errors
    /// Unreachable, refused, or a newer schema.
    pub fn open(target: &Target) -> Result<Self, PgError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| PgError::Connect {
            at: target.at().to_string(),
            cause: format!("cannot start a runtime: {e}"),
        })?;
        let client = rt.block_on(super::open(target))?;
        Ok(Self { rt: Rt(Some(rt)), client, target: target.clone() })
    }

    fn sql(&self, e: &tokio_postgres::Error) -> PgError {
        self.target.sql_error(e)
    }

    /// Whether the connection is gone (then open a new reader).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Whether the server still answers on this connection (an empty statement, one round trip).
    pub fn ping(&self) -> bool {
        !self.is_closed() && self.rt.block_on(self.client.simple_query("")).is_ok()
    }

    /// A number that changes whenever any table of the store changed (rows inserted, updated or deleted;
    /// PostgreSQL's statistics, current within about a second).
    ///
    /// # Errors
    /// Statement failures.
    pub fn data_version(&self) -> Result<i64, PgError> {
        let row = self
            .rt
            .block_on(self.client.query_one(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables
                 WHERE schemaname = 'shiftlens'",
                &[],
            ))
            .map_err(|e| self.sql(&e))?;
        Ok(row.get(0))
    }

    /// The latest people import's id (0 before the first).
    ///
    /// # Errors
    /// Statement failures.
    pub fn people_revision(&self) -> Result<i64, PgError> {
        let row = self
            .rt
            .block_on(self.client.query_one("SELECT coalesce(max(id), 0) FROM people_import", &[]))
            .map_err(|e| self.sql(&e))?;
        Ok(row.get(0))
    }

    /// The current personnel records of every kind (as `store::people::load`).
    ///
    /// # Errors
    /// Statement failures, or a stored body that does not read back.
    pub fn people(&self, settings: Settings) -> Result<Personnel, PgError> {
        let rows = self
            .rt
            .block_on(
                self.client
                    .query("SELECT kind, key, body FROM people_record WHERE superseded_by IS NULL ORDER BY id", &[]),
            )
            .map_err(|e| self.sql(&e))?;
        let mut p = Personnel::new(settings);
        for kind in Kind::ALL {
            let mut bodies = Vec::new();
            for r in rows.iter().filter(|r| r.get::<_, &str>(0) == kind.name()) {
                let v = serde_json::from_str(r.get::<_, &str>(2)).map_err(|e| PgError::Sql {
                    at: self.target.at().to_string(),
                    cause: format!("{} record {}: {e}", kind.name(), r.get::<_, &str>(1)),
                })?;
                bodies.push(v);
            }
            import::load_into(&mut p, kind, bodies).map_err(|e| PgError::Sql {
                at: self.target.at().to_string(),
                cause: format!("{} records: {e}", kind.name()),
            })?;
        }
        Ok(p.rebuilt())
    }

    /// Downtime events matching `f` (overlapping `[from_ms, to_ms)`), ordered by start (then site and asset,
    /// as SQLite's `events::query_downtime`).
    ///
    /// The filter is the statement's (an unnamed statement, planned with its values), and the rows are
    /// sorted here and converted as they arrive: `ORDER BY start_ms` walked the start index, one heap page
    /// per row in a table stored in key order (about 100 ms of the server's time for 100,000 rows, against
    /// 20 ms for the scan).
    ///
    /// # Errors
    /// Statement failures.
    pub fn downtime(&self, f: &DowntimeFilter) -> Result<Vec<Downtime>, PgError> {
        use futures_util::TryStreamExt;
        let site = f.site.as_ref().map(|s| s.as_str());
        let asset = f.asset.as_ref().map(|a| a.as_str());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&site, &asset, &f.from_ms, &f.to_ms];
        let mut out = self
            .rt
            .block_on(async {
                let rows = self
                    .client
                    .query_raw(
                        "SELECT site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap FROM downtime
                         WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR asset = $2)
                           AND ($3::int8 IS NULL OR end_ms IS NULL OR end_ms > $3)
                           AND ($4::int8 IS NULL OR start_ms < $4)",
                        params,
                    )
                    .await?;
                rows.try_filter_map(|r| std::future::ready(Ok(super::sql::downtime_row(&r))))
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| self.sql(&e))?;
        out.sort_unstable_by(|a, b| (a.start_ms, &a.site, &a.asset).cmp(&(b.start_ms, &b.site, &b.asset)));
        Ok(out)
    }

    /// Alarm activations in `[from_ms, to_ms)`, as `store::people::alarm_starts` reads them from SQLite.
    ///
    /// # Errors
    /// Statement failures.
    pub fn alarm_starts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AlarmStart>, PgError> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT site, asset, ts_ms, body FROM events WHERE kind = 'alarm' AND ts_ms < $1
                 ORDER BY ts_ms, gateway, epoch, seq",
                &[&to_ms],
            ))
            .map_err(|e| self.sql(&e))?;
        let mut active: HashSet<(String, String, String)> = HashSet::new();
        let mut out = Vec::new();
        for r in rows {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(r.get::<_, &str>(3)) else { continue };
            let id = v["alarm"]["id"].as_str().unwrap_or_default().to_string();
            let ts_ms: i64 = r.get(2);
            let key = (r.get::<_, String>(0), r.get::<_, String>(1), id);
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

    /// Gateways, online first, then by id.
    ///
    /// # Errors
    /// Statement failures.
    pub fn gateways(&self) -> Result<Vec<GatewayRow>, PgError> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT gateway, site, online, last_seen_ms, status FROM gateways ORDER BY online DESC, gateway",
                &[],
            ))
            .map_err(|e| self.sql(&e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect())
    }

    /// Dead letters stored.
    ///
    /// # Errors
    /// Statement failures.
    pub fn dead_letter_count(&self) -> Result<u64, PgError> {
        let row = self
            .rt
            .block_on(self.client.query_one("SELECT count(*) FROM dead_letters", &[]))
            .map_err(|e| self.sql(&e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// The (site, asset) → line map of the current assets import (as `feed::load_lines`).
    ///
    /// # Errors
    /// Statement failures, or a stored asset record that does not read back.
    pub fn lines(&self) -> Result<crate::feed::LineMap, PgError> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT body FROM people_record WHERE kind = $1 AND superseded_by IS NULL",
                &[&Kind::Assets.name()],
            ))
            .map_err(|e| self.sql(&e))?;
        let mut assets = Vec::with_capacity(rows.len());
        for r in rows {
            assets.push(
                serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| PgError::Sql {
                    at: self.target.at().to_string(),
                    cause: format!("asset record: {e}"),
                })?,
            );
        }
        Ok(crate::feed::LineMap::from_assets(assets))
    }
}

/// How often the feed's line lookup asks the database whether assets were imported.
const LINES_RECHECK: Duration = Duration::from_secs(2);

/// The feed's asset → line lookup over a PostgreSQL store (as `feed::AssetLines` over SQLite): a cached
/// map, reloaded after a people import. Its reader runs on a thread of its own, so the lookup never
/// blocks an async task for longer than a map lookup.
pub fn line_of(target: &Target) -> crate::feed::LineOf {
    let lines: Arc<Mutex<Arc<crate::feed::LineMap>>> = Arc::default();
    let shared = lines.clone();
    let target = target.clone();
    let spawned = std::thread::Builder::new().name("feed-lines".into()).spawn(move || {
        let (mut reader, mut revision, mut last_error) = (None::<Reader>, -1, None::<Instant>);
        loop {
            if reader.as_ref().is_none_or(Reader::is_closed) {
                reader = Reader::open(&target).ok();
            }
            if let Some(r) = &reader {
                match r
                    .people_revision()
                    .and_then(|rev| Ok((rev, if rev != revision { Some(r.lines()?) } else { None })))
                {
                    Ok((rev, Some(map))) => {
                        tracing::info!(revision = rev, assets = map.len(), "asset lines loaded for the downtime feed");
                        *shared.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
                        revision = rev;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!(error = %e, "cannot read asset lines; the feed keeps the last known");
                            last_error = Some(Instant::now());
                        }
                        reader = None;
                    }
                }
            }
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            std::thread::sleep(LINES_RECHECK);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the asset line reader; feed records carry no line");
    }
    Arc::new(move |site, asset| {
        let map = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        map.line(site, asset)
    })
}

impl Reader {
    /// Stores the join of each event unless its latest snapshot says the same (as
    /// `store::people::save_snapshots`); one transaction. Two collectors saving the same revision at once
    /// keep the first (the key is (event, revision)); the other's next load finds it.
    ///
    /// # Errors
    /// Statement failures (nothing is then stored).
    pub fn save_snapshots(
        &mut self,
        joined: &[crate::join::JoinedEvent],
        now_ms: i64,
    ) -> Result<crate::store::people::SnapshotSummary, PgError> {
        let at = self.target.at().to_string();
        let sql = |e: tokio_postgres::Error| PgError::Sql { at: at.clone(), cause: super::cause(&e) };
        let rt = &self.rt;
        let client = &mut self.client;
        rt.block_on(async move {
            let tx = client.transaction().await.map_err(sql)?;
            let rev: i64 =
                tx.query_one("SELECT coalesce(max(id), 0) FROM people_import", &[]).await.map_err(sql)?.get(0);
            let mut latest: std::collections::HashMap<String, (i64, String)> = tx
                .query(
                    // Both keys descending: the primary key read backwards, no sort of every body (which
                    // spilled to disk for a year of events).
                    "SELECT DISTINCT ON (event_key) event_key, revision, body FROM join_snapshot
                     ORDER BY event_key DESC, revision DESC",
                    &[],
                )
                .await
                .map_err(sql)?
                .into_iter()
                .map(|r| (r.get::<_, String>(0), (r.get::<_, i64>(1), r.get::<_, String>(2))))
                .collect();
            let mut s = crate::store::people::SnapshotSummary::default();
            let (mut keys, mut revisions, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
            for e in joined {
                let Ok(body) = serde_json::to_string(e) else { continue };
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
                keys.push(e.key.clone());
                revisions.push(revision);
                bodies.push(body);
            }
            tx.execute(
                "INSERT INTO join_snapshot (event_key, revision, data_rev, computed_ms, body)
                 SELECT k, r, $4, $5, b FROM unnest($1::text[], $2::int8[], $3::text[]) AS u(k, r, b)
                 ON CONFLICT DO NOTHING",
                &[&keys, &revisions, &bodies, &rev, &now_ms],
            )
            .await
            .map_err(sql)?;
            tx.commit().await.map_err(sql)?;
            Ok(s)
        })
    }

    /// Every revision of an event's join, oldest first.
    ///
    /// # Errors
    /// Statement failures or an unreadable body.
    pub fn snapshots(&self, event_key: &str) -> Result<Vec<crate::store::people::Snapshot>, PgError> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT revision, data_rev, computed_ms, body FROM join_snapshot WHERE event_key = $1 ORDER BY revision",
                &[&event_key],
            ))
            .map_err(|e| self.sql(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let event = serde_json::from_str(r.get::<_, &str>(3)).map_err(|e| PgError::Sql {
                at: self.target.at().to_string(),
                cause: format!("join snapshot of {event_key}: {e}"),
            })?;
            out.push(crate::store::people::Snapshot {
                revision: r.get(0),
                data_rev: r.get(1),
                computed_ms: r.get(2),
                event,
            });
        }
        Ok(out)
    }
}

impl Reader {
    /// Stores a validated file of `kind` as the full current list of that kind, in one transaction (as
    /// `store::people::import`): changed and dropped keys get their record closed, new versions added.
    /// Imports of one kind from several collectors wait for each other (a transaction advisory lock).
    ///
    /// # Errors
    /// Statement failures; the store is then unchanged.
    pub fn import_people(
        &mut self,
        kind: Kind,
        file: &str,
        records: &[import::Record],
        now_ms: i64,
    ) -> Result<crate::store::people::ImportSummary, PgError> {
        let at = self.target.at().to_string();
        let sql = |e: tokio_postgres::Error| PgError::Sql { at: at.clone(), cause: super::cause(&e) };
        let rt = &self.rt;
        let client = &mut self.client;
        rt.block_on(async move {
            let tx = client.transaction().await.map_err(sql)?;
            let lock = format!("shiftlens.people:{}", kind.name());
            tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock]).await.map_err(sql)?;
            let mut current: std::collections::HashMap<String, (i64, String)> = tx
                .query(
                    "SELECT id, key, body FROM people_record WHERE kind = $1 AND superseded_by IS NULL",
                    &[&kind.name()],
                )
                .await
                .map_err(sql)?
                .into_iter()
                .map(|r| (r.get::<_, String>(1), (r.get::<_, i64>(0), r.get::<_, String>(2))))
                .collect();
            let mut s = crate::store::people::ImportSummary::default();
            let (mut add_keys, mut add_bodies, mut to_close) = (Vec::new(), Vec::new(), Vec::new());
            for r in records {
                let body = r.body.to_string();
                match current.remove(&r.key) {
                    Some((_, old)) if old == body => s.unchanged += 1,
                    Some((id, _)) => {
                        s.changed += 1;
                        to_close.push(id);
                        add_keys.push(r.key.clone());
                        add_bodies.push(body);
                    }
                    None => {
                        s.added += 1;
                        add_keys.push(r.key.clone());
                        add_bodies.push(body);
                    }
                }
            }
            s.removed = current.len();
            to_close.extend(current.values().map(|(id, _)| *id));
            if add_keys.is_empty() && to_close.is_empty() {
                return Ok(s);
            }
            let (added, changed, removed) = (s.added as i64, s.changed as i64, s.removed as i64);
            let import_id: i64 = tx
                .query_one(
                    "INSERT INTO people_import (kind, file, imported_ms, added, changed, removed)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[&kind.name(), &file, &now_ms, &added, &changed, &removed],
                )
                .await
                .map_err(sql)?
                .get(0);
            tx.execute("UPDATE people_record SET superseded_by = $1 WHERE id = ANY($2)", &[&import_id, &to_close])
                .await
                .map_err(sql)?;
            tx.execute(
                "INSERT INTO people_record (kind, key, body, import_id)
                 SELECT $1, k, b, $4 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(k, b, n) ORDER BY n",
                &[&kind.name(), &add_keys, &add_bodies, &import_id],
            )
            .await
            .map_err(sql)?;
            tx.commit().await.map_err(sql)?;
            s.import_id = Some(import_id);
            Ok(s)
        })
    }
}
