//! Agent event rate with OPC UA Alarms & Conditions: alarm events per second through the agent's OPC UA source
//! (event subscription, condition tracker) and detector, from the simulated plant's A&C server over loopback.
//!
//! The plant holds `N` conditions on 10 sources, all mapped to assets by one pattern. Each round raises (or
//! clears) every condition at once; the server sends one event per condition, and the round ends when the
//! detector has made an observation for each. Rounds run back to back for the measuring time, so the figure
//! includes the server's publishing (interval 50 ms) and the round trip, as a burst of alarms at a SCADA would.
//! Server and agent share this process and its two cores.
//!
//! `cargo bench -p shiftlens-agent --bench opcua_alarms` (SHIFTLENS_BENCH_SECS sets the measuring time,
//! default 10).
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use shiftlens_agent::config::opcua::{validate, RawOpcUaEndpoint};
use shiftlens_agent::detect::Detector;
use shiftlens_agent::health::Health;
use shiftlens_agent::source::{detect_task, opcua, Feed};
use shiftlens_common::config::{ConfigFile, Spanned};
use shiftlens_sim::opcua::{serve, OpcUaOptions};
use shiftlens_sim::plant::{Condition, ConditionKind, Plant};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Section {
    opcua: Vec<Spanned<RawOpcUaEndpoint>>,
}

fn main() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let secs: u64 = std::env::var("SHIFTLENS_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for n in [100, 500] {
        let line = rt.block_on(run(n, secs));
        println!("{n:>4} conditions per burst: {line}");
    }
}

async fn run(n: usize, secs: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = OpcUaOptions { poll_interval: Duration::from_millis(10), ..Default::default() };
    let server = serve(plant.clone(), listener, &dir.path().join("server"), &options).await.unwrap();
    let text = format!(
        r#"
[[opcua]]
id = "scada"
endpoint = "{url}"
pki_dir = "{pki}"
security_policy = "none"
security_mode = "none"
publishing_interval = "50ms"
[[opcua.alarms]]
[[opcua.alarms.assets]]
pattern = "src*"
asset = "line1"
"#,
        url = server.endpoint_url(),
        pki = dir.path().join("agent").display()
    );
    let file = ConfigFile::from_text("agent.toml", text);
    let section: Section = file.parse().unwrap();
    let mut errors = Vec::new();
    validate(&section.opcua, &file, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let ep = section.opcua.into_iter().next().unwrap().into_inner().validated();

    let (stx, srx) = tokio::sync::mpsc::channel(4096);
    let (otx, mut orx) = tokio::sync::mpsc::channel(100_000);
    let source = opcua::spawn(&ep, stx);
    let detector = tokio::spawn(detect_task(Feed::new(Detector::new(Vec::new()), otx, Health::default()), srx));
    // Connected and subscribed: the first observation is the source's link.
    orx.recv().await.unwrap();

    // One warm-up round (first sight of every condition).
    round(&plant, &mut orx, n, true).await;
    let (t0, mut events, mut active) = (Instant::now(), 0usize, false);
    while t0.elapsed() < Duration::from_secs(secs) {
        round(&plant, &mut orx, n, active).await;
        events += n;
        active = !active;
    }
    let rate = events as f64 / t0.elapsed().as_secs_f64();
    source.abort();
    detector.abort();
    server.stop().await;
    format!("{rate:>8.0} alarm events/s through the agent ({events} events in {:.1} s)", t0.elapsed().as_secs_f64())
}

/// Raises (or clears and acknowledges) all `n` conditions at once and waits for the `n` alarm observations.
async fn round(
    plant: &Plant,
    orx: &mut tokio::sync::mpsc::Receiver<shiftlens_agent::Observation>,
    n: usize,
    active: bool,
) {
    for i in 0..n {
        let mut c = Condition::raised(&format!("src{}", i % 10), ConditionKind::OffNormal, 700, "bench");
        c.active = active;
        c.acked = !active;
        plant.set_condition(&format!("C{i:04}"), c);
    }
    let mut got = 0;
    while got < n {
        let Ok(o) = tokio::time::timeout(Duration::from_secs(30), orx.recv()).await else {
            panic!("only {got} of {n} alarm observations within 30 s");
        };
        let o = o.unwrap();
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("{o:?}");
        }
        if matches!(o.body, shiftlens_common::EventBody::Alarm(_)) {
            got += 1;
        }
    }
}
