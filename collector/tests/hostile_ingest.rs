//! Hostile gateways against the real embedded broker and ingest (issue 11): one gateway's flood of late
//! events must not delay another gateway's acks, a flood of malformed payloads must stay within the
//! dead-letter bound and a bounded number of log lines, and impossible timestamps are dead-lettered with
//! their reason. The gateways are rumqttc clients with their own certificates, as in `ingest.rs`.
#![allow(clippy::unwrap_used)]

mod support;

use shiftlens_collector::metrics::Metrics;
use shiftlens_collector::topology::{self, Collector};
use shiftlens_collector::{feed, Config};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{AssetId, Batch, Event, EventBody, MachineState};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use support::*;

/// Every WARN line of this test binary, as the collector would write them to its log.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Log lines that contain every one of `words`.
fn log_lines(words: &[&str]) -> Vec<String> {
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    log.lines().filter(|l| words.iter().all(|w| l.contains(w))).map(str::to_string).collect()
}

async fn start(dir: &std::path::Path, pki: &Pki, store: &str) -> Collector {
    capture_logs();
    let text = config_text(dir, &pki.leaf("localhost"), "").replace("[store]\n", &format!("[store]\n{store}\n"));
    let cfg = Config::from_file(&ConfigFile::from_text(dir.join("collector.toml"), text)).unwrap();
    topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap()
}

