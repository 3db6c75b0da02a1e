//! `[store] retention` against a real SQLite file and the real writer thread: `WriteOp::Prune` deletes the
//! raw events that *arrived* before the cutoff (docs/pitfalls.md: by arrival, not by event time) and keeps
//! the newer ones, while the downtime rows derived from the deleted events stay, in the store, in the
//! downtime feed and in the dataset the timeline pages are built from, also after a restart of the writer.
//! The events of a downtime still open are kept until it closes, so a restart can still close it.
#![allow(clippy::unwrap_used)]

use shiftlens_collector::feed;
use shiftlens_collector::people::Settings;
use shiftlens_collector::query::Dataset;
use shiftlens_collector::store::events::{query_downtime, DowntimeFilter, Rows};
use shiftlens_collector::store::{open_reader, Committed, StoreConfig, WriteOp, Writer};
use shiftlens_collector::timeline::{Downtime, FirstOut};
use shiftlens_common::config::HumanDuration;
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
/// The instant the prune runs (2027-01-15T08:00:00Z).
const NOW: i64 = 1_800_000_000_000;
const RETENTION_H: i64 = 1;
const CUTOFF: i64 = NOW - RETENTION_H * H;
/// Event times of the old data: three days before NOW.
const OLD: i64 = NOW - 72 * H;

fn state(seq: u64, asset: &str, ts_ms: i64, state: MachineState, reason: Option<&str>) -> Event {
    Event {
        seq,
        ts_ms,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::State { state, reason: reason.map(str::to_string) },
    }
}

fn rows(epoch: u64, events: Vec<Event>) -> Rows {
    Rows::new(Batch::new(SiteId::parse("plant-a").unwrap(), GatewayId::parse("gw-1").unwrap(), epoch, events)).unwrap()
}

fn downtime(asset: &str, start_ms: i64, end_ms: i64, reason: Option<&str>) -> Downtime {
    Downtime {
        site: SiteId::parse("plant-a").unwrap(),
        gateway: GatewayId::parse("gw-1").unwrap(),
        asset: AssetId::parse(asset).unwrap(),
        start_ms,
        end_ms: Some(end_ms),
        reason: reason.map(str::to_string),
        first_out: None,
        data_gap: false,
    }
}

fn config(db: &Path) -> StoreConfig {
    let retention = HumanDuration(Duration::from_secs(RETENTION_H as u64 * 3600));
    StoreConfig { path: db.to_path_buf(), retention: retention.0, ..StoreConfig::default() }
}

/// Sends `op` and waits until the transaction that took it has committed (a ping queued after it is
/// answered only then).
fn send_and_commit(w: &Writer, op: WriteOp) {
    w.tx.blocking_send(op).unwrap();
    let (reply, done) = tokio::sync::oneshot::channel();
    w.tx.blocking_send(WriteOp::Ping(reply)).unwrap();
    done.blocking_recv().unwrap();
}

fn stop(w: Writer, out: &mut mpsc::Receiver<Committed>) {
    drop(w.tx);
    // Drain what the writer reports so it never waits on a full channel, until it ends.
    while out.blocking_recv().is_some() {}
    w.thread.join().unwrap();
}

