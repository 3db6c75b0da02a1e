//! Agent → broker → collector over real sockets: the embedded broker with mTLS, exactly-once ingest with
//! acks, dead letters, the downtime feed and last wills. The agent role is played by rumqttc clients.
#![allow(clippy::unwrap_used)]

mod support;

use rumqttc::{LastWill, QoS};
use shiftlens_collector::{feed, topology};
use shiftlens_common::status::Status;
use shiftlens_common::wire::encode_batch;
use shiftlens_common::{AssetId, Batch, Event, EventBody, MachineState, Topic};
use std::collections::BTreeSet;
use support::*;

async fn start(dir: &std::path::Path, pki: &Pki, extra: &str) -> std::net::SocketAddr {
    init_logs();
    let server = pki.leaf("localhost");
    let cfg = config(dir, &server, extra);
    topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap().broker.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_stored_once_and_acked_even_when_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    let epoch = 42;
    let batches: Vec<Batch> = (0..20).map(|i| batch("gw-1", epoch, i * 50 + 1, 50)).collect();
    for b in &batches {
        publish_batch(&a, "gw-1", b).await;
    }
    // Redeliver half of them, as an agent does after a lost ack.
    for b in batches.iter().step_by(2) {
        publish_batch(&a, "gw-1", b).await;
    }
    let want: BTreeSet<u64> = (1..=1000).collect();
    let mut acked = BTreeSet::new();
    assert!(wait_acked(&mut a, epoch, &want, &mut acked, WAIT).await, "acked {} of 1000", acked.len());
    let db = dir.path().join("collector.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 1000);
    // The redelivered batches are acked again (the agent may have lost the first ack).
    let mut again = BTreeSet::new();
    publish_batch(&a, "gw-1", &batches[3]).await;
    let want: BTreeSet<u64> = (151..=200).collect();
    assert!(wait_acked(&mut a, epoch, &want, &mut again, WAIT).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 1000);
    // Another epoch (a new outbox) with the same seqs is different data.
    publish_batch(&a, "gw-1", &batch("gw-1", 43, 1, 10)).await;
    let want: BTreeSet<u64> = (1..=10).collect();
    assert!(wait_acked(&mut a, 43, &want, &mut BTreeSet::new(), WAIT).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 1010);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_dead_lettered_while_good_traffic_flows() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let db = dir.path().join("collector.db");
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    let topic = events_topic("gw-1");
    publish(&a, &topic, b"\xff\x00garbage".to_vec()).await;
    publish(&a, &topic, vec![0x85; 2 << 20]).await; // 2 MiB: over the 1 MiB batch limit
    let mut future = encode_batch(&batch("gw-1", 1, 1, 1));
    future[1] = 0x09; // schema version 9
    publish(&a, &topic, future).await;
    // Another gateway's id in the payload, on gw-1's own topic.
    publish(&a, &topic, encode_batch(&batch("gw-2", 1, 1, 5))).await;
    publish(&a, &Topic::Status { site: site(), gateway: gateway("gw-1") }.to_string(), b"{not json".to_vec()).await;
    // Good traffic still flows.
    publish_batch(&a, "gw-1", &batch("gw-1", 7, 1, 10)).await;
    let want: BTreeSet<u64> = (1..=10).collect();
    assert!(wait_acked(&mut a, 7, &want, &mut BTreeSet::new(), WAIT).await);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM dead_letters") == 5).await);
    let kinds = {
        let conn = shiftlens_collector::store::open_reader(&db).unwrap();
        let mut st = conn.prepare("SELECT kind, topic FROM dead_letters ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
    };
    let names: Vec<&str> = kinds.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(names, ["malformed", "too_large", "unsupported_version", "gateway_mismatch", "bad_status"]);
    assert!(kinds.iter().all(|k| k.1.starts_with("shiftlens/v1/plant-a/gw-1/")));

    // gw-2's certificate publishing on gw-1's topic: refused at the gate, dead-lettered, disconnected.
    // It does not reconnect (a reconnect would send the unacknowledged publish again).
    let intruder_files = pki.leaf("gw-2");
    let mut intruder = connect(options(addr, "gw-2", &pki.ca, Some(&intruder_files)), vec![], true);
    assert!(wait_for(&mut intruder, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    publish_batch(&intruder, "gw-1", &batch("gw-1", 7, 100, 5)).await;
    assert!(wait_for(&mut intruder, WAIT, |s| matches!(s, Seen::Error(_)).then_some(())).await.is_some());
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM dead_letters WHERE kind = 'identity'") == 1).await);
    // A client id that is not the certificate's CN is refused too.
    let files = pki.leaf("gw-3");
    let mut liar = connect(options(addr, "gw-1", &pki.ca, Some(&files)), vec![], true);
    assert!(wait_for(&mut liar, WAIT, |s| match s {
        Seen::Connected => panic!("a client id other than the CN was accepted"),
        Seen::Error(_) => Some(()),
        _ => None,
    })
    .await
    .is_some());
    // Nothing of the intruder got in, and gw-1 still works.
    publish_batch(&a, "gw-1", &batch("gw-1", 7, 11, 10)).await;
    let want: BTreeSet<u64> = (11..=20).collect();
    assert!(wait_acked(&mut a, 7, &want, &mut BTreeSet::new(), WAIT).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_or_from_another_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let rogue = Pki::new(dir.path(), "rogue");
    let rogue_files = rogue.leaf("gw-1");
    // The rogue client trusts the real server CA so only its own certificate is at fault.
    let rogue_files = shiftlens_collector::broker::TlsFiles { ca: pki.ca.clone(), ..rogue_files };
    for (what, files) in [("no certificate", None), ("another CA", Some(&rogue_files))] {
        let mut c = connect(options(addr, "gw-1", &pki.ca, files), vec![], true);
        let outcome = refused(&mut c).await;
        assert_eq!(outcome, Some(true), "{what}: not refused");
    }
    // The right certificate gets in.
    let mut good = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut good, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
}

fn state(seq: u64, ts_ms: i64, s: MachineState) -> Event {
    let reason = (s == MachineState::Down).then(|| "E-STOP".to_string());
    Event { seq, ts_ms, asset: AssetId::parse("press-1").unwrap(), body: EventBody::State { state: s, reason } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_opens_and_closes_on_the_feed_and_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "feed_readers = [\"it-feed\"]").await;
    let reader_files = pki.leaf("it-feed");
    let mut reader =
        connect(options(addr, "it-feed", &pki.ca, Some(&reader_files)), vec!["shiftlens/v1/+/downtime".into()], false);
    assert!(wait_for(&mut reader, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // The asset list is imported by another process while the collector runs: the feed carries its line.
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(&cfg_path, config_text(dir.path(), &pki.leaf("localhost"), "")).unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-3,250,\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["import", "assets"])
        .arg(&assets)
        .arg("--config")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let t0 = 1_700_000_000_000;
    let alarm = shiftlens_common::Alarm {
        id: "A17".into(),
        active: true,
        severity: 800,
        text: "Hydraulic pressure low".into(),
        class: Some("hydraulics".into()),
        ..Default::default()
    };
    let open = vec![
        state(1, t0, MachineState::Running),
        Event { seq: 2, ts_ms: t0 + 5_000, asset: AssetId::parse("press-1").unwrap(), body: EventBody::Alarm(alarm) },
        state(3, t0 + 6_000, MachineState::Down),
    ];
    publish_batch(&a, "gw-1", &Batch::new(site(), gateway("gw-1"), 9, open)).await;
    let rec: feed::Record = wait_for(&mut reader, WAIT, |s| match s {
        Seen::Message(t, p) if t == "shiftlens/v1/plant-a/downtime" => serde_json::from_slice(&p).ok(),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!((rec.state.as_str(), rec.end.as_deref(), rec.schema.as_str()), ("open", None, feed::SCHEMA));
    assert_eq!(rec.first_out_alarm.as_ref().map(|f| f.id.as_str()), Some("A17"));
    assert_eq!(rec.reason.as_deref(), Some("E-STOP"));
    assert_eq!(rec.line.as_deref(), Some("line-3"));

    publish_batch(
        &a,
        "gw-1",
        &Batch::new(site(), gateway("gw-1"), 9, vec![state(4, t0 + 96_000, MachineState::Running)]),
    )
    .await;
    let rec: feed::Record = wait_for(&mut reader, WAIT, |s| match s {
        Seen::Message(_, p) => serde_json::from_slice::<feed::Record>(&p).ok().filter(|r| r.state == "closed"),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(rec.duration_s, Some(90.0));
    assert_eq!(rec.start, "2023-11-14T22:13:26.000Z");
    assert_eq!(rec.line.as_deref(), Some("line-3"));

    // The same event through the CLI export, as CSV and JSON.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["export", "downtime", "--config"])
        .arg(&cfg_path)
        .args(["--from", "2023-11-14T00:00:00Z", "--to", "2023-11-15T00:00:00Z", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("schema,site,line,asset,start,end,duration_s,state"));
    assert!(
        lines[1].contains(
            "plant-a,line-3,press-1,2023-11-14T22:13:26.000Z,2023-11-14T22:14:56.000Z,90.0,closed,E-STOP,A17"
        ),
        "{csv}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["export", "downtime", "--config"])
        .arg(&cfg_path)
        .args(["--from", "2023-11-15T00:00:00Z", "--format", "json"])
        .output()
        .unwrap();
    let none: Vec<feed::Record> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none.is_empty(), "a window after the event must not list it");

    // A `down` 3 s before the stop arrives late (a buffered gateway): the stop began then. The old key is
    // retracted on the feed and the event is published under its new start.
    publish_batch(&a, "gw-1", &Batch::new(site(), gateway("gw-1"), 9, vec![state(5, t0 + 3_000, MachineState::Down)]))
        .await;
    let (mut retracted, mut moved) = (None, None);
    while retracted.is_none() || moved.is_none() {
        let rec: feed::Record = wait_for(&mut reader, WAIT, |s| match s {
            Seen::Message(_, p) => serde_json::from_slice::<feed::Record>(&p).ok(),
            _ => None,
        })
        .await
        .expect("the retraction and the moved event on the feed");
        match rec.state.as_str() {
            "retracted" => retracted = Some(rec),
            "closed" => moved = Some(rec),
            other => panic!("unexpected {other} record: {rec:?}"),
        }
    }
    let (retracted, moved) = (retracted.unwrap(), moved.unwrap());
    assert_eq!((retracted.start.as_str(), retracted.asset.as_str()), ("2023-11-14T22:13:26.000Z", "press-1"));
    assert_eq!(retracted.line.as_deref(), Some("line-3"));
    assert_eq!((moved.start.as_str(), moved.duration_s), ("2023-11-14T22:13:23.000Z", Some(93.0)));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["export", "downtime", "--config"])
        .arg(&cfg_path)
        .args(["--from", "2023-11-14T00:00:00Z", "--to", "2023-11-15T00:00:00Z", "--format", "json"])
        .output()
        .unwrap();
    let all: Vec<feed::Record> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.len(), 1, "the retracted key is gone from the store: {all:?}");
    assert_eq!(all[0].start, moved.start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_last_will_marks_its_assets_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let db = dir.path().join("collector.db");
    let status_topic = Topic::Status { site: site(), gateway: gateway("gw-1") }.to_string();
    let will = serde_json::to_vec(&Status::offline(0)).unwrap();
    let files = pki.leaf("gw-1");
    let mut opts = options(addr, "gw-1", &pki.ca, Some(&files));
    opts.set_last_will(LastWill::new(&status_topic, will, QoS::AtLeastOnce, true));
    opts.set_keep_alive(std::time::Duration::from_secs(5));
    let ack = Topic::Ack { site: site(), gateway: gateway("gw-1") }.to_string();
    let mut a = connect(opts, vec![ack], false);
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let mut online = Status::offline(1);
    online.online = true;
    a.client.publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online).unwrap()).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    publish_batch(&a, "gw-1", &Batch::new(site(), gateway("gw-1"), 5, vec![state(1, now - 1000, MachineState::Down)]))
        .await;
    assert!(wait_acked(&mut a, 5, &BTreeSet::from([1]), &mut BTreeSet::new(), WAIT).await);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM gateways WHERE online = 1") == 1).await);
    // The gateway dies without DISCONNECT: the broker publishes its will.
    drop(a);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM gateway_offline") == 1).await);
    assert!(
        eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM downtime WHERE data_gap = 1 AND end_ms IS NULL") == 1)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_goes_silent_without_a_last_will_is_marked_offline_when_its_heartbeat_is_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "\n[ingest]\nheartbeat_overdue = \"2s\"\n").await;
    let db = dir.path().join("collector.db");
    // No last will: the broker will never announce this gateway's death.
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let status_topic = Topic::Status { site: site(), gateway: gateway("gw-1") }.to_string();
    let mut online = Status::offline(1);
    online.online = true;
    a.client.publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online).unwrap()).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    publish_batch(&a, "gw-1", &Batch::new(site(), gateway("gw-1"), 5, vec![state(1, now - 1000, MachineState::Down)]))
        .await;
    assert!(wait_acked(&mut a, 5, &BTreeSet::from([1]), &mut BTreeSet::new(), WAIT).await);
    // The agent hangs: its connection stays up (rumqttc keeps pinging), but no heartbeat comes.
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM gateway_offline") == 1).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM gateways WHERE online = 0"), 1);
    assert!(
        eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM downtime WHERE data_gap = 1 AND end_ms IS NULL") == 1)
            .await
    );
    // Its next heartbeat makes it online again; the mark stays (the time without news stays unknown).
    a.client.publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online).unwrap()).await.unwrap();
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM gateways WHERE online = 1") == 1).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM gateway_offline"), 1);
}

