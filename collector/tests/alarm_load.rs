//! The alarm-load report end to end: alarm batches published over real MQTT/TLS to the real collector, the
//! personnel imported with the real binary, then the API (real router on a loopback socket), the
//! `report alarm-load` command and the page, all showing the same hand-computed figures.
#![allow(clippy::unwrap_used)]

mod http_support;
mod support;

use shiftlens_collector::{feed, topology};
use shiftlens_common::{Alarm, AssetId, Batch, Event, EventBody};
use std::collections::BTreeSet;
use support::*;

/// UTC ms of `2026-03-05T07:00` style text.
fn t(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap().and_utc().timestamp_millis()
}

fn import(toml: &std::path::Path, kind: &str, csv: &str) {
    let file = toml.with_file_name(format!("{kind}.csv"));
    std::fs::write(&file, csv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["import", kind])
        .arg(&file)
        .arg("--config")
        .arg(toml)
        .output()
        .unwrap();
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Rows as objects keyed by column, as the API serves them.
fn objects(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let columns: Vec<String> = serde_json::from_value(report["columns"].clone()).unwrap();
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::Value::Object(columns.iter().cloned().zip(r.as_array().unwrap().iter().cloned()).collect())
        })
        .collect()
}

/// Crew A (a1, a2, both s7 level 3) works days 06-18 UTC, crew B (b1) nights; press-1 on line 1 needs s7:3,
/// so line 1 has 2 operators by day and 1 by night. Imported with the real binary into the store of the
/// collector config `toml`.
fn import_plant(toml: &std::path::Path) {
    import(toml, "skills", "id,name,domain,certificate\ns7,S7 networking,IT,no\n");
    import(toml, "rotation", "crew,anchor,cycle\nA,2026-01-01,D\nB,2026-01-01,N\n");
    import(toml, "people", "id,name,crew,discipline\na1,Ana,A,OT\na2,Ben,A,OT\nb1,Cem,B,OT\n");
    import(
        toml,
        "person-skills",
        "person,skill,level,assessed\na1,s7,3,2025-01-01\na2,s7,3,2025-01-01\nb1,s7,3,2025-01-01\n",
    );
    import(toml, "assets", "id,site,line,cost_per_hour,requires\npress-1,plant-a,line1,1000,s7:3\n");
}

/// On 2026-03-05 alarm P1 is raised 12 times from 07:00 a minute apart (10 in the 07:00 window: 10 / 2 = 5
/// per operator, not a flood: not above 10) and F1 three times within 40 s from 19:00 (chattering; 3 per
/// operator). P1 carries priority and acknowledgement (wire version 2), F1 neither (Modbus-style).
fn alarm_batch() -> Batch {
    let mut edges: Vec<(i64, &str, bool)> = Vec::new();
    for i in 0..12 {
        let r = t("2026-03-05T07:00") + i * 60_000;
        edges.extend([(r, "P1", true), (r + 30_000, "P1", false)]);
    }
    for s in [0, 20_000, 40_000] {
        let r = t("2026-03-05T19:00") + s;
        edges.extend([(r, "F1", true), (r + 5_000, "F1", false)]);
    }
    let events: Vec<Event> = edges
        .iter()
        .enumerate()
        .map(|(i, (ts, id, active))| Event {
            seq: i as u64 + 1,
            ts_ms: *ts,
            asset: AssetId::parse("press-1").unwrap(),
            body: EventBody::Alarm(Alarm {
                id: id.to_string(),
                active: *active,
                severity: 500,
                text: "alarm".into(),
                class: None,
                // P1 as an OPC UA condition (wire version 2): low priority, acknowledged by the time it
                // clears; F1 as a Modbus alarm point, without either.
                priority: (*id == "P1" && *active).then(|| "low".to_string()),
                acked: (*id == "P1").then_some(!*active),
                ..Default::default()
            }),
        })
        .collect();
    Batch::new(site(), gateway("gw-1"), 7, events)
}

