//! The real collector binary under a fake systemd: it says READY=1 once broker, ingest and HTTP are up,
//! pets the watchdog while the store writer commits, and on SIGTERM says STOPPING=1, commits what it
//! holds, and exits with status 0, leaving a consistent store that holds every acked event.
#![allow(clippy::unwrap_used)]

mod support;

use shiftlens_common::Batch;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Starts the binary through `sh -c 'exec ...'` so that WATCHDOG_PID can name the collector's own pid.
async fn spawn_under_systemd(config: &Path, notify: &Path) -> (Child, SocketAddr) {
    let bin = env!("CARGO_BIN_EXE_shiftlens-collector");
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
        .arg(bin)
        .arg(config)
        .env("NOTIFY_SOCKET", notify)
        // Pets every second, each after a writer probe of up to a second: a loaded machine still makes it.
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = broker_addr(&mut child).await;
    (child, addr)
}

/// Reads notify datagrams until `want` arrives or `secs` pass; returns everything read.
fn read_until(sock: &UnixDatagram, want: &str, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                break;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_notifies_systemd_commits_what_is_queued_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, config_text(dir.path(), &pki.leaf("localhost"), "")).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();

    let (mut child, addr) = spawn_under_systemd(&cfg, &notify_path).await;
    let seen = tokio::task::block_in_place(|| read_until(&sock, "READY=1", WAIT));
    assert!(seen.iter().any(|m| m == "READY=1"), "no READY=1: {seen:?}");
    // The watchdog is petted only through the writer's probe.
    let seen = tokio::task::block_in_place(|| read_until(&sock, "WATCHDOG=1", WAIT));
    assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "no WATCHDOG=1: {seen:?}");

    // Traffic in flight when SIGTERM comes.
    let epoch = 5;
    let batches: Vec<Batch> = (0..100).map(|i| batch("gw-1", epoch, i * 100 + 1, 100)).collect();
    let mut acked = BTreeSet::new();
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    for b in &batches {
        publish_batch(&a, "gw-1", b).await;
    }
    assert!(wait_acked(&mut a, epoch, &(1..=100).collect(), &mut acked, WAIT).await);

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let seen = tokio::task::block_in_place(|| read_until(&sock, "STOPPING=1", WAIT));
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "no STOPPING=1: {seen:?}");
    // The collector gives its writer up to 10 s and the last acks a few more before it exits.
    let exit = tokio::time::timeout(Duration::from_secs(WAIT), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within {WAIT} s"))
        .unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert_eq!(exit.code(), Some(0), "exit {exit:?}; stderr:\n{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    // Acks published during the shutdown count too.
    wait_acked(&mut a, epoch, &(1..=10_000).collect(), &mut acked, 1).await;
    drop(a);

    let db = dir.path().join("collector.db");
    let conn = shiftlens_collector::store::open_reader(&db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let stored: BTreeSet<u64> = conn
        .prepare("SELECT seq FROM events WHERE epoch = 5")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect();
    assert!(acked.is_subset(&stored), "{} acked events are missing", acked.difference(&stored).count());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), stored.len() as i64, "duplicates stored");
    // Whole batches only: a transaction never stores part of one.
    assert_eq!(stored.len() % 100, 0);
}
