//! Collector ingest benchmark (a bench binary that prints its figures):
//! 1. the timeline alone: events/s applied in order and with 10 % late events;
//! 2. the store writer alone: prepared batches straight into the writer thread (SQLite WAL + timeline); then
//!    the same into PostgreSQL (`pg`: a throw-away cluster started by the bench, fsync on);
//! 3. end to end: 4 gateways publish batches (encoded beforehand) to the embedded broker on loopback, with
//!    at most 8 batches in flight each like the agent; the collector decodes, stores, maintains the
//!    timeline and acks; the figure is events/s from first publish to last ack. Once through the mTLS gate
//!    (as in production), once through the gate in plaintext, so no TLS work is counted. The gateways run
//!    in the same process and on the same cores as the collector in both.
//!
//! 4. latency: one gateway through the mTLS gate publishes a batch of one event every 2 ms (as an agent
//!    does for a single PLC change); for each, the time from publish until the collector has committed it
//!    (its confirmer saw the commit) and until the gateway has the ack; p50, p99 and max. A PLC change adds
//!    its poll interval and the agent's outbox commit (about 1-2 ms, `--bench outbox` of the agent).
//!
//! Each row also prints CPU time (whole process, and the store writer thread), which varies less than
//! the rate when others share the machine.
//!
//! `cargo bench -p shiftlens-collector --bench ingest` (env: BENCH_EVENTS, default 1,000,000;
//! BENCH_LATENCY, samples, default 2,000; BENCH_ONLY, a comma-separated list of the parts to run:
//! timeline, store, pg, mtls, plain, latency; BENCH_GATEWAYS, gateways of the store rows, default 1).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use shiftlens_collector::timeline::{Input, Timeline};
use shiftlens_collector::{feed, topology};
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId};
use std::collections::BTreeSet;
use std::time::Instant;
use support::*;

