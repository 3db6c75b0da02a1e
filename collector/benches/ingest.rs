//! Collector ingest benchmark (a bench binary that prints its figures):
//! 1. the timeline alone: events/s applied in order and with 10 % late events;
//! 2. end to end: gateways publish batches over mTLS to the embedded broker on loopback, the collector
//!    decodes, stores (SQLite WAL, one writer), maintains the timeline and acks; the figure is events/s
//!    from first publish to last ack.
//!
//! `cargo bench -p shiftlens-collector --bench ingest` (env: BENCH_EVENTS, default 1,000,000).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use shiftlens_collector::timeline::{Input, Timeline};
use shiftlens_collector::{feed, ingest};
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId};
use std::collections::BTreeSet;
use std::time::Instant;
use support::*;

fn plant_events(gw: &str, epoch: u64, n: u64) -> Vec<Event> {
    let _ = (gw, epoch);
    (1..=n)
        .map(|seq| {
            // 100 assets; each asset's state changes every 10th of its events, alarms in between.
            let asset = AssetId::parse(format!("asset-{}", seq % 100)).unwrap();
            let ts_ms = 1_700_000_000_000 + seq as i64 * 10;
            let body = match (seq / 100) % 10 {
                0 => EventBody::Alarm(Alarm {
                    id: format!("A{}", seq % 7),
                    active: true,
                    severity: 500,
                    text: "Motor overload".into(),
                    class: Some("drive".into()),
                }),
                k => EventBody::State { state: MachineState::ALL[(k % 4) as usize], reason: Some("R12".into()) },
            };
            Event { seq, ts_ms, asset, body }
        })
        .collect()
}

fn bench_timeline(n: u64) {
    let site = SiteId::parse("plant-a").unwrap();
    let gw = GatewayId::parse("gw-0").unwrap();
    let events = plant_events("gw-0", 1, n);
    let inputs: Vec<Input> = events
        .into_iter()
        .map(|event| Input::Event { site: site.clone(), gateway: gw.clone(), epoch: 1, event })
        .collect();
    let mut late = inputs.clone();
    // Every tenth event arrives 50 positions late.
    for i in (0..late.len().saturating_sub(50)).step_by(10) {
        late.swap(i, i + 50);
    }
    for (name, set) in [("in order", inputs), ("10% late", late)] {
        let mut t = Timeline::new(60_000);
        let start = Instant::now();
        let mut changes = 0usize;
        for i in set {
            changes += t.apply(i).upserted.len();
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "timeline {name:>9}: {n} events in {s:.3} s = {:.0} events/s ({} downtime events, {changes} changes)",
            n as f64 / s,
            t.downtimes().len()
        );
    }
}

async fn bench_store(n: u64) {
    use shiftlens_collector::store::{Committed, StoreConfig, WriteOp, Writer};
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { path: dir.path().join("c.db"), ..StoreConfig::default() };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4096);
    let writer = Writer::spawn(&config, out_tx).unwrap();
    let events = plant_events("gw-0", 1, n);
    let batches: Vec<Batch> = events.chunks(1000).map(|c| Batch::new(site(), gateway("gw-0"), 1, c.to_vec())).collect();
    let nb = batches.len();
    let start = Instant::now();
    let tx = writer.tx.clone();
    tokio::spawn(async move {
        for batch in batches {
            tx.send(WriteOp::Batch { batch, received_ms: 0 }).await.unwrap();
        }
    });
    let mut stored = 0;
    while stored < nb {
        if let Some(Committed::Stored { .. }) = out_rx.recv().await {
            stored += 1;
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!("store writer (with timeline): {n} events in batches of 1000 in {s:.2} s = {:.0} events/s", n as f64 / s);
}

async fn bench_ingest(n: u64) {
    let gateways = 4u64;
    let per_batch = 1000u64;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = config(dir.path(), &pki.leaf("localhost"), "");
    let addr = ingest::start(&cfg, feed::no_lines()).await.unwrap().broker.unwrap();
    let per_gw = n / gateways;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for g in 0..gateways {
        let gw = format!("gw-{g}");
        let mut a = agent(addr, &pki, &gw);
        wait_for(&mut a, 10, |s| matches!(s, Seen::Connected).then_some(())).await.unwrap();
        let events = plant_events(&gw, g + 1, per_gw);
        let batches: Vec<Batch> =
            events.chunks(per_batch as usize).map(|c| Batch::new(site(), gateway(&gw), g + 1, c.to_vec())).collect();
        tasks.push(tokio::spawn(async move {
            // Like the agent: at most 8 batches in flight, the next one goes when an ack frees a slot;
            // after 5 s without progress the unacked in-flight batches are resent.
            let mut acked = BTreeSet::new();
            let mut next = 0;
            let done = |b: &Batch, acked: &BTreeSet<u64>| b.events.iter().all(|e| acked.contains(&e.seq));
            while acked.len() < per_gw as usize {
                let first_open = batches.iter().position(|b| !done(b, &acked)).unwrap_or(batches.len());
                while next < batches.len() && next < first_open + 8 {
                    publish_batch(&a, &gw, &batches[next]).await;
                    next += 1;
                }
                let before = acked.len();
                let progressed = wait_for(&mut a, 5, |s| {
                    if let Seen::Ack(ack) = s {
                        for &(lo, hi) in &ack.ranges {
                            acked.extend(lo..=hi);
                        }
                    }
                    (acked.len() > before).then_some(())
                })
                .await;
                if progressed.is_none() {
                    println!("  {gw}: resending in-flight batches");
                    for b in batches.iter().take(next).filter(|b| !done(b, &acked)) {
                        publish_batch(&a, &gw, b).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = start.elapsed().as_secs_f64();
    let total = per_gw * gateways;
    let stored = count(&dir.path().join("collector.db"), "SELECT COUNT(*) FROM events");
    assert_eq!(stored as u64, total);
    println!(
        "ingest end to end: {total} events ({gateways} gateways, batches of {per_batch}, mTLS) stored and acked in {s:.2} s = {:.0} events/s",
        total as f64 / s
    );
}

fn main() {
    // `cargo test --benches` passes --bench-less args; run a tiny size then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick {
        10_000
    } else {
        1_000_000
    });
    bench_timeline(n);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(bench_store(n));
    rt.block_on(bench_ingest(n));
}