async fn connected(addr: std::net::SocketAddr, pki: &Pki, gw: &str) -> TestClient {
    let mut c = agent(addr, pki, gw);
    assert!(wait_for(&mut c, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    c
}

/// Acked seqs of `epoch` seen so far on `c`, without waiting.
fn drain_acks(c: &mut TestClient, epoch: u64, acked: &mut BTreeSet<u64>) {
    while let Ok(s) = c.seen.try_recv() {
        if let Seen::Ack(a) = s {
            if a.epoch == epoch {
                for &(lo, hi) in &a.ranges {
                    acked.extend(lo..=hi);
                }
            }
        }
    }
}

fn get(v: &std::sync::atomic::AtomicU64) -> u64 {
    Metrics::get(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_flooding_descending_timestamps_does_not_delay_another_gateways_acks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "").await;
    let addr = collector.broker.unwrap();
    let mut hostile = connected(addr, &pki, "gw-flood").await;
    let mut good = connected(addr, &pki, "gw-good").await;

    // 60 batches of 4,000 state events, every event earlier than all before it: the worst order for a
    // timeline, and far more than the writer takes in one transaction.
    const BATCHES: u64 = 60;
    const PER: u64 = 4000;
    let t_end = 1_750_000_000_000i64;
    let asset = AssetId::parse("press-9").unwrap();
    let flood: Vec<Batch> = (0..BATCHES)
        .map(|b| {
            let events = (b * PER + 1..=(b + 1) * PER)
                .map(|seq| Event {
                    seq,
                    ts_ms: t_end - seq as i64 * 1000,
                    asset: asset.clone(),
                    body: EventBody::State {
                        state: if seq % 2 == 0 { MachineState::Down } else { MachineState::Running },
                        reason: None,
                    },
                })
                .collect();
            Batch::new(site(), gateway("gw-flood"), 66, events)
        })
        .collect();
    for b in &flood {
        publish_batch(&hostile, "gw-flood", b).await;
    }
    // The flood is being written: its first batch is acked.
    let mut hostile_acked = BTreeSet::new();
    let first: BTreeSet<u64> = (1..=PER).collect();
    assert!(wait_acked(&mut hostile, 66, &first, &mut hostile_acked, WAIT).await, "first flood batch not acked");

    // The good gateway's batch goes round-robin with the flood: acked while most of the flood still waits.
    publish_batch(&good, "gw-good", &batch("gw-good", 7, 1, 10)).await;
    let want: BTreeSet<u64> = (1..=10).collect();
    assert!(wait_acked(&mut good, 7, &want, &mut BTreeSet::new(), WAIT).await, "good gateway not acked");
    drain_acks(&mut hostile, 66, &mut hostile_acked);
    let flood_acked = hostile_acked.len() as u64 / PER;
    assert!(
        flood_acked + 20 <= BATCHES,
        "the good gateway was acked only after {flood_acked} of {BATCHES} flood batches"
    );

    // Nothing of the flood was lost meanwhile: every batch is acked and stored, none dropped.
    let all: BTreeSet<u64> = (1..=BATCHES * PER).collect();
    assert!(wait_acked(&mut hostile, 66, &all, &mut hostile_acked, WAIT).await, "flood not fully acked");
    assert_eq!(get(&collector.metrics.dropped_overload), 0);
    let db = dir.path().join("collector.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events") as u64, BATCHES * PER + 10);
    // Alternating down/running: one closed downtime per down event but the last (open: nothing after it).
    assert_eq!(count(&db, "SELECT COUNT(*) FROM downtime WHERE asset = 'press-9'") as u64, BATCHES * PER / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_malformed_payloads_stays_within_the_dead_letter_bound_and_a_few_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "dead_letter_max = 100").await;
    let addr = collector.broker.unwrap();
    let junk = connected(addr, &pki, "gw-junk").await;
    let mut good = connected(addr, &pki, "gw-fine").await;
    let m = collector.metrics.clone();

    // 3,000 malformed payloads, in steps small enough that none is dropped for a full queue, so the
    // metric must count exactly all of them.
    const N: u64 = 3000;
    let started = std::time::Instant::now();
    let topic = events_topic("gw-junk");
    for i in 0..N {
        publish(&junk, &topic, format!("\u{ff}garbage {i}").into_bytes()).await;
        if (i + 1) % 50 == 0 {
            assert!(
                eventually(WAIT, || get(&m.dead_letters) > i).await,
                "{} of {} dead-lettered",
                get(&m.dead_letters),
                i + 1
            );
        }
    }
    let elapsed = started.elapsed().as_secs();
    assert_eq!(get(&m.dead_letters), N, "the metric counts every dead letter");
    assert_eq!(get(&m.dropped_overload), 0);
    let db = dir.path().join("collector.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 100, "the table is held at dead_letter_max");
    // The newest are kept.
    let newest: String = {
        let conn = shiftlens_collector::store::open_reader(&db).unwrap();
        conn.query_row("SELECT head FROM dead_letters ORDER BY id DESC LIMIT 1", [], |r| r.get::<_, Vec<u8>>(0))
            .map(|h| String::from_utf8_lossy(&h).into_owned())
            .unwrap()
    };
    assert!(newest.ends_with(&format!("garbage {}", N - 1)), "{newest}");
    // At most one line per 10 s for this gateway, and the later ones say how many were held back.
    let lines = log_lines(&["payload dead-lettered", "shiftlens/v1/plant-a/gw-junk/"]);
    assert!(!lines.is_empty());
    assert!(lines.len() as u64 <= 1 + elapsed / 10 + 1, "{} lines in {elapsed} s: {lines:#?}", lines.len());
    assert!(lines.iter().all(|l| l.contains("suppressed=")), "{lines:#?}");
    // Another gateway is still served.
    publish_batch(&good, "gw-fine", &batch("gw-fine", 3, 1, 5)).await;
    assert!(wait_acked(&mut good, 3, &(1..=5).collect(), &mut BTreeSet::new(), WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_impossible_timestamps_are_dead_lettered_with_the_reason_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "").await;
    let mut a = connected(collector.broker.unwrap(), &pki, "gw-clock").await;
    let db = dir.path().join("collector.db");
    let asset = AssetId::parse("press-1").unwrap();
    for (epoch, bad) in [(1u64, i64::MIN), (2, i64::MAX), (3, 0)] {
        let ok = Event {
            seq: 1,
            ts_ms: 1_700_000_000_000,
            asset: asset.clone(),
            body: EventBody::State { state: MachineState::Down, reason: None },
        };
        let wrong = Event { seq: 2, ts_ms: bad, ..ok.clone() };
        publish_batch(&a, "gw-clock", &Batch::new(site(), gateway("gw-clock"), epoch, vec![ok, wrong])).await;
    }
    // A good batch behind them is acked, so the three were handled before it.
    publish_batch(&a, "gw-clock", &batch("gw-clock", 9, 1, 4)).await;
    assert!(wait_acked(&mut a, 9, &(1..=4).collect(), &mut BTreeSet::new(), WAIT).await);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM dead_letters") == 3).await);
    let rows: Vec<(String, String)> = {
        let conn = shiftlens_collector::store::open_reader(&db).unwrap();
        let mut st = conn.prepare("SELECT kind, reason FROM dead_letters ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    };
    for ((kind, reason), bad) in rows.iter().zip([i64::MIN, i64::MAX, 0]) {
        assert_eq!(kind, "bad_timestamp");
        assert!(reason.contains("event seq 2") && reason.contains(&format!("timestamp {bad} ms")), "{reason}");
        assert!(reason.contains("2000-01-01..2200-01-01 UTC"), "{reason}");
    }
    // Nothing of those batches is stored, not even their good first event, and no downtime came of them.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events WHERE epoch IN (1, 2, 3)"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 4);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM downtime WHERE start_ms < 946684800000 OR start_ms > 7258118400000"),
        0
    );
    // And none was acked.
    let mut acked = BTreeSet::new();
    drain_acks(&mut a, 1, &mut acked);
    assert!(acked.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_older_than_their_retention_go_at_the_hourly_prune() {
    use shiftlens_collector::store::{events::DeadLetter, StoreConfig, WriteOp, Writer};
    let dir = tempfile::tempdir().unwrap();
    // The default retention: 7 days.
    let config = StoreConfig { path: dir.path().join("c.db"), ..StoreConfig::default() };
    let (out_tx, _out_rx) = tokio::sync::mpsc::channel(64);
    let w = Writer::spawn(&config, out_tx).unwrap();
    const DAY: i64 = 86_400_000;
    let now = 1_750_000_000_000;
    for age in [8 * DAY, 7 * DAY + 1, 7 * DAY, DAY, 0] {
        let d = DeadLetter::new("shiftlens/v1/plant-a/gw-1/events", now - age, "malformed", "x".into(), b"x");
        w.tx.send(WriteOp::DeadLetter(d)).await.unwrap();
    }
    w.tx.send(WriteOp::Prune { now_ms: now }).await.unwrap();
    // Answered once the transaction holding the prune has committed.
    let (reply, committed) = tokio::sync::oneshot::channel();
    w.tx.send(WriteOp::Ping(reply)).await.unwrap();
    committed.await.unwrap();
    let db = dir.path().join("c.db");
    let ages: Vec<i64> = {
        let conn = shiftlens_collector::store::open_reader(&db).unwrap();
        let mut st = conn.prepare("SELECT ? - received_ms FROM dead_letters ORDER BY id").unwrap();
        st.query_map([now], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    };
    assert_eq!(ages, [7 * DAY, DAY, 0]);
}