/// A gateway's events: its own 100 assets (named after the gateway); each asset's state changes every 10th
/// of its events, alarms in between. Every gateway's clock runs alike, so several gateways' events
/// interleave in time as in a plant.
fn plant_events(gw: &str, n: u64) -> Vec<Event> {
    let assets: Vec<AssetId> = (0..100).map(|a| AssetId::parse(format!("{gw}-asset-{a}")).unwrap()).collect();
    (1..=n)
        .map(|seq| {
            let asset = assets[(seq % 100) as usize].clone();
            let ts_ms = 1_700_000_000_000 + seq as i64 * 10;
            let body = match (seq / 100) % 10 {
                0 => EventBody::Alarm(Alarm {
                    id: format!("A{}", seq % 7),
                    active: true,
                    severity: 500,
                    text: "Motor overload".into(),
                    class: Some("drive".into()),
                    ..Default::default()
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
    let events = plant_events("gw-0", n);
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

/// CPU time, so figures taken on a shared machine can be compared: the whole process (all threads, from
/// `/proc/self/stat`, 10 ms ticks) and the store writer threads (`/proc/self/task/*/schedstat`, ns).
#[derive(Default)]
struct Cpu {
    process_s: f64,
    writers: std::collections::HashMap<String, f64>,
}

impl Cpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
        let mut writers = std::collections::HashMap::new();
        for t in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == "store-writer" {
                let ns = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
                let ns: f64 = ns.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                writers.insert(t.file_name().to_string_lossy().into_owned(), ns / 1e9);
            }
        }
        Self { process_s: ticks / 100.0, writers }
    }

    /// Process CPU seconds and writer CPU seconds since `self`.
    fn since(&self) -> (f64, f64) {
        let now = Self::now();
        let writer = now.writers.iter().map(|(t, s)| s - self.writers.get(t).copied().unwrap_or(0.0)).sum();
        (now.process_s - self.process_s, writer)
    }
}

fn cpu_note(n: u64, cpu: (f64, f64)) -> String {
    let per = |s: f64| s * 1e6 / n as f64;
    format!(
        "CPU: process {:.2} s ({:.1} µs/event), writer thread {:.2} s ({:.1} µs/event)",
        cpu.0,
        per(cpu.0),
        cpu.1,
        per(cpu.1)
    )
}

/// The store writer alone, on SQLite or (with `pg`) on a throw-away PostgreSQL cluster with fsync and
/// synchronous commit on, as in production.
async fn bench_store(n: u64, pg: Option<&support::pg::PgCluster>) {
    use shiftlens_collector::store::{events::Rows, Committed, StoreConfig, WriteOp, Writer};
    let dir = tempfile::tempdir().unwrap();
    let config = match pg {
        None => StoreConfig { path: dir.path().join("c.db"), ..StoreConfig::default() },
        Some(pg) => {
            pg.create_db("bench");
            let text = pg.store_toml("bench");
            let file = shiftlens_common::config::ConfigFile::from_text(dir.path().join("c.toml"), text);
            shiftlens_collector::Config::from_file(&file).unwrap().store
        }
    };
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4096);
    let writer = Writer::spawn(&config, out_tx).unwrap();
    // BENCH_GATEWAYS (default 1): the events split over that many gateways, their batches interleaved as
    // several gateways' batches reach the writer.
    let gateways: u64 = std::env::var("BENCH_GATEWAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let per_gateway: Vec<Vec<Batch>> = (0..gateways)
        .map(|g| {
            let gw = format!("gw-{g}");
            let events = plant_events(&gw, n / gateways);
            events.chunks(1000).map(|c| Batch::new(site(), gateway(&gw), 1, c.to_vec())).collect()
        })
        .collect();
    let rounds = per_gateway.iter().map(Vec::len).max().unwrap_or(0);
    let mut batches: Vec<Batch> = Vec::new();
    for i in 0..rounds {
        batches.extend(per_gateway.iter().filter_map(|b| b.get(i).cloned()));
    }
    let n = batches.iter().map(|b| b.events.len() as u64).sum::<u64>();
    let nb = batches.len();
    let cpu = Cpu::now();
    let server_cpu = pg.map(|pg| pg.server_cpu_s());
    let start = Instant::now();
    let tx = writer.tx.clone();
    tokio::spawn(async move {
        for batch in batches {
            // Like the ingest task: rows are prepared before they reach the writer.
            let rows = Rows::new(batch).unwrap();
            tx.send(WriteOp::Batch { rows, received_ms: 0 }).await.unwrap();
        }
    });
    let mut stored = 0;
    while stored < nb {
        if let Some(Committed::Stored { .. }) = out_rx.recv().await {
            stored += 1;
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "store writer, {backend:>10} (with timeline): {n} events from {gateways} gateway(s) in batches of 1000 in {s:.2} s = {:.0} events/s",
        n as f64 / s
    );
    println!("  {}", cpu_note(n, cpu.since()));
    if let (Some(pg), Some(before)) = (pg, server_cpu) {
        let s = pg.server_cpu_s() - before;
        println!("  PostgreSQL server CPU: {s:.2} s ({:.1} µs/event)", s * 1e6 / n as f64);
    }
    drop(writer.tx);
    tokio::task::spawn_blocking(move || writer.thread.join().unwrap()).await.unwrap();
}

/// How the bench's gateways reach the collector.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    /// Each gateway with its own certificate through the mTLS gate, as in production.
    MutualTls,
    /// Plaintext MQTT to the gate on loopback: no TLS work on either side.
    Plain,
}

async fn bench_ingest(n: u64, link: Link) {
    let gateways = 4u64;
    let per_batch = 1000u64;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = match link {
        Link::MutualTls => config(dir.path(), &pki.leaf("localhost"), ""),
        Link::Plain => {
            let text = format!(
                "[broker]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n[http]\nbind = \"127.0.0.1:0\"\n",
                dir.path().join("collector.db").display()
            );
            let file = shiftlens_common::config::ConfigFile::from_text(dir.path().join("collector.toml"), text);
            shiftlens_collector::Config::from_file(&file).unwrap()
        }
    };
    let collector = topology::start(&cfg, feed::no_lines()).await.unwrap();
    let addr = collector.broker.unwrap();
    let per_gw = n / gateways;
    // Connect and encode first: the figure is about moving batches into the store, not about encoding.
    let mut gws = Vec::new();
    for g in 0..gateways {
        let gw = format!("gw-{g}");
        let mut a = match link {
            Link::MutualTls => agent(addr, &pki, &gw),
            Link::Plain => {
                let mut o = rumqttc::MqttOptions::new(gw.as_str(), "127.0.0.1", addr.port());
                o.set_keep_alive(std::time::Duration::from_secs(5));
                o.set_max_packet_size(8 << 20, 8 << 20);
                let ack = shiftlens_common::Topic::Ack { site: site(), gateway: gateway(&gw) }.to_string();
                connect(o, vec![ack], false)
            }
        };
        wait_for(&mut a, 10, |s| matches!(s, Seen::Connected).then_some(())).await.unwrap();
        let events = plant_events(&gw, per_gw);
        let batches: Vec<(Batch, bytes::Bytes)> = events
            .chunks(per_batch as usize)
            .map(|c| {
                let b = Batch::new(site(), gateway(&gw), g + 1, c.to_vec());
                let payload = shiftlens_common::wire::encode_batch(&b).into();
                (b, payload)
            })
            .collect();
        gws.push((gw, a, batches));
    }
    // Under callgrind everything runs some 50 times slower: BENCH_RESEND_SECS keeps the gateways from resending.
    let resend_secs = std::env::var("BENCH_RESEND_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let cpu = Cpu::now();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (gw, mut a, batches) in gws {
        let topic = events_topic(&gw);
        tasks.push(tokio::spawn(async move {
            let client = a.client.clone();
            let publish =
                |p: &bytes::Bytes| client.publish_bytes(topic.clone(), rumqttc::QoS::AtLeastOnce, false, p.clone());
            // Like the agent: at most 8 batches in flight, the next one goes when an ack frees a slot;
            // after 5 s (BENCH_RESEND_SECS) without progress the unacked in-flight batches are resent.
            let mut acked = BTreeSet::new();
            let (mut next, mut first_open) = (0, 0);
            let done = |b: &Batch, acked: &BTreeSet<u64>| b.events.iter().all(|e| acked.contains(&e.seq));
            while acked.len() < per_gw as usize {
                // Each batch is checked until it is done, never again (scanning every batch after every ack
                // cost the bench's gateways more CPU than the collector's decoding).
                while first_open < batches.len() && done(&batches[first_open].0, &acked) {
                    first_open += 1;
                }
                while next < batches.len() && next < first_open + 8 {
                    publish(&batches[next].1).await.unwrap();
                    next += 1;
                }
                let before = acked.len();
                let progressed = wait_for(&mut a, resend_secs, |s| {
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
                    for (_, p) in batches.iter().take(next).filter(|(b, _)| !done(b, &acked)) {
                        publish(p).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = start.elapsed().as_secs_f64();
    let cpu = cpu.since();
    let total = per_gw * gateways;
    let stored = count(&dir.path().join("collector.db"), "SELECT COUNT(*) FROM events");
    assert_eq!(stored as u64, total);
    let how = match link {
        Link::MutualTls => "mTLS gate",
        Link::Plain => "plaintext loopback gate",
    };
    println!(
        "ingest end to end ({how}): {total} events ({gateways} gateways, batches of {per_batch}) stored and acked in {s:.2} s = {:.0} events/s",
        total as f64 / s
    );
    println!("  {}", cpu_note(total, cpu));
    collector.shutdown(std::time::Duration::from_secs(30)).await.unwrap();
}

/// Publish → committed at the collector → ack at the gateway, one batch of one event at a time.
async fn bench_latency(samples: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = topology::start(&config(dir.path(), &pki.leaf("localhost"), ""), feed::no_lines()).await.unwrap();
    let gw = "gw-lat";
    let mut a = agent(collector.broker.unwrap(), &pki, gw);
    wait_for(&mut a, 10, |s| matches!(s, Seen::Connected).then_some(())).await.unwrap();
    // A watcher thread notes when each event is committed (the confirmer's counter), to within ~50 µs; the
    // tokio timer could not resolve less than a millisecond.
    let committed_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (metrics, committed_at, stop) = (collector.metrics.clone(), committed_at.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = shiftlens_collector::metrics::Metrics::get(&metrics.events_new);
                if n > seen {
                    let now = Instant::now();
                    committed_at.lock().unwrap().extend((seen..n).map(|_| now));
                    seen = n;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let topic = events_topic(gw);
    let payloads: Vec<bytes::Bytes> =
        (1..=samples).map(|seq| shiftlens_common::wire::encode_batch(&batch(gw, 1, seq, 1)).into()).collect();
    let (mut to_commit, mut to_ack) = (Vec::new(), Vec::new());
    for (i, p) in payloads.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let sent = Instant::now();
        a.client.publish_bytes(topic.clone(), rumqttc::QoS::AtLeastOnce, false, p).await.unwrap();
        let acked = wait_for(&mut a, 10, |s| match s {
            Seen::Ack(ack) if ack.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&seq)) => Some(Instant::now()),
            _ => None,
        })
        .await
        .expect("no ack within 10 s");
        to_ack.push(acked - sent);
        // The watcher may note the commit a little after the ack arrived.
        let committed = loop {
            if let Some(&t) = committed_at.lock().unwrap().get(i) {
                break t;
            }
            std::thread::sleep(Duration::from_micros(50));
        };
        to_commit.push(committed.saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    for (what, mut d) in [("committed at the collector", to_commit), ("ack back at the gateway", to_ack)] {
        d.sort_unstable();
        let q = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "latency publish -> {what:27}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({samples} batches of one event, mTLS gate)",
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    collector.shutdown(Duration::from_secs(30)).await.unwrap();
}

fn main() {
    // `cargo test --benches` passes --bench-less args; run a tiny size then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick {
        10_000
    } else {
        1_000_000
    });
    let samples: u64 =
        std::env::var("BENCH_LATENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 50 } else { 2_000 });
    // BENCH_ONLY: a comma-separated list of parts (timeline, store, pg, mtls, plain, latency); all when unset.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if run("timeline") {
        bench_timeline(n);
    }
    if run("store") {
        rt.block_on(bench_store(n, None));
    }
    if run("pg") {
        let pg = support::pg::PgCluster::start(true);
        rt.block_on(bench_store(n, Some(&pg)));
    }
    if run("mtls") {
        rt.block_on(bench_ingest(n, Link::MutualTls));
    }
    if run("plain") {
        rt.block_on(bench_ingest(n, Link::Plain));
    }
    if run("latency") {
        rt.block_on(bench_latency(samples));
    }
}
