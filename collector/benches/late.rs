//! Late-event cost (issue 11, item 2): one gateway sends every event with a timestamp before all earlier
//! ones (descending), the worst case for a timeline kept in time order. Prints, for N events of one asset
//! (states alternating running/down, every 16th unknown, every 8th an alarm):
//! 1. the timeline alone, descending and in order (µs per event);
//! 2. the store writer with the timeline, the descending events in batches of 1,000 (ms per batch);
//! 3. the restart replay of that store (`Writer::spawn`: load every stored event, rebuild the timeline).
//!
//! `cargo bench -p shiftlens-collector --bench late` (env: BENCH_LATE, default 8000 and 100000).
#![allow(clippy::unwrap_used)]

use shiftlens_collector::store::{events::Rows, Committed, StoreConfig, WriteOp, Writer};
use shiftlens_collector::timeline::{Input, Timeline};
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId};
use std::time::Instant;

fn site() -> SiteId {
    SiteId::parse("plant-a").unwrap()
}

fn gateway() -> GatewayId {
    GatewayId::parse("gw-hostile").unwrap()
}

/// Seqs ascend (as the outbox assigns them) while timestamps descend.
fn descending(n: u64) -> Vec<Event> {
    let asset = AssetId::parse("press-1").unwrap();
    (1..=n)
        .map(|seq| {
            let ts_ms = 1_700_000_000_000 + (n - seq) as i64 * 1000;
            let body = if seq % 8 == 0 {
                EventBody::Alarm(Alarm {
                    id: format!("A{}", seq % 5),
                    active: true,
                    severity: 500,
                    text: "Motor overload".into(),
                    class: None,
                    ..Default::default()
                })
            } else if seq % 16 == 1 {
                EventBody::State { state: MachineState::Unknown, reason: None }
            } else {
                let state = if seq % 2 == 0 { MachineState::Down } else { MachineState::Running };
                EventBody::State { state, reason: Some("R1".into()) }
            };
            Event { seq, ts_ms, asset: asset.clone(), body }
        })
        .collect()
}

fn timeline(name: &str, events: Vec<Event>) {
    let n = events.len();
    let mut t = Timeline::new(60_000);
    let start = Instant::now();
    let mut changes = 0;
    for event in events {
        let c = t.apply(Input::Event { site: site(), gateway: gateway(), epoch: 1, event });
        changes += c.upserted.len() + c.removed.len();
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "timeline {name:>10}: {n} events in {s:.3} s = {:.2} µs/event ({} downtime events, {changes} changes)",
        s * 1e6 / n as f64,
        t.downtimes().len()
    );
}

async fn store_and_replay(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { path: dir.path().join("c.db"), ..StoreConfig::default() };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4096);
    let writer = Writer::spawn(&config, out_tx).unwrap();
    let batches: Vec<Batch> =
        descending(n).chunks(1000).map(|c| Batch::new(site(), gateway(), 1, c.to_vec())).collect();
    let nb = batches.len();
    let mut worst = 0f64;
    let start = Instant::now();
    for batch in batches {
        // One batch at a time, so each figure is one batch's commit.
        let t = Instant::now();
        writer.tx.send(WriteOp::Batch { rows: Rows::new(batch).unwrap(), received_ms: 0 }).await.unwrap();
        loop {
            if let Some(Committed::Stored { .. }) = out_rx.recv().await {
                break;
            }
        }
        worst = worst.max(t.elapsed().as_secs_f64());
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "store writer: {n} descending events in {nb} batches of 1000 in {s:.2} s = {:.1} ms/batch (worst {:.1} ms)",
        s * 1000.0 / nb as f64,
        worst * 1000.0
    );
    drop(writer.tx);
    tokio::task::spawn_blocking(move || writer.thread.join().unwrap()).await.unwrap();
    while out_rx.recv().await.is_some() {}
    let (out_tx, _out_rx) = tokio::sync::mpsc::channel(4096);
    let start = Instant::now();
    let writer = Writer::spawn(&config, out_tx).unwrap();
    println!("restart replay of {n} descending events: {:.3} s", start.elapsed().as_secs_f64());
    drop(writer.tx);
    tokio::task::spawn_blocking(move || writer.thread.join().unwrap()).await.unwrap();
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = match std::env::var("BENCH_LATE") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![8000, 100_000],
    };
    for n in sizes {
        timeline("descending", descending(n));
        let mut ascending = descending(n);
        ascending.reverse();
        timeline("in order", ascending);
        store_and_replay(n).await;
    }
}
