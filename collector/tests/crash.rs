//! The real collector binary is SIGKILLed while agents publish; after a restart the agent role resends
//! whatever was not acked, and the store ends complete and without duplicates. Nothing acked is lost.
#![allow(clippy::unwrap_used)]

mod support;

use shiftlens_common::Batch;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use support::*;
use tokio::process::{Child, Command};

async fn spawn_collector(config: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = broker_addr(&mut child).await;
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_ingest_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, config_text(dir.path(), &pki.leaf("localhost"), "")).unwrap();
    let (mut child, addr) = spawn_collector(&cfg).await;

    let epoch = 77;
    let batches: Vec<Batch> = (0..200).map(|i| batch("gw-1", epoch, i * 100 + 1, 100)).collect();
    let all: BTreeSet<u64> = (1..=20_000).collect();
    let mut acked = BTreeSet::new();
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    for b in &batches {
        publish_batch(&a, "gw-1", b).await;
    }
    // Kill it as soon as the first acks arrive: some batches are stored, others in flight.
    assert!(wait_acked(&mut a, epoch, &(1..=100).collect(), &mut acked, WAIT).await);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let acked_before_kill = acked.clone();
    assert!(acked_before_kill.len() < all.len(), "the kill came too late to prove anything");
    drop(a);

    // Restart; the agent resends everything not acked (again after each ack timeout of 10 s, as the real
    // agent does) until all is confirmed.
    let (_child, addr) = spawn_collector(&cfg).await;
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3 * WAIT);
    while acked != all && tokio::time::Instant::now() < deadline {
        for b in &batches {
            if b.events.iter().any(|e| !acked.contains(&e.seq)) {
                publish_batch(&a, "gw-1", b).await;
            }
        }
        wait_acked(&mut a, epoch, &all, &mut acked, 10).await;
    }
    assert!(acked == all, "{} of {} events acked after the restart", acked.len(), all.len());
    let db = dir.path().join("collector.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 20_000);
    assert_eq!(count(&db, "SELECT COUNT(DISTINCT seq) FROM events WHERE epoch = 77"), 20_000);
    assert_eq!(count(&db, "SELECT MIN(seq) FROM events"), 1);
    assert_eq!(count(&db, "SELECT MAX(seq) FROM events"), 20_000);
}