/// The real binary with its default log filter: a start, a gateway that connects, is acked and leaves, and a
/// SIGTERM log no ERROR (rumqttd logs one for every connection that ends, its readiness probe included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_start_and_stop_logs_no_error() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, config_text(dir.path(), &pki.leaf("localhost"), "")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = broker_addr(&mut child).await;
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    publish_batch(&a, "gw-1", &batch("gw-1", 1, 1, 10)).await;
    assert!(wait_acked(&mut a, 1, &(1..=10).collect(), &mut BTreeSet::new(), WAIT).await);
    a.client.disconnect().await.unwrap();
    drop(a);
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(WAIT), child.wait()).await.unwrap().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// `(seq, ts_ms, asset, kind, body)` of every stored event of `epoch`, in seq order.
fn stored(db: &std::path::Path, epoch: u64) -> Vec<(i64, i64, String, String, String)> {
    let conn = shiftlens_collector::store::open_reader(db).unwrap();
    let mut st =
        conn.prepare("SELECT seq, ts_ms, asset, kind, body FROM events WHERE epoch = ?1 ORDER BY seq").unwrap();
    st.query_map([epoch as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Waits for an ack of `epoch` asking for `dictionary`.
async fn wait_dictionary_request(c: &mut TestClient, epoch: u64, dictionary: u64) -> bool {
    wait_for(c, WAIT, |s| {
        matches!(s, Seen::Ack(a) if a.epoch == epoch && a.dictionary_unknown == Some(dictionary)).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_batch_is_stored_as_its_plain_form_and_an_unknown_dictionary_is_asked_for() {
    use shiftlens_common::wire_dict::DictEncoder;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let db = dir.path().join("collector.db");
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // The same events, plain under epoch 7 and in the dictionary form under epoch 8 (two batches, the
    // second referring to the first one's entries), are stored alike.
    let mut enc = DictEncoder::new(1);
    publish_batch(&a, "gw-1", &batch("gw-1", 7, 1, 100)).await;
    publish(&a, &events_topic("gw-1"), enc.encode(&batch("gw-1", 8, 1, 50))).await;
    publish(&a, &events_topic("gw-1"), enc.encode(&batch("gw-1", 8, 51, 50))).await;
    let want: BTreeSet<u64> = (1..=100).collect();
    assert!(wait_acked(&mut a, 7, &want, &mut BTreeSet::new(), WAIT).await);
    assert!(wait_acked(&mut a, 8, &want, &mut BTreeSet::new(), WAIT).await);
    assert_eq!(stored(&db, 7).len(), 100);
    assert_eq!(stored(&db, 7), stored(&db, 8));

    // Dictionary 5's first batch went elsewhere (another collector of a shared subscription, or this one
    // before a restart): its second batch is not stored, and the agent is asked for dictionary 5.
    let mut enc = DictEncoder::new(5);
    let first = enc.encode(&batch("gw-1", 9, 1, 50));
    publish(&a, &events_topic("gw-1"), enc.encode(&batch("gw-1", 9, 51, 50))).await;
    assert!(wait_dictionary_request(&mut a, 9, 5).await, "no dictionary request");
    assert!(stored(&db, 9).is_empty());
    // The agent starts dictionary 6 and sends again; then the lost first batch turns up after all.
    enc.restart();
    publish(&a, &events_topic("gw-1"), enc.encode(&batch("gw-1", 9, 51, 50))).await;
    publish(&a, &events_topic("gw-1"), first).await;
    assert!(wait_acked(&mut a, 9, &want, &mut BTreeSet::new(), WAIT).await);
    assert_eq!(stored(&db, 9), stored(&db, 7), "every event once, as sent");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dictionary_batches_are_dead_lettered_with_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let addr = start(dir.path(), &pki, "").await;
    let db = dir.path().join("collector.db");
    let mut a = agent(addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    let entry = (AssetId::parse("press-1").unwrap(), EventBody::State { state: MachineState::Down, reason: None });
    let v3 = |entries: Vec<(AssetId, EventBody)>, codes: Vec<i64>| {
        let mut bytes = Vec::new();
        let t = (3u16, "plant-a", "gw-1", 11u64, 1u64, 0u64, entries, 1u64, 1_700_000_000_000i64, codes);
        ciborium::into_writer(&t, &mut bytes).unwrap();
        bytes
    };
    let topic = events_topic("gw-1");
    publish(&a, &topic, v3(vec![entry.clone()], vec![4, 0])).await; // entry 2 of 1
                                                                    // A dictionary declared 4 billion entries long, with nothing behind the header.
    let mut huge = v3(vec![], vec![]);
    let at = huge.iter().rposition(|&b| b == 0x80).unwrap() - 1 - 9 - 1; // [] before seq0, ts0, codes
    huge.truncate(at);
    huge.extend([0x9a, 0xff, 0xff, 0xff, 0xff]);
    publish(&a, &topic, huge).await;
    publish(&a, &topic, v3(vec![entry.clone()], vec![1, -3, 0])).await; // a negative seq skip
    publish(&a, &topic, v3(vec![entry], vec![0, -1_700_000_000_000])).await; // a time step to 1970
    publish_batch(&a, "gw-1", &batch("gw-1", 12, 1, 10)).await;
    assert!(wait_acked(&mut a, 12, &(1..=10).collect(), &mut BTreeSet::new(), WAIT).await);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM dead_letters") == 4).await);
    let conn = shiftlens_collector::store::open_reader(&db).unwrap();
    let mut st = conn.prepare("SELECT kind, topic FROM dead_letters ORDER BY id").unwrap();
    let rows: Vec<(String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["bad_index", "malformed", "bad_delta", "bad_timestamp"]);
    assert!(rows.iter().all(|r| r.1 == topic));
    assert!(stored(&db, 11).is_empty());
}
