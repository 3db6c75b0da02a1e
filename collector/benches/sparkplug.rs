//! Collector Sparkplug ingest rate: edge nodes publish DDATA through the embedded broker's gate (plaintext on
//! loopback, so no TLS work is counted) and the host application decodes, maps (ShiftLens's own `state`
//! metric, by alias), stores and maintains the timeline. The figure is state events per second from the first
//! DDATA until the last event is in the store. The edge nodes run in the same process and on the same cores.
//!
//! `cargo bench -p shiftlens-collector --bench sparkplug` (env: BENCH_EVENTS, default 200,000; BENCH_PER_MESSAGE,
//! state changes per DDATA, default 10).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use shiftlens_collector::{feed, topology, Config};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::sparkplug::proto::{Metric, Payload};
use shiftlens_common::sparkplug::{self as sp, MessageType, SpTopic};
use shiftlens_common::MachineState;
use std::time::{Duration, Instant};
use support::count;

const NODES: usize = 4;
const ASSETS: usize = 100;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn edge_node(port: u16, node: String, messages: u64, per_message: u64) {
    let mut o = MqttOptions::new(format!("plant-a.{node}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 1000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let ts0: i64 = 1_700_000_000_000;
    let mut seq = 0u64;
    let next = |seq: &mut u64| {
        let s = *seq;
        *seq = (*seq + 1) % 256;
        Some(s)
    };
    let topic = |kind, device: Option<&str>| match device {
        Some(d) => SpTopic::device("plant-a", kind, &node, d).to_string(),
        None => SpTopic::node("plant-a", kind, &node).to_string(),
    };
    let nbirth = Payload {
        timestamp: Some(ts0 as u64),
        metrics: vec![Metric::uint64(Some("bdSeq"), None, ts0, 0)],
        seq: next(&mut seq),
        ..Default::default()
    };
    client.publish(topic(MessageType::NBirth, None), QoS::AtLeastOnce, false, sp::encode(&nbirth)).await.unwrap();
    for a in 0..ASSETS {
        let db = Payload {
            timestamp: Some(ts0 as u64),
            metrics: vec![Metric::string(Some("state"), Some(a as u64 + 1), ts0, Some("running"))],
            seq: next(&mut seq),
            ..Default::default()
        };
        let device = format!("asset-{a}");
        client
            .publish(topic(MessageType::DBirth, Some(&device)), QoS::AtLeastOnce, false, sp::encode(&db))
            .await
            .unwrap();
    }
    for m in 0..messages {
        let a = (m as usize) % ASSETS;
        let metrics = (0..per_message)
            .map(|k| {
                let i = m * per_message + k;
                let s = MachineState::ALL[(i % 4) as usize].as_str();
                Metric::string(None, Some(a as u64 + 1), ts0 + 1000 + i as i64, Some(s))
            })
            .collect();
        let p = Payload { timestamp: Some(ts0 as u64), metrics, seq: next(&mut seq), ..Default::default() };
        let device = format!("asset-{a}");
        client
            .publish(topic(MessageType::DData, Some(&device)), QoS::AtLeastOnce, false, sp::encode(&p))
            .await
            .unwrap();
    }
    // Let the event loop send what is queued; the store count says when everything arrived.
    std::mem::forget(poller);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env("BENCH_EVENTS", 200_000);
    let per_message = env("BENCH_PER_MESSAGE", 10).max(1);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n\
         [sparkplug]\nhost_id = \"shiftlens\"\ngroups = [\"plant-a\"]\n",
        db.display().to_string()
    );
    let config = Config::from_file(&ConfigFile::from_text(dir.path().join("c.toml"), text)).unwrap();
    let collector = topology::start(&config, feed::no_lines()).await.unwrap();
    let port = collector.broker.unwrap().port();
    let messages = total / per_message / NODES as u64;
    let births = (NODES * ASSETS) as i64;
    let expected = births + (messages * per_message * NODES as u64) as i64;
    let started = Instant::now();
    for n in 0..NODES {
        tokio::spawn(edge_node(port, format!("node-{n}"), messages, per_message));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut stored = 0;
    while stored < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = count(&db, "SELECT COUNT(*) FROM events");
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(stored, expected, "not every event was stored within the deadline");
    println!(
        "Sparkplug ingest: {NODES} edge nodes x {ASSETS} devices, {} DDATA of {per_message} state change(s) each: \
         {expected} events stored in {secs:.2} s = {:.0} events/s ({:.0} DDATA/s)",
        messages * NODES as u64,
        expected as f64 / secs,
        (messages * NODES as u64) as f64 / secs
    );
    collector.shutdown(Duration::from_secs(30)).await.unwrap();
}
