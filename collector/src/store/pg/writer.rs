//! The PostgreSQL writer: a thread named `store-writer` (like SQLite's) running its own single-threaded
//! runtime, so the rest of the collector sees the same [`Writer`]: [`WriteOp`]s in, [`Committed`] out, and
//! nothing reported before its transaction has committed.
//!
//! Each transaction copies every event of its batches in one `COPY`; when a key `(site, gateway, epoch,
//! seq)` is already stored, the transaction starts again and inserts them `ON CONFLICT DO NOTHING`,
//! `RETURNING` the rows really inserted, which are the new ones. It then applies
//! the new events to the timeline, writes the downtime rows the timeline changed, and commits. When a
//! transaction fails (the database restarted, the network broke), nothing of it is acknowledged (agents
//! resend), the writer reconnects with a growing pause, rebuilds the timeline from what is really stored,
//! and goes on with the queued work: acks stop while the database is away and resume after.
//!
//! Several collectors may share the database, each batch reaching any of them. Every collector stores and
//! acks what it receives (the key dedups across collectors), but only the owner of a site runs its timeline
//! and writes its downtime rows, so each downtime change is written and published once. Ownership is a
//! session-level advisory lock per site (`pg_try_advisory_lock`) on the writer's own connection, the one
//! its downtime writes go through: a collector that dies or loses its connection loses its sites at once
//! and can no longer write for them; another collector takes them within [`TICK`]. The owner reads what
//! other collectors committed for its sites by transaction id: every `TICK` it applies the rows whose `xid`
//! lies between its cursor and the oldest transaction still running (all of those have ended, so no such
//! row can appear later), skipping the rows of its own transactions, which it applied directly.

use super::{cause, sql, PgError, Target};
use crate::store::events::Rows;
use crate::store::{
    merge, Committed, Pending, Retention, StoreConfig, StoreError, WriteOp, Writer, MAX_EVENTS_PER_TX, MAX_OPS_PER_TX,
    QUEUED_OPS,
};
use crate::timeline::{Input, Timeline};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Opens the database (connect, migrate), rebuilds the timeline and starts the writer thread; returns once
/// the store is ready, or with the reason it is not (unreachable, refused, a newer schema).
///
/// # Errors
/// See above; the message names the database.
pub fn spawn(config: &StoreConfig, out: mpsc::Sender<Committed>) -> Result<Writer, StoreError> {
    let target = Target::from_store(config)?;
    let window = config.first_out_window_ms();
    let retention = Retention::of(config);
    let (tx, rx) = mpsc::channel(QUEUED_OPS);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), PgError>>(1);
    let (shared, owned) = tokio::sync::watch::channel(super::owner::Owned::default());
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let cause = format!("cannot start the writer's runtime: {e}");
                    let _ = ready_tx.send(Err(PgError::Sql { at: target.at().to_string(), cause }));
                    return;
                }
            };
            rt.block_on(async move {
                let state = match State::open(target, window, shared).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                state.run(rx, out, retention).await;
            });
        })
        .map_err(StoreError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Writer { tx, thread, owned: Some(owned) }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e.into())
        }
        Err(_) => Err(StoreError::Thread(std::io::Error::other("the PostgreSQL writer thread ended while starting"))),
    }
}

struct State {
    target: Target,
    client: Client,
    timeline: Timeline,
    /// The sites whose ownership lock this writer's session holds, each with the xid below which every
    /// committed input of the site is applied to the timeline.
    owned: BTreeMap<String, i64>,
    /// This writer's own committed transactions not yet below every cursor: xid → the owned sites whose
    /// inputs it applied directly (so the poll skips those rows).
    own: BTreeMap<i64, BTreeSet<String>>,
    /// Sites found owned by another session since the last tick (not asked again until then).
    others: BTreeSet<String>,
    window: i64,
    /// Where the owned sites are published (escalation acts for these only), with this session's pid.
    shared: tokio::sync::watch::Sender<super::owner::Owned>,
    pid: i32,
}

/// How often a writer looks for sites without an owner and reads what other collectors committed for the
/// sites it owns. A collector that dies loses its sites with its session; they are taken within this.
const TICK: Duration = Duration::from_millis(500);