/// (epoch, seq) of every stored raw event, in order.
fn stored_events(db: &Path) -> Vec<(u64, u64)> {
    let conn = open_reader(db).unwrap();
    let mut st = conn.prepare("SELECT epoch, seq FROM events ORDER BY epoch, seq").unwrap();
    st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn stored_downtime(db: &Path) -> Vec<Downtime> {
    query_downtime(&open_reader(db).unwrap(), &DowntimeFilter::default()).unwrap()
}

#[test]
fn retention_deletes_events_that_arrived_before_the_cutoff_and_keeps_the_downtime_derived_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let (out_tx, mut out) = mpsc::channel(4096);
    let w = Writer::spawn(&config(&db), out_tx).unwrap();

    // Epoch 1 arrived two hours ago (before the cutoff): press-1 stopped for 30 minutes three days ago.
    let old = vec![
        state(1, "press-1", OLD, MachineState::Running, None),
        state(2, "press-1", OLD + 10 * MIN, MachineState::Down, Some("jam")),
        state(3, "press-1", OLD + 40 * MIN, MachineState::Running, None),
    ];
    send_and_commit(&w, WriteOp::Batch { rows: rows(1, old), received_ms: NOW - 2 * H });
    // Epoch 2 arrived exactly at the cutoff (kept: only what arrived *before* it goes): press-1 stopped for
    // 5 minutes an hour and a half ago.
    let at_cutoff = vec![
        state(1, "press-1", NOW - 90 * MIN, MachineState::Down, Some("motor")),
        state(2, "press-1", NOW - 85 * MIN, MachineState::Running, None),
    ];
    send_and_commit(&w, WriteOp::Batch { rows: rows(2, at_cutoff), received_ms: CUTOFF });
    // Epoch 3 is a backlog drained ten minutes ago: its events are three days old, but they arrived within
    // the retention, so they are kept (pruning by event time would have deleted them on arrival).
    let backlog = vec![
        state(1, "filler-1", OLD + 5 * MIN, MachineState::Running, None),
        state(2, "filler-1", OLD + 20 * MIN, MachineState::Down, Some("starved")),
        state(3, "filler-1", OLD + 50 * MIN, MachineState::Idle, None),
    ];
    send_and_commit(&w, WriteOp::Batch { rows: rows(3, backlog), received_ms: NOW - 10 * MIN });

    let old_stop = downtime("press-1", OLD + 10 * MIN, OLD + 40 * MIN, Some("jam"));
    let backlog_stop = downtime("filler-1", OLD + 20 * MIN, OLD + 50 * MIN, Some("starved"));
    let recent_stop = downtime("press-1", NOW - 90 * MIN, NOW - 85 * MIN, Some("motor"));
    let all = vec![old_stop.clone(), backlog_stop.clone(), recent_stop.clone()];
    assert_eq!(stored_downtime(&db), all, "before the prune");
    assert_eq!(stored_events(&db).len(), 8);

    send_and_commit(&w, WriteOp::Prune { now_ms: NOW });
    assert_eq!(stored_events(&db), [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)], "only epoch 1 arrived before the cutoff");
    assert_eq!(stored_downtime(&db), all, "downtime rows are kept for ever");

    // Later events go on from the timeline's state: press-1 stops again and is still down.
    send_and_commit(
        &w,
        WriteOp::Batch {
            rows: rows(4, vec![state(1, "press-1", NOW - 5 * MIN, MachineState::Down, Some("jam"))]),
            received_ms: NOW,
        },
    );
    stop(w, &mut out);
    let open_stop = Downtime { end_ms: None, ..downtime("press-1", NOW - 5 * MIN, 0, Some("jam")) };

    // A restart rebuilds the timeline from the events left; the rows of the pruned ones are untouched.
    let (out_tx, mut out) = mpsc::channel(4096);
    let w = Writer::spawn(&config(&db), out_tx).unwrap();
    send_and_commit(&w, WriteOp::Prune { now_ms: NOW });
    let mut want = all.clone();
    want.push(open_stop.clone());
    assert_eq!(stored_downtime(&db), want, "after a restart and another prune");
    assert_eq!(stored_events(&db).len(), 6);

    // What the feed (`GET /api/v1/downtime`, `export downtime`) and the timeline pages read still lists
    // the old stop, closed and with its duration.
    let window = DowntimeFilter { to_ms: Some(OLD + H), ..DowntimeFilter::default() };
    let old_rows = query_downtime(&open_reader(&db).unwrap(), &window).unwrap();
    assert_eq!(old_rows, [old_stop.clone(), backlog_stop]);
    let record = feed::Record::new(&old_rows[0], None);
    assert_eq!(
        (record.asset.as_str(), record.start.as_str(), record.state.as_str(), record.duration_s),
        ("press-1", feed::rfc3339(OLD + 10 * MIN).as_str(), "closed", Some(1800.0))
    );
    let ds = Dataset::load(&db, Settings::default(), None).unwrap();
    assert_eq!(ds.save_snapshot(&db).unwrap().new, 4);
    assert_eq!(ds.downtime, want);
    assert_eq!(ds.events.len(), 4);
    assert_eq!((ds.events[0].asset.as_str(), ds.events[0].start_ms), ("press-1", OLD + 10 * MIN));
    stop(w, &mut out);
}

#[test]
fn a_stop_still_open_at_the_cutoff_keeps_its_events_so_a_restart_can_close_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let (out_tx, mut out) = mpsc::channel(4096);
    let w = Writer::spawn(&config(&db), out_tx).unwrap();
    // press-1 stopped three days ago on an overload alarm and is still down; those events arrived two hours
    // ago, so they are past the retention.
    let alarm = Alarm {
        id: "AL7".into(),
        active: true,
        severity: 700,
        text: "motor overload".into(),
        class: None,
        ..Default::default()
    };
    let start = vec![
        state(1, "press-1", OLD, MachineState::Running, None),
        Event {
            seq: 2,
            ts_ms: OLD + 10 * MIN - 30_000,
            asset: AssetId::parse("press-1").unwrap(),
            body: EventBody::Alarm(alarm),
        },
        state(3, "press-1", OLD + 10 * MIN, MachineState::Down, Some("jam")),
    ];
    send_and_commit(&w, WriteOp::Batch { rows: rows(1, start), received_ms: NOW - 2 * H });
    send_and_commit(&w, WriteOp::Prune { now_ms: NOW });
    // Kept while the stop is open: the stop and the alarm just before it (alarms from the longest first-out
    // window, 1 d, before it). The running state before it is not needed.
    assert_eq!(stored_events(&db), [(1, 2), (1, 3)]);
    let first_out =
        FirstOut { id: "AL7".into(), text: "motor overload".into(), class: None, ts_ms: OLD + 10 * MIN - 30_000 };
    let open =
        Downtime { end_ms: None, first_out: Some(first_out), ..downtime("press-1", OLD + 10 * MIN, 0, Some("jam")) };
    assert_eq!(stored_downtime(&db), std::slice::from_ref(&open));
    stop(w, &mut out);

    // The collector restarts (the rebuilt timeline must not lose the first-out alarm); then press-1 runs.
    let (out_tx, mut out) = mpsc::channel(4096);
    let w = Writer::spawn(&config(&db), out_tx).unwrap();
    assert_eq!(stored_downtime(&db), std::slice::from_ref(&open));
    let end = vec![state(4, "press-1", NOW - MIN, MachineState::Running, None)];
    send_and_commit(&w, WriteOp::Batch { rows: rows(1, end), received_ms: NOW });
    let closed = Downtime { end_ms: Some(NOW - MIN), ..open };
    assert_eq!(stored_downtime(&db), std::slice::from_ref(&closed));
    // Closed, its old events go at the next prune; the row stays.
    send_and_commit(&w, WriteOp::Prune { now_ms: NOW });
    assert_eq!(stored_events(&db), [(1, 4)]);
    stop(w, &mut out);
    assert_eq!(stored_downtime(&db), [closed]);
}
