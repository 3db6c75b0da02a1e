//! Store-and-forward figures, printed: outbox commit rate through the writer thread (synchronous NORMAL
//! and FULL), drain rate of a backlog to a loopback broker (rumqttd, with a collector that acks), and the
//! latency from an observation to its delivery at a subscriber (p50, p99), through rumqttd and through
//! Mosquitto with `set_tcp_nodelay true` (rumqttd's sockets keep Nagle on, which costs ~40 ms per message
//! when the subscriber also publishes acks).
//!
//! Run: `cargo bench -p shiftlens-agent --bench outbox`
#![allow(clippy::unwrap_used)]

#[path = "../tests/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{agent_config, alarm, start_rumqttd, Collector};
use shiftlens_agent::outbox::{writer, Outbox, OutboxConfig, Synchronous};
use shiftlens_agent::topology::Agent;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const COMMIT_EVENTS: u64 = 300_000;
const DRAIN_EVENTS: u64 = 200_000;
const LATENCY_SAMPLES: usize = 2_000;

async fn commit_rate(sync: Synchronous) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = OutboxConfig::at(dir.path().join("o.db"));
    config.synchronous = sync;
    let outbox = Arc::new(Mutex::new(Outbox::open(&config).unwrap()));
    let (tx, rx) = mpsc::channel(10_000);
    let (ctx, mut committed) = watch::channel(0);
    let thread = writer::spawn(outbox, rx, 16 << 20, ctx).unwrap();
    let observations: Vec<_> = (0..COMMIT_EVENTS).map(|n| alarm(helpers::ASSETS[(n % 4) as usize], n)).collect();
    let start = Instant::now();
    for o in observations {
        tx.send(o).await.unwrap();
    }
    while *committed.borrow_and_update() < COMMIT_EVENTS {
        committed.changed().await.unwrap();
    }
    let rate = COMMIT_EVENTS as f64 / start.elapsed().as_secs_f64();
    drop(tx);
    thread.join().unwrap();
    rate
}

async fn drain_rate() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let port = start_rumqttd();
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "ack_timeout = \"30s\"", "");
    {
        let mut o = Outbox::open(&config.outbox).unwrap();
        let batch: Vec<_> = (0..10_000).map(|n| alarm(helpers::ASSETS[(n % 4) as usize], n)).collect();
        for _ in 0..DRAIN_EVENTS / 10_000 {
            o.append(&batch, 0).unwrap();
        }
    }
    let collector = Collector::start(port);
    helpers::wait_for("collector subscribed", Duration::from_secs(10), || {
        collector.received.lock().unwrap().subscribed
    })
    .await;
    let start = Instant::now();
    let agent = Agent::start(&config).await.unwrap();
    helpers::wait_for("drained", Duration::from_secs(300), || agent.outbox.lock().unwrap().stats().unwrap().depth == 0)
        .await;
    let rate = DRAIN_EVENTS as f64 / start.elapsed().as_secs_f64();
    agent.shutdown().await.unwrap();
    collector.stop();
    rate
}

/// Observation handed to the agent → batch decoded at a subscriber, one observation every 2 ms.
async fn latency(mosquitto: bool) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let broker = mosquitto.then(|| helpers::Mosquitto::start(dir.path(), ""));
    let port = broker.as_ref().map_or_else(start_rumqttd, |m| m.port);
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "", "");
    let collector = Collector::start(port);
    helpers::wait_for("collector subscribed", Duration::from_secs(10), || {
        collector.received.lock().unwrap().subscribed
    })
    .await;
    let agent = Agent::start(&config).await.unwrap();
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    let mut seen = 0usize;
    for n in 0..LATENCY_SAMPLES as u64 {
        sent.lock().unwrap().push(Instant::now());
        agent.observations.send(alarm("press-1", n)).await.unwrap();
        // Poll the collector for arrivals every 100 µs until this one arrived.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let count = collector.count();
            if count > seen {
                let now = Instant::now();
                let s = sent.lock().unwrap();
                for i in seen..count.min(s.len()) {
                    latencies.push(now - s[i]);
                }
                seen = count;
            }
            if seen > n as usize || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    agent.shutdown().await.unwrap();
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    (q(0.5), q(0.99), *latencies.last().unwrap())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    shiftlens_agent::uplink::mqtt::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let normal = commit_rate(Synchronous::Normal).await;
        println!("outbox commit rate, synchronous=NORMAL: {normal:>9.0} events/s ({COMMIT_EVENTS} alarms through the writer thread)");
        let full = commit_rate(Synchronous::Full).await;
        println!("outbox commit rate, synchronous=FULL:   {full:>9.0} events/s");
        let drain = drain_rate().await;
        println!("drain rate to loopback rumqttd:          {drain:>9.0} events/s ({DRAIN_EVENTS} backlog, acked by a collector)");
        for (name, mosquitto) in [("rumqttd", false), ("mosquitto", true)] {
            let (p50, p99, max) = latency(mosquitto).await;
            println!(
                "observation -> subscriber via {name:9}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({LATENCY_SAMPLES} samples)",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
    });
}