/// Publishes [`alarm_batch`] to a collector and waits until all of it is stored.
async fn publish_alarms(collector: &topology::Collector, pki: &Pki) {
    let mut a = agent(collector.broker.unwrap(), pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let batch = alarm_batch();
    let want: BTreeSet<u64> = batch.events.iter().map(|e| e.seq).collect();
    publish_batch(&a, "gw-1", &batch).await;
    assert!(wait_acked(&mut a, 7, &want, &mut BTreeSet::new(), WAIT).await, "the alarms were not stored");
}

/// `report alarm-load` for 2026-03-05 as JSON, from the store of config `toml`.
fn report_json(toml: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["report", "alarm-load", "--format", "json", "--from", "2026-03-05", "--to", "2026-03-06", "--config"])
        .arg(toml)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_load_from_published_alarms_is_the_same_in_the_api_the_command_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    init_logs();
    let server = pki.leaf("localhost");
    let toml = dir.path().join("collector.toml");
    std::fs::write(&toml, config_text(dir.path(), &server, "")).unwrap();
    import_plant(&toml);
    let cfg = config(dir.path(), &server, "");
    let collector = topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap();
    publish_alarms(&collector, &pki).await;

    let (addr, _) = http_support::spawn(&cfg).await;
    let window = "from=2026-03-05&to=2026-03-06";
    let served = http_support::get(addr, &format!("/api/v1/alarm-load?{window}")).await;
    assert_eq!(served.status, 200, "{}", served.body);
    let served = served.json();
    let printed = report_json(&toml);
    let rows = objects(&printed);
    assert_eq!(&rows, served["rows"].as_array().unwrap(), "the command and the API differ");

    let get = |crew: &str, figure: &str| -> serde_json::Value {
        rows.iter()
            .find(|r| r["crew"] == crew && r["figure"] == figure)
            .unwrap_or_else(|| panic!("no {crew} {figure} in {rows:?}"))
            .clone()
    };
    let actual = |crew: &str, figure: &str| get(crew, figure)["actual"].as_f64();
    assert_eq!(actual("all", "alarms"), Some(15.0));
    assert_eq!(actual("A", "alarms"), Some(12.0));
    assert_eq!(actual("B", "alarms"), Some(3.0));
    assert_eq!(actual("A", "operators_mean"), Some(2.0));
    assert_eq!(actual("B", "operators_mean"), Some(1.0));
    assert_eq!(actual("A", "per_operator_10min_peak"), Some(5.0));
    assert_eq!(actual("B", "per_operator_10min_peak"), Some(3.0));
    // 12 / 2 over 72 day windows; 3 / 1 over 72 night windows; both over 144.
    assert_eq!(actual("A", "per_operator_10min_mean"), Some(0.083));
    assert_eq!(actual("all", "per_operator_10min_mean"), Some(0.063));
    assert_eq!(actual("A", "per_operator_hour_peak"), Some(6.0));
    assert_eq!(actual("all", "flood_windows_pct"), Some(0.0));
    assert_eq!(actual("all", "chattering_alarms"), Some(1.0));
    assert_eq!(get("all", "chattering_alarms")["detail"], "plant-a/press-1/F1");
    assert_eq!(get("B", "chattering_alarms")["status"], "not_met");
    assert_eq!(get("all", "per_operator_10min_mean")["target"], "≤ 1");
    assert_eq!(get("all", "per_operator_10min_mean")["status"], "ok");
    // The attributes crossed the wire: 12 low-priority activations acknowledged 30 s after they were raised.
    assert_eq!(actual("all", "priority_unknown_pct"), Some(20.0));
    assert_eq!(actual("all", "priority_low_pct"), Some(100.0));
    assert_eq!(actual("all", "priority_high_pct"), Some(0.0));
    assert_eq!(get("all", "priority_low_pct")["status"], "not_met");
    assert_eq!(actual("all", "acked_pct"), Some(80.0));
    assert_eq!(actual("all", "ack_time_median_s"), Some(30.0));
    let notes = printed["notes"].to_string();
    assert!(notes.contains("3 of 15 activations carry no priority"), "{notes}");

    // The page shows the same figures, in words, with the target beside them.
    let page = http_support::get(addr, &format!("/alarm-load?{window}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alarms per operator per 10 min, mean"), "{}", page.body);
    assert!(page.body.contains("≤ 1") && page.body.contains("plant-a/press-1/F1"));
}

/// The same published alarms give the same alarm-load report from a PostgreSQL store as from a SQLite one,
/// and the same `alarm_events` view rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_load_over_postgres_equals_sqlite_for_the_same_published_alarms() {
    init_logs();
    let pg = support::pg::PgCluster::start(false);
    let name = "alarm_load";
    pg.create_db(name);
    let (lite, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pki = Pki::new(lite.path(), "plant");
    let server = pki.leaf("localhost");
    let (lite_toml, pg_toml) = (lite.path().join("collector.toml"), shared.path().join("collector.toml"));
    std::fs::write(&lite_toml, config_text(lite.path(), &server, "")).unwrap();
    std::fs::write(&pg_toml, pg.with_store(&config_text(shared.path(), &server, ""), name)).unwrap();
    for toml in [&lite_toml, &pg_toml] {
        import_plant(toml);
        let text = std::fs::read_to_string(toml).unwrap();
        let cfg = shiftlens_collector::Config::from_file(&shiftlens_common::config::ConfigFile::from_text(
            toml.clone(),
            text,
        ))
        .unwrap();
        let collector = topology::start(&cfg, feed::no_lines()).await.unwrap();
        publish_alarms(&collector, &pki).await;
        collector.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
    }
    let (from_lite, from_pg) = (report_json(&lite_toml), report_json(&pg_toml));
    let alarms = objects(&from_pg).into_iter().find(|r| r["crew"] == "all" && r["figure"] == "alarms").unwrap();
    assert_eq!(alarms["actual"].as_f64(), Some(15.0));
    assert_eq!(objects(&from_lite), objects(&from_pg));
    assert_eq!(from_lite["notes"], from_pg["notes"]);

    // The view for BI tools: the same rows (booleans as 0/1 for the comparison).
    let conn = shiftlens_collector::store::open_reader(&lite.path().join("collector.db")).unwrap();
    let mut st = conn
        .prepare(
            "SELECT seq, ts_ms, alarm_id, active, severity, coalesce(priority, ''), coalesce(acked, ''),
                    coalesce(shelved, '') FROM alarm_events ORDER BY seq",
        )
        .unwrap();
    let want: Vec<String> = st
        .query_map([], |r| {
            let v: Vec<String> = (0..8)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            Ok(v.join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let got = pg.psql(
        name,
        "SELECT seq, ts_ms, alarm_id, active::int, severity, coalesce(priority, ''), coalesce(acked::int::text, ''),
                coalesce(shelved::int::text, '') FROM shiftlens.alarm_events ORDER BY seq",
    );
    assert_eq!(want.len(), 30);
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}
