//! What the collector believes after the agent crashed while the collector was down too: the real
//! `shiftlens-agent` and `shiftlens-collector` binaries (embedded broker, mutual TLS) and the simulated PLC in
//! this process, whose values the test sets while the agent is dead.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use shiftlens_e2e::*;
use shiftlens_sim::modbus::ModbusServer;
use shiftlens_sim::plant::Plant;
use std::path::Path;

/// press-1's state (holding 0), reason (1) and alarm word (2) on the sim's Modbus server.
const DEVICE: &str = r#"
[[modbus]]
id = "plc-line1"
address = "@MODBUS@"
unit = 1
poll = "100ms"
timeout = "1s"
backoff_max = "1s"

[[modbus.points]]
name = "press-1.state"
asset = "press-1"
table = "holding"
address = 0
type = "u16"
meaning = { state = { codes = { 0 = "idle", 1 = "running", 2 = "down", 3 = "planned" } } }

[[modbus.points]]
name = "press-1.reason"
asset = "press-1"
table = "holding"
address = 1
type = "u16"
meaning = { reason = { codes = { 12 = "hydraulic pressure", 21 = "drive trip" } } }

[[modbus.points]]
name = "press-1.alarms"
asset = "press-1"
table = "holding"
address = 2
type = "u16"
meaning = { alarm_word = { bits = { 0 = { id = "ESTOP", text = "Emergency stop" }, 1 = { id = "DRIVE-FAULT", text = "Drive fault" } } } }
"#;

const ESTOP: u16 = 1;
const DRIVE_FAULT: u16 = 2;

/// Starts the agent gw-line1 (the demo's uplink section, `DEVICE` as its only source) on `collector`'s broker.
fn spawn_gateway(dir: &Path, collector: &Collector, modbus: &str) -> Proc {
    let demo = std::fs::read_to_string(config_dir().join("demo/gw-line1.toml")).unwrap();
    let uplink = &demo[..demo.find("[[modbus]]").unwrap()];
    let port = collector.broker.port().to_string();
    let vars = [("DIR", dir.to_string_lossy().into_owned()), ("BROKER_PORT", port), ("MODBUS", modbus.to_string())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = dir.join("gw-line1.toml");
    std::fs::write(&config, fill(&format!("{uplink}{DEVICE}"), &vars)).unwrap();
    Proc::spawn("gw-line1", &bins().agent, &["run", "--config", &config.to_string_lossy()])
}

/// One downtime record as (start, end, state, reason, data_gap).
type Record = (String, Value, String, Value, bool);

/// press-1's downtime records.
fn records(collector: &Collector) -> Option<Vec<Record>> {
    let v = try_get_json(collector.http, "/api/v1/downtime?site=plant-a&asset=press-1")?;
    let rows = v.as_array()?.iter().filter(|r| r["asset"] == "press-1");
    Some(
        rows.map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("start"), r["end"].clone(), s("state"), r["reason"].clone(), r["data_gap"] == true)
        })
        .collect(),
    )
}

/// Alarm activations of press-1 as the alarm-load report counts them, and how many DRIVE-FAULT clears the
/// collector stored, read from its database.
fn alarms(dir: &Path) -> (usize, i64) {
    let conn = shiftlens_collector::store::open_reader(&dir.join("collector.db")).unwrap();
    let starts = shiftlens_collector::store::people::alarm_starts(&conn, i64::MIN, i64::MAX).unwrap();
    let clears = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE asset = 'press-1' AND kind = 'alarm'
             AND json_extract(body, '$.alarm.id') = 'DRIVE-FAULT' AND json_extract(body, '$.alarm.active') = 0",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    (starts.iter().filter(|a| a.asset == "press-1").count(), clears)
}

/// The agent is killed (SIGKILL) while the collector is down, so no last will and no offline status reach
/// anyone; meanwhile the stop ends, another one starts and one of two active alarms clears. After both restart:
/// the stop seen before the crash ends where the agent stopped observing, the new stop is a record of its own,
/// both with `data_gap`; the alarm that cleared is cleared in the collector and the one still active is counted
/// once. Before the agent kept a record of its runs and of what it reported, the two stops were one record
/// without `data_gap`, the drive fault stayed active and the e-stop was counted twice.
#[test]
fn a_crash_while_the_collector_is_down_leaves_a_gap_and_restarts_report_only_alarm_changes() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), SITE, &["gw-line1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plant = Plant::new(["press-1"]);
    plant.update("press-1", |p| (p.state, p.reason, p.alarms) = (2, 12, ESTOP | DRIVE_FAULT));
    let server = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ModbusServer::start(plant.clone(), listener).unwrap()
    });
    let modbus = server.local_addr().to_string();

    let collector = spawn_collector(dir.path());
    let agent = spawn_gateway(dir.path(), &collector, &modbus);
    let first = wait_until(WAIT, "press-1's stop open in the collector and both alarms stored", || {
        let r = records(&collector)?;
        (r.len() == 1 && r[0].2 == "open" && alarms(dir.path()).0 == 2).then(|| r[0].0.clone())
    });

    // The collector dies first (its broker with it), then the agent, by SIGKILL; the plant changes meanwhile.
    let config = collector.config.clone();
    drop(collector);
    drop(agent);
    plant.update("press-1", |p| (p.state, p.reason) = (1, 0));
    plant.update("press-1", |p| (p.state, p.reason, p.alarms) = (2, 21, ESTOP));

    let collector = run_collector(&config);
    let _agent = spawn_gateway(dir.path(), &collector, &modbus);
    let got = wait_until(WAIT, "two stop records of press-1 and the drive fault's clear", || {
        let r = records(&collector)?;
        (r.len() == 2 && alarms(dir.path()).1 >= 1).then_some(r)
    });
    let (before, after) = (&got[0], &got[1]);
    assert_eq!(before.0, first, "{got:?}");
    assert_eq!(
        (before.2.as_str(), &before.3, before.4),
        ("closed", &Value::from("hydraulic pressure"), true),
        "{got:?}"
    );
    assert_eq!((after.2.as_str(), &after.3, after.4), ("open", &Value::from("drive trip"), true), "{got:?}");
    assert!(
        before.1.as_str().is_some_and(|end| end <= after.0.as_str()),
        "the first stop ends before the second: {got:?}"
    );
    assert_eq!(alarms(dir.path()), (2, 1), "e-stop and drive fault activated once each, the drive fault cleared once");
}
