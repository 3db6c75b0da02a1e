//! Escalation latency (a bench binary that prints its figure): a gateway publishes a `down` state for an
//! asset whose required skill nobody on shift has, through the embedded broker's mTLS gate; the collector
//! stores it, the escalation runner (woken by the committed downtime change) plans the first rung and posts
//! the signed webhook to a local receiver. The figure is publish → webhook received, p50/p99/max, one stop
//! at a time (each closed again before the next), everything in one process on loopback.
//!
//! `cargo bench -p shiftlens-collector --bench escalation` (env: BENCH_STOPS, default 300).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use shiftlens_collector::escalate::{self, config::Rung, Target};
use shiftlens_collector::people::import::{self, Kind};
use shiftlens_collector::{feed, topology};
use shiftlens_common::{AssetId, Batch, Event, EventBody, MachineState};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;

fn import_people(db: &std::path::Path, now: i64) {
    let t = |ms: i64| feed::rfc3339(ms);
    let (from, to) = (t(now - 3_600_000), t(now + 10 * 3_600_000));
    let files = [
        (Kind::Skills, "id,name,domain,certificate\nplc,PLC,automation,no\n".to_string()),
        (Kind::People, "id,name,crew,discipline\nop1,Op,A,operator\ntech,Tech,A,electrical\n".into()),
        (Kind::PersonSkills, "person,skill,level,assessed\ntech,plc,3,2024-01-01\n".into()),
        (Kind::Roster, format!("person,start,end,kind\nop1,{from},{to},work\n")),
        (Kind::Assets, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-1,500,plc:2\n".into()),
        (
            Kind::OnCall,
            format!("person,channel,address,site,role,start,end\ntech,webhook,pager-1,plant-a,,{from},{to}\n"),
        ),
    ];
    let mut conn = shiftlens_collector::store::people::open(db).unwrap();
    for (kind, text) in files {
        let known = shiftlens_collector::store::people::load(&conn, Default::default()).unwrap();
        let records = import::parse(kind, "b.csv", &text, &known).unwrap();
        shiftlens_collector::store::people::import(&mut conn, kind, "b.csv", &records, now).unwrap();
    }
}

fn state(seq: u64, state: MachineState) -> Batch {
    let e = Event {
        seq,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        asset: AssetId::parse("press-1").unwrap(),
        body: EventBody::State { state, reason: None },
    };
    Batch::new(site(), gateway("gw-esc"), 1, vec![e])
}

async fn run(stops: u64) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let config = config(dir.path(), &pki.leaf("localhost"), "");
    import_people(&config.store.path, chrono::Utc::now().timestamp_millis());
    // The webhook receiver: notes when each message arrives.
    let (tx, mut got) = mpsc::unbounded_channel::<Instant>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "bench-secret").unwrap();

    let collector = topology::start(&config, feed::no_lines()).await.unwrap();
    let mut settings = escalate::Settings::new("http://127.0.0.1:9");
    settings.rungs = vec![Rung { after_ms: 0, to: Target::Qualified }];
    settings.per_person = u32::MAX;
    settings.per_site = u32::MAX;
    settings.webhook = Some((format!("http://{hook}/hook"), secret));
    let task = escalate::start(
        settings,
        &config.store,
        config.people_settings.clone(),
        Some(collector.publisher()),
        collector.downtime_changes(),
        collector.owned_sites(),
    )
    .await
    .unwrap();
    let mut a = agent(collector.broker.unwrap(), &pki, "gw-esc");
    wait_for(&mut a, 10, |s| matches!(s, Seen::Connected).then_some(())).await.unwrap();
    let topic = events_topic("gw-esc");
    let mut lat = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    for i in 0..stops {
        let down = shiftlens_common::wire::encode_batch(&state(2 * i + 1, MachineState::Down));
        let sent = Instant::now();
        publish(&a, &topic, down).await;
        let at =
            tokio::time::timeout(Duration::from_secs(30), got.recv()).await.expect("no webhook within 30 s").unwrap();
        lat.push(at - sent);
        // Close the stop (a later timestamp) before the next one opens.
        tokio::time::sleep(Duration::from_millis(2)).await;
        publish_batch(&a, "gw-esc", &state(2 * i + 2, MachineState::Running)).await;
        assert!(wait_acked(&mut a, 1, &[2 * i + 2].into(), &mut acked, 30).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "escalation: stop published -> first webhook received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({stops} stops, embedded broker with the mTLS gate, loopback)",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    task.abort();
    collector.shutdown(Duration::from_secs(30)).await.unwrap();
}

fn main() {
    // `cargo test --benches` runs without --bench: a few stops only.
    let quick = !std::env::args().any(|a| a == "--bench");
    let stops: u64 =
        std::env::var("BENCH_STOPS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 5 } else { 300 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(stops));
}