impl State {
    async fn open(
        target: Target,
        window: i64,
        shared: tokio::sync::watch::Sender<super::owner::Owned>,
    ) -> Result<Self, PgError> {
        let client = super::open(&target).await?;
        if let Err(e) = sql::writer_session(&client).await {
            return Err(target.sql_error(&e));
        }
        let pid = super::owner::backend_pid(&client).await.map_err(|e| target.sql_error(&e))?;
        let mut state = Self {
            target,
            client,
            timeline: Timeline::new(window),
            owned: BTreeMap::new(),
            own: BTreeMap::new(),
            others: BTreeSet::new(),
            window,
            shared,
            pid,
        };
        if let Err(e) = state.acquire().await {
            return Err(state.target.sql_error(&e));
        }
        tracing::info!(db = %state.target.at(), sites = ?state.owned.keys().collect::<Vec<_>>(), "PostgreSQL store opened");
        Ok(state)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<WriteOp>, out: mpsc::Sender<Committed>, retention: Retention) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => op,
                    None => break,
                },
                _ = tick.tick() => {
                    match self.shared_work().await {
                        Ok(outputs) => for o in outputs {
                            if out.send(o).await.is_err() {
                                return;
                            }
                        },
                        Err(e) => {
                            tracing::error!(db = %self.target.at(), error = %cause(&e), "reading the shared store failed");
                            self.recover().await;
                        }
                    }
                    continue;
                }
            };
            let (mut ops, mut pings, mut n_events) = (Vec::new(), Vec::new(), 0);
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    WriteOp::Ping(reply) => pings.push(reply),
                    op => {
                        if let WriteOp::Batch { rows, .. } = &op {
                            n_events += rows.len();
                        }
                        ops.push(op);
                    }
                }
                if ops.len() < MAX_OPS_PER_TX && n_events < MAX_EVENTS_PER_TX {
                    next = rx.try_recv().ok();
                }
            }
            let n_ops = ops.len();
            // A batch of a site nobody owned yet (its first): take the site now, so its timeline starts
            // with this batch rather than at the next tick.
            let mut new_sites: Vec<String> = ops
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Batch { rows, .. } => Some(rows.batch.site.as_str()),
                    _ => None,
                })
                .filter(|s| !self.owned.contains_key(*s) && !self.others.contains(*s))
                .map(str::to_string)
                .collect();
            new_sites.sort_unstable();
            new_sites.dedup();
            if !new_sites.is_empty() {
                match self.take(new_sites).await {
                    Ok(outputs) => {
                        for o in outputs {
                            if out.send(o).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(db = %self.target.at(), error = %cause(&e), ops = n_ops,
                            "store transaction failed; nothing acked, agents will resend");
                        self.recover().await;
                        continue;
                    }
                }
            }
            let owned: BTreeSet<String> = self.owned.keys().cloned().collect();
            match apply_ops(&mut self.client, &mut self.timeline, &owned, ops, retention).await {
                Ok((xid, outputs)) => {
                    self.own.insert(xid, owned);
                    for p in pings {
                        let _ = p.send(());
                    }
                    for o in outputs {
                        if out.send(o).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(db = %self.target.at(), error = %cause(&e), ops = n_ops,
                        "store transaction failed; nothing acked, agents will resend");
                    self.recover().await;
                }
            }
        }
        tracing::info!(db = %self.target.at(), "store writer stopped: every queued write committed");
    }

    /// Takes sites without an owner, then applies what other collectors committed for the owned ones.
    async fn shared_work(&mut self) -> Result<Vec<Committed>, tokio_postgres::Error> {
        self.others.clear();
        let mut outputs = self.acquire().await?;
        outputs.extend(self.poll().await?);
        Ok(outputs)
    }

    /// Takes the ownership of every site no live session owns: loads its committed inputs into the
    /// timeline and brings its downtime rows in line with them; returns the rows that changed (for the
    /// feed: what a collector that died had not yet published).
    async fn acquire(&mut self) -> Result<Vec<Committed>, tokio_postgres::Error> {
        let sites = sql::all_sites(&self.client).await?;
        self.take(sites).await
    }

    /// As [`State::acquire`], for the sites given.
    async fn take(&mut self, sites: Vec<String>) -> Result<Vec<Committed>, tokio_postgres::Error> {
        let mut outputs = Vec::new();
        for site in sites {
            if self.owned.contains_key(&site) || self.others.contains(&site) {
                continue;
            }
            if !sql::try_own(&self.client, &site).await? {
                self.others.insert(site);
                continue;
            }
            let settled = sql::settled_xid(&self.client).await?;
            let inputs = sql::inputs_in(&self.client, &site, &[0], &[settled]).await?;
            let n = inputs.len();
            for i in inputs {
                self.timeline.apply(i);
            }
            let now: Vec<_> = self.timeline.downtimes().into_iter().filter(|d| d.site.as_str() == site).collect();
            let stored = sql::site_downtime(&self.client, &site).await?;
            let upserts: Vec<_> = now.iter().filter(|d| !stored.contains(d)).collect();
            let deletes: Vec<_> =
                stored.iter().filter(|d| !now.iter().any(|n| n.asset == d.asset && n.start_ms == d.start_ms)).collect();
            let tx = self.client.transaction().await?;
            sql::write_downtime(&tx, &upserts, &deletes).await?;
            tx.commit().await?;
            tracing::info!(db = %self.target.at(), %site, inputs = n, changed = upserts.len() + deletes.len(),
                "site owned by this collector: its timeline runs here");
            outputs.extend(upserts.into_iter().cloned().map(Committed::Downtime));
            outputs.extend(deletes.into_iter().cloned().map(Committed::Retracted));
            self.owned.insert(site, settled);
            self.share_owned();
        }
        Ok(outputs)
    }

    /// Publishes the owned sites (after a change).
    fn share_owned(&self) {
        let now = super::owner::Owned { pid: self.pid, sites: self.owned.keys().cloned().collect() };
        self.shared.send_if_modified(|o| std::mem::replace(o, now.clone()) != now);
    }

    /// Applies what other collectors committed for the owned sites since the last poll; writes the downtime
    /// rows that changed and returns them.
    async fn poll(&mut self) -> Result<Vec<Committed>, tokio_postgres::Error> {
        if self.owned.is_empty() {
            return Ok(Vec::new());
        }
        let settled = sql::settled_xid(&self.client).await?;
        let mut changes = Pending::new();
        let sites: Vec<(String, i64)> = self.owned.iter().map(|(s, c)| (s.clone(), *c)).collect();
        for (site, cursor) in sites {
            if cursor >= settled {
                continue;
            }
            // [cursor, settled) less this writer's own transactions that applied the site's rows directly.
            let (mut lo, mut hi) = (vec![cursor], Vec::new());
            for (&x, applied) in self.own.range(cursor..settled) {
                if applied.contains(&site) {
                    hi.push(x);
                    lo.push(x + 1);
                }
            }
            hi.push(settled);
            // Most of these ranges are empty (this writer's transactions follow each other, and with one
            // collector all of them do): ask only for the others, and not at all when none is left.
            let (lo, hi): (Vec<i64>, Vec<i64>) = lo.into_iter().zip(hi).filter(|(l, h)| l < h).unzip();
            if !lo.is_empty() {
                for i in sql::inputs_in(&self.client, &site, &lo, &hi).await? {
                    merge(&mut changes, self.timeline.apply(i));
                }
            }
            self.owned.insert(site, settled);
        }
        let oldest = self.owned.values().copied().min().unwrap_or(settled);
        self.own = self.own.split_off(&oldest);
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        for c in changes.values() {
            match c {
                Committed::Downtime(d) => upserts.push(d),
                Committed::Retracted(d) => deletes.push(d),
                _ => {}
            }
        }
        let tx = self.client.transaction().await?;
        sql::write_downtime(&tx, &upserts, &deletes).await?;
        tx.commit().await?;
        Ok(changes.into_values().collect())
    }

    /// Reconnects if the connection is gone (its ownership locks went with it), then starts the timeline
    /// afresh from the sites it can own, retrying with a growing pause until it works.
    async fn recover(&mut self) {
        let mut pause = Duration::from_millis(200);
        loop {
            if self.client.is_closed() {
                match self.target.connect().await {
                    Ok(c) => {
                        tracing::info!(db = %self.target.at(), "reconnected to PostgreSQL");
                        self.client = c;
                        if let Err(e) = sql::writer_session(&self.client).await {
                            tracing::warn!(db = %self.target.at(), error = %cause(&e), "cannot set up the session; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        self.pid = super::owner::backend_pid(&self.client).await.unwrap_or(0);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "PostgreSQL still unreachable; ingest waits");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            // The timeline may hold inputs of a transaction that was rolled back: start it afresh, from
            // the sites this session can own now.
            let _ = self.client.execute("SELECT pg_advisory_unlock_all()", &[]).await;
            self.timeline = Timeline::new(self.window);
            self.owned.clear();
            self.share_owned();
            self.own.clear();
            self.others.clear();
            match self.acquire().await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(db = %self.target.at(), error = %cause(&e), "cannot rebuild the timeline; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One transaction: stores the ops; applies to the timeline the new inputs of the sites in `owned` (the rest
/// are applied by their owners, which read them from the table); returns the transaction's xid and what to
/// report once it has committed.
async fn apply_ops(
    client: &mut Client,
    timeline: &mut Timeline,
    owned: &BTreeSet<String>,
    ops: Vec<WriteOp>,
    retention: Retention,
) -> Result<(i64, Vec<Committed>), tokio_postgres::Error> {
    let mut sites: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Batch { rows, .. } => Some(rows.batch.site.as_str()),
            _ => None,
        })
        .collect();
    sites.sort_unstable();
    sites.dedup();
    let batches: Vec<(&Rows, i64)> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Batch { rows, received_ms } => Some((rows, *received_ms)),
            _ => None,
        })
        .collect();
    let mut tx = client.transaction().await?;
    let mut xid = sql::current_xid(&tx).await?;
    sql::note_sites(&tx, &sites).await?;
    // First as if every event were new (redeliveries are rare): COPY, far cheaper than `INSERT ... ON
    // CONFLICT` (a speculative insertion per row). A key already stored (a redelivery, a seq twice, another
    // collector's copy) aborts the transaction, which starts again the slower way. Not in a savepoint: a
    // subtransaction takes an xid of its own, a gap between this writer's transactions that the owner's
    // poll would have to read (measured: 0.3-1.3 s of server time a poll, growing with the table).
    let all_new = batches.iter().all(|(r, _)| r.is_empty()) || {
        match sql::copy_new(&tx, &batches).await {
            Ok(()) => true,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => false,
            Err(e) => return Err(e),
        }
    };
    let is_new = if all_new {
        batches.iter().map(|(r, _)| vec![true; r.len()]).collect()
    } else {
        tx.rollback().await?;
        tx = client.transaction().await?;
        xid = sql::current_xid(&tx).await?;
        sql::note_sites(&tx, &sites).await?;
        sql::insert_batches(&tx, &batches).await?
    };
    let mut is_new = is_new.into_iter();
    let mut outputs = Vec::new();
    let mut changes = Pending::new();
    let mut dead_letters = false;
    for op in ops {
        match op {
            WriteOp::Batch { rows, .. } => {
                let flags = is_new.next().unwrap_or_default();
                let mine = owned.contains(rows.batch.site.as_str());
                outputs.push(crate::store::apply_stored(rows.batch, flags, mine, timeline, &mut changes));
            }
            WriteOp::DeadLetter(d) => {
                sql::insert_dead_letter(&tx, &d).await?;
                dead_letters = true;
                outputs.push(Committed::DeadLetter { kind: d.kind });
            }
            WriteOp::Status { site, gateway, status, received_ms } => {
                let offline = sql::upsert_status(&tx, &site, &gateway, &status, received_ms).await?;
                if offline && owned.contains(site.as_str()) {
                    tracing::info!(%site, %gateway, "gateway offline: its assets are unknown from now");
                    merge(&mut changes, timeline.apply(Input::Offline { site, gateway, ts_ms: received_ms }));
                }
            }
            WriteOp::Overdue { cutoff_ms, now_ms } => {
                for (site, gateway) in sql::mark_overdue(&tx, cutoff_ms, now_ms).await? {
                    if !owned.contains(site.as_str()) {
                        continue;
                    }
                    tracing::warn!(%site, %gateway, "gateway heartbeat overdue: its assets are unknown from now");
                    merge(&mut changes, timeline.apply(Input::Offline { site, gateway, ts_ms: now_ms }));
                }
            }
            WriteOp::Prune { now_ms } => {
                let n = sql::prune_events(&tx, now_ms.saturating_sub(retention.events_ms)).await?;
                tracing::info!(deleted = n, "raw events past retention deleted");
                let n = sql::prune_dead_letters(&tx, now_ms.saturating_sub(retention.dead_letters_ms)).await?;
                tracing::info!(deleted = n, "dead letters past retention deleted");
            }
            WriteOp::Ping(_) => {}
        }
    }
    if dead_letters {
        sql::bound_dead_letters(&tx, retention.dead_letters_max).await?;
    }
    let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
    for c in changes.values() {
        match c {
            Committed::Downtime(d) => upserts.push(d),
            Committed::Retracted(d) => deletes.push(d),
            _ => {}
        }
    }
    sql::write_downtime(&tx, &upserts, &deletes).await?;
    tx.commit().await?;
    outputs.extend(changes.into_values());
    Ok((xid, outputs))
}
