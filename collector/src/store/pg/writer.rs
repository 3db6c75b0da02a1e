//! The PostgreSQL writer: a thread named `store-writer` (like SQLite's) running its own single-threaded
//! runtime, so the rest of the collector sees the same [`Writer`]: [`WriteOp`]s in, [`Committed`] out, and
//! nothing reported before its transaction has committed.
//!
//! Each transaction inserts every event of its batches in one statement (`ON CONFLICT DO NOTHING` on
//! `(site, gateway, epoch, seq)`, `RETURNING` the rows really inserted, which are the new ones), applies
//! the new events to the timeline, writes the downtime rows the timeline changed, and commits. When a
//! transaction fails (the database restarted, the network broke), nothing of it is acknowledged (agents
//! resend), the writer reconnects with a growing pause, rebuilds the timeline from what is really stored,
//! and goes on with the queued work: acks stop while the database is away and resume after.

use super::{cause, sql, PgError, Target};
use crate::store::events::Rows;
use crate::store::{
    merge, Committed, Pending, Retention, StoreConfig, StoreError, WriteOp, Writer, MAX_EVENTS_PER_TX, MAX_OPS_PER_TX,
    QUEUED_OPS,
};
use crate::timeline::{Input, Timeline};
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
                let state = match State::open(target, window).await {
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
        Ok(Ok(())) => Ok(Writer { tx, thread }),
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
}

impl State {
    async fn open(target: Target, window: i64) -> Result<Self, PgError> {
        let mut client = super::open(&target).await?;
        let timeline = rebuild(&mut client, window).await.map_err(|e| target.sql_error(&e))?;
        Ok(Self { target, client, timeline })
    }

    async fn run(mut self, mut rx: mpsc::Receiver<WriteOp>, out: mpsc::Sender<Committed>, retention: Retention) {
        while let Some(first) = rx.recv().await {
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
            match apply_ops(&mut self.client, &mut self.timeline, ops, retention).await {
                Ok(outputs) => {
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

    /// Reconnects if the connection is gone and rebuilds the timeline from what is stored (it may hold
    /// events of the transaction that was rolled back), retrying with a growing pause until it works.
    async fn recover(&mut self) {
        let mut pause = Duration::from_millis(200);
        loop {
            if self.client.is_closed() {
                match self.target.connect().await {
                    Ok(c) => {
                        tracing::info!(db = %self.target.at(), "reconnected to PostgreSQL");
                        self.client = c;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "PostgreSQL still unreachable; ingest waits");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            match rebuild(&mut self.client, self.timeline.first_out_window_ms()).await {
                Ok(t) => {
                    self.timeline = t;
                    return;
                }
                Err(e) => {
                    tracing::warn!(db = %self.target.at(), error = %cause(&e), "cannot rebuild the timeline; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The timeline from every stored event, its downtime rows written back (as SQLite's writer does at start).
async fn rebuild(client: &mut Client, window: i64) -> Result<Timeline, tokio_postgres::Error> {
    let inputs = sql::load_inputs(client, None).await?;
    let count = inputs.len();
    let mut timeline = Timeline::new(window);
    for i in inputs {
        timeline.apply(i);
    }
    let downtimes = timeline.downtimes();
    let tx = client.transaction().await?;
    sql::write_downtime(&tx, &downtimes.iter().collect::<Vec<_>>(), &[]).await?;
    tx.commit().await?;
    tracing::info!(inputs = count, "PostgreSQL store opened, timeline rebuilt");
    Ok(timeline)
}

async fn apply_ops(
    client: &mut Client,
    timeline: &mut Timeline,
    ops: Vec<WriteOp>,
    retention: Retention,
) -> Result<Vec<Committed>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let batches: Vec<(&Rows, i64)> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Batch { rows, received_ms } => Some((rows, *received_ms)),
            _ => None,
        })
        .collect();
    let mut is_new = sql::insert_batches(&tx, &batches).await?.into_iter();
    let mut outputs = Vec::new();
    let mut changes = Pending::new();
    let mut dead_letters = false;
    for op in ops {
        match op {
            WriteOp::Batch { rows, .. } => {
                let flags = is_new.next().unwrap_or_default();
                let batch = rows.batch;
                let seqs = batch.events.iter().map(|e| e.seq).collect();
                let mut new = 0;
                for (event, is_new) in batch.events.into_iter().zip(flags) {
                    if is_new {
                        new += 1;
                        let input = Input::Event {
                            site: batch.site.clone(),
                            gateway: batch.gateway.clone(),
                            epoch: batch.epoch,
                            event,
                        };
                        merge(&mut changes, timeline.apply(input));
                    }
                }
                outputs.push(Committed::Stored {
                    site: batch.site,
                    gateway: batch.gateway,
                    epoch: batch.epoch,
                    seqs,
                    new,
                });
            }
            WriteOp::DeadLetter(d) => {
                sql::insert_dead_letter(&tx, &d).await?;
                dead_letters = true;
                outputs.push(Committed::DeadLetter { kind: d.kind });
            }
            WriteOp::Status { site, gateway, status, received_ms } => {
                if sql::upsert_status(&tx, &site, &gateway, &status, received_ms).await? {
                    tracing::info!(%site, %gateway, "gateway offline: its assets are unknown from now");
                    merge(&mut changes, timeline.apply(Input::Offline { site, gateway, ts_ms: received_ms }));
                }
            }
            WriteOp::Overdue { cutoff_ms, now_ms } => {
                for (site, gateway) in sql::mark_overdue(&tx, cutoff_ms, now_ms).await? {
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
    Ok(outputs)
}
