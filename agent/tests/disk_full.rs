//! The outbox on a full disk and after a damaged file: events lost while the disk stays full until the agent
//! stops become a recorded gap with their exact seqs at the next start; a zero-length outbox file is set
//! aside, not silently taken for a new outbox.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use shiftlens_agent::outbox::{Outbox, OutboxConfig};
use shiftlens_agent::topology::Agent;
use shiftlens_common::GapReason;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Makes the agent's outbox as full as a full device would: the database may not grow by a single page
/// (SQLite raises a limit below the current page count to it).
fn fill_disk(agent: &Agent) {
    agent.outbox.lock().unwrap().set_max_page_count(1).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_while_the_disk_stays_full_until_a_stop_are_a_gap_at_the_next_start() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let port = start_rumqttd();
    // A small memory bound, so that the outage outlasts it and events are lost before the stop as well.
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "", "memory_bytes = \"64KiB\"");
    // No collector yet: nothing is acked and deleted, so the database has no free pages to fill either.
    let agent = Agent::start(&config).await.unwrap();
    produce(agent.observations.clone(), 0, 1_000, 1_000).await;
    wait_for("first events committed", LONG, || *agent.committed.borrow() >= 1_000).await;
    fill_disk(&agent);
    produce(agent.observations.clone(), 1_000, 5_000, 1_000).await;
    // Stop while the disk is still full. (A few events may still have fitted into free space of the last pages.)
    let at_stop = *agent.committed.borrow();
    agent.shutdown().await.unwrap();

    // The next start has room (a new connection has no page limit) and records the loss first.
    let collector = Collector::start(port);
    let agent = Agent::start(&config).await.unwrap();
    produce(agent.observations.clone(), 6_000, 1_000, 1_000).await;
    wait_for("the newest event at the collector", LONG, || collector.received.lock().unwrap().has_counter(6_999)).await;
    wait_for("an empty outbox", LONG, || agent.outbox.lock().unwrap().stats().unwrap().depth == 0).await;
    let last = *agent.committed.borrow();
    let r = std::mem::take(&mut *collector.received.lock().unwrap());
    let gaps = r.gaps();
    eprintln!("committed at the stop {at_stop}, last {last}, gaps {gaps:?}");
    assert!(gaps.iter().all(|g| g.2 == GapReason::StorageFailed), "{gaps:?}");
    // The gap the next start recorded: right after the last stored seq, before this run's events.
    assert!(gaps.iter().any(|g| g.0 == at_stop + 1), "a gap from seq {} on: {gaps:?}", at_stop + 1);
    assert!(r.covers(last), "every seq arrived or is named by a gap");
    let mut counters: Vec<u64> = r.counters_by_asset().into_values().flatten().collect();
    let received = counters.len() as u64;
    counters.sort_unstable();
    counters.dedup();
    assert_eq!(counters.len() as u64, received, "each event arrived once");
    assert!(counters.iter().copied().eq((0..1_000).chain(counters[1_000..].iter().copied())));
    assert!(counters.iter().rev().take(1_000).all(|&n| n >= 6_000), "every event of the second run arrived");
    let lost: u64 = gaps.iter().map(|&(a, b, _)| b - a + 1).sum();
    assert!(lost > 0);
    assert_eq!(received + lost, 7_000, "received + recorded as lost = produced: the gap is exact");
    agent.shutdown().await.unwrap();

    // Recorded once: a third start records nothing more.
    let agent = Agent::start(&config).await.unwrap();
    produce(agent.observations.clone(), 7_000, 10, 10).await;
    wait_for("the third run's events", LONG, || collector.received.lock().unwrap().has_counter(7_009)).await;
    assert!(collector.received.lock().unwrap().gaps().is_empty());
    agent.shutdown().await.unwrap();
}

#[test]
fn a_zero_length_outbox_file_is_set_aside_with_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let epoch = Outbox::open(&OutboxConfig::at(&path)).unwrap().epoch();
    // Damaged: the main file emptied, a WAL left beside it (SQLite would delete that with the empty file).
    std::fs::write(&path, b"").unwrap();
    std::fs::write(dir.path().join("outbox.db-wal"), b"old frames").unwrap();
    let outbox = Outbox::open(&OutboxConfig::at(&path)).unwrap();
    assert_ne!(outbox.epoch(), epoch, "a new outbox");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let kept: Vec<&String> = names.iter().filter(|n| n.starts_with("outbox.db.empty-")).collect();
    assert_eq!(kept.len(), 1, "{names:?}");
    assert_eq!(std::fs::metadata(dir.path().join(kept[0])).unwrap().len(), 0);
    let wal: Vec<&String> = names.iter().filter(|n| n.starts_with("outbox.db-wal.empty-")).collect();
    assert_eq!(wal.len(), 1, "{names:?}");
    assert_eq!(std::fs::read(dir.path().join(wal[0])).unwrap(), b"old frames");
    // A file with content is opened as it is.
    drop(outbox);
    let again = Outbox::open(&OutboxConfig::at(&path)).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), names.len(), "nothing else set aside");
    drop(again);
}
