//! Debounce over the wire: a chattering alarm bit in the simulated plant, read over real Modbus TCP and
//! OPC UA sockets by the agent's sources and detector. The same bit is read twice: once without debounce
//! (it must show the chatter, or the test would prove nothing) and once with a 2 s debounce (it must stay
//! quiet through the chatter and report the held clear once, stamped when the held value was first seen).
#![allow(clippy::unwrap_used)]

use shiftlens_agent::health::Health;
use shiftlens_agent::{Config, Observation};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::EventBody;
use shiftlens_sim::modbus::ModbusServer;
use shiftlens_sim::opcua::{node_id, serve, OpcUaOptions};
use shiftlens_sim::plant::Plant;
use std::time::Duration;
use tokio::sync::mpsc;

const HEADER: &str = "site = \"plant1\"\ngateway = \"gw1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n";

/// The two readings of the alarm word's bit 0: `RAW` undebounced, `GUARD` with a 2 s debounce.
const MEANINGS: [(&str, &str); 2] = [
    ("alarms-raw", r#"{ alarm_word = { bits = { 0 = { id = "RAW" } } } }"#),
    ("alarms", r#"{ alarm_word = { bits = { 0 = { id = "GUARD" } }, debounce = "2s" } }"#),
];
const DEBOUNCE_MS: i64 = 2000;

/// Generous: the wait ends with the observation.
const WAIT: Duration = Duration::from_secs(60);

use shiftlens_common::clock::now_ms;

fn alarm(o: &Observation, id: &str) -> Option<bool> {
    match &o.body {
        EventBody::Alarm(a) if a.id == id => Some(a.active),
        _ => None,
    }
}

/// Starts the sources of `config` and returns their observations.
fn spawn(config: &Config) -> mpsc::Receiver<Observation> {
    let (tx, rx) = mpsc::channel(1024);
    let tasks = shiftlens_agent::source::spawn_all(config, tx, Health::default());
    assert!(!tasks.is_empty());
    rx
}

/// The alarm is set before the source connects, so both readings report it at once (a point's first value
/// counts without debounce). Then bit 0 of press1's alarm word chatters, then it is held clear, and each
/// reading's reports are checked.
async fn chatter_then_hold(plant: &Plant, rx: &mut mpsc::Receiver<Observation>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut raw, mut guard) = (false, false);
    while !(raw && guard) {
        let o = next(rx, deadline).await;
        raw |= alarm(&o, "RAW") == Some(true);
        guard |= alarm(&o, "GUARD") == Some(true);
    }
    // Chatter: 12 phases of 80 ms, clear first and set last. No clear phase comes near the 2 s debounce.
    for i in 0..12 {
        plant.update("press1", |p| p.alarms = u16::from(i % 2 == 1));
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let hold_ms = now_ms();
    plant.update("press1", |p| p.alarms = 0);

    let mut raw_clears_before_hold = 0;
    let (ts_ms, active, seen_ms) = loop {
        let o = next(rx, deadline).await;
        if alarm(&o, "RAW") == Some(false) && o.ts_ms < hold_ms {
            raw_clears_before_hold += 1;
        }
        if let Some(active) = alarm(&o, "GUARD") {
            break (o.ts_ms, active, now_ms());
        }
    };
    assert!(raw_clears_before_hold >= 1, "the undebounced reading never saw the chatter");
    assert!(!active, "the debounced reading's next event is the held clear, not a chatter edge");
    // Counted from when the held value was first seen, and reported only after holding 2 s. A counted chatter
    // edge would be stamped 320 ms or more before the hold; the tolerance covers a reading that missed the
    // last 80 ms set phase (a loaded machine, an OPC UA sampling slot), whose clear then began 160 ms earlier.
    assert!(ts_ms >= hold_ms - 210, "debounced clear stamped {} ms before the hold began", hold_ms - ts_ms);
    assert!(seen_ms - ts_ms >= DEBOUNCE_MS - 100, "reported after only {} ms", seen_ms - ts_ms);
}

async fn next(rx: &mut mpsc::Receiver<Observation>, deadline: tokio::time::Instant) -> Observation {
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(o)) => o,
        Ok(None) => panic!("the sources ended"),
        Err(_) => panic!("nothing within {WAIT:?}"),
    }
}

fn point_lines(prefix: &str, address: &str) -> String {
    MEANINGS
        .iter()
        .map(|(name, meaning)| {
            format!("\n[[{prefix}.points]]\nname = \"{name}\"\nasset = \"press1\"\n{address}\nmeaning = {meaning}\n")
        })
        .collect()
}

#[tokio::test]
async fn a_chattering_modbus_bit_is_debounced() {
    let plant = Plant::new(["press1"]);
    plant.update("press1", |p| p.alarms = 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant.clone(), listener).unwrap();
    // The sim's asset block 0: the alarm word is holding register 2.
    let text = format!(
        "{HEADER}\n[[modbus]]\nid = \"plc1\"\naddress = \"{}\"\nunit = 1\npoll = \"20ms\"\ntimeout = \"1s\"\n{}",
        server.local_addr(),
        point_lines("modbus", "table = \"holding\"\naddress = 2\ntype = \"u16\"")
    );
    let config = Config::from_file(&ConfigFile::from_text("agent.toml", text)).unwrap();
    let mut rx = spawn(&config);
    chatter_then_hold(&plant, &mut rx).await;
}

#[tokio::test]
async fn a_chattering_opcua_value_is_debounced() {
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    plant.update("press1", |p| p.alarms = 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = OpcUaOptions { poll_interval: Duration::from_millis(20), ..OpcUaOptions::default() };
    let server = serve(plant.clone(), listener, &dir.path().join("server"), &options).await.unwrap();
    let text = format!(
        "{HEADER}\n[[opcua]]\nid = \"plc1\"\nendpoint = \"{}\"\npki_dir = {:?}\nsecurity_policy = \"none\"\n\
         security_mode = \"none\"\n{}",
        server.endpoint_url(),
        dir.path().join("agent").display().to_string(),
        point_lines("opcua", &format!("node = \"{}\"\nsampling = \"20ms\"", node_id("press1", "alarms")))
    );
    let config = Config::from_file(&ConfigFile::from_text("agent.toml", text)).unwrap();
    let mut rx = spawn(&config);
    chatter_then_hold(&plant, &mut rx).await;
}
