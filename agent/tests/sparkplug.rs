//! The agent as a Sparkplug B edge node, checked against Mosquitto and Eclipse Tahu's own decoder
//! (`sparkplug-payload`, run by `tests/sparkplug/decode.js`): every payload decodes, births declare every
//! metric, aliases resolve; rebirth on NCMD; bdSeq continues across a restart; NDEATH as last will of a killed
//! agent; store-and-forward while the primary host is offline, then a birth and the backlog as historical.
//!
//! Needs Node.js and `npm ci` in `tests/sparkplug` (`.ci/run` does both).
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;
use shiftlens_agent::topology::Agent;
use shiftlens_agent::Observation;
use shiftlens_common::sparkplug::proto::{Metric, Payload};
use shiftlens_common::sparkplug::{self as sp, metric};
use shiftlens_common::{Alarm, AssetId, EventBody, MachineState};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sparkplug");
    assert!(
        dir.join("node_modules/sparkplug-payload").is_dir(),
        "Eclipse Tahu's packages are missing: run `npm ci` in {} (.ci/run does)",
        dir.display()
    );
    dir
}

/// Tahu's decoder as a child process; every message it decoded, as JSON.
struct Decoder {
    child: Child,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Decoder {
    async fn start(port: u16) -> Self {
        let dir = interop_dir();
        let mut child = Command::new("node")
            .arg(dir.join("decode.js"))
            .arg(format!("mqtt://127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                s.lock().unwrap().push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        let d = Self { child, seen };
        wait_for("Tahu's decoder to subscribe", LONG, || {
            d.seen.lock().unwrap().iter().any(|v| v["subscribed"] == true)
        })
        .await;
        d
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|v| v["type"] == kind).cloned().collect()
    }

    fn all(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|v| v["topic"].is_string()).cloned().collect()
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sparkplug_config(dir: &std::path::Path, port: u16, host: Option<&str>) -> shiftlens_agent::Config {
    let host = host.map(|h| format!("host_id = {h:?}\n")).unwrap_or_default();
    agent_config(
        dir,
        &format!("mqtt://127.0.0.1:{port}"),
        &format!("protocol = \"sparkplug\"\n[uplink.sparkplug]\ngroup_id = \"plant-a\"\n{host}"),
        "",
    )
}

fn state(asset: &str, n: i64, s: MachineState) -> Observation {
    Observation {
        ts_ms: 1_700_000_000_000 + n,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::State { state: s, reason: (s == MachineState::Down).then(|| format!("jam {n}")) },
    }
}

fn alarm_event(asset: &str, n: i64, id: &str, active: bool) -> Observation {
    Observation {
        ts_ms: 1_700_000_000_000 + n,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::Alarm(Alarm {
            id: id.into(),
            active,
            severity: 700,
            text: "Guard open".into(),
            class: None,
            ..Default::default()
        }),
    }
}

fn depth(agent: &Agent) -> u64 {
    agent.outbox.lock().unwrap().stats().unwrap().depth
}

fn bd_seq(v: &Value) -> Option<i64> {
    v["metrics"].as_array()?.iter().find(|m| m["name"] == metric::BD_SEQ)?["value"].as_i64()
}

/// A plain MQTT client for publishing STATE and commands.
fn publisher(port: u16) -> AsyncClient {
    let o = MqttOptions::new(format!("pub-{}", rand::random::<u32>()), "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tahu_decodes_every_payload_births_declare_every_metric_and_aliases_resolve() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let decoder = Decoder::start(broker.port).await;
    let agent = Agent::start(&sparkplug_config(dir.path(), broker.port, None)).await.unwrap();
    let states = [MachineState::Running, MachineState::Down, MachineState::Idle, MachineState::Planned];
    let mut sent = 0;
    for n in 0..400i64 {
        let asset = ASSETS[(n % 4) as usize];
        let o = if n % 3 == 0 {
            alarm_event(asset, n, &format!("A{}", n % 5), n % 2 == 0)
        } else {
            state(asset, n, states[(n % 4) as usize])
        };
        agent.observations.send(o).await.unwrap();
        sent += 1;
    }
    let data_events = || decoder.of("DDATA").iter().map(|v| v["metrics"].as_array().unwrap().len()).sum::<usize>();
    // A state event is two metrics (state and reason), an alarm one.
    let expected = (0..400).map(|n| if n % 3 == 0 { 1 } else { 2 }).sum::<usize>();
    wait_for("every DDATA metric at Tahu's decoder", LONG, || data_events() >= expected).await;
    wait_for("an empty outbox (deleted on PUBACK)", LONG, || depth(&agent) == 0).await;
    assert_eq!(sent, 400);

    let all = decoder.all();
    for v in &all {
        assert!(v.get("error").is_none(), "Tahu could not decode: {v}");
        assert!(v.get("unresolved").is_none(), "an alias no birth declared: {v}");
    }
    let nbirth = &decoder.of("NBIRTH")[0];
    assert_eq!(nbirth["seq"], 0);
    assert_eq!(bd_seq(nbirth), Some(0), "a new outbox starts at bdSeq 0");
    // Births declare every metric a DDATA uses, per device.
    let mut declared: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in decoder.of("DBIRTH") {
        let device = b["topic"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        let names = b["metrics"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string());
        declared.entry(device).or_default().extend(names);
        assert!(b["metrics"].as_array().unwrap().iter().all(|m| m["alias"].is_number()));
    }
    assert_eq!(declared.keys().cloned().collect::<BTreeSet<_>>(), ASSETS.iter().map(|a| a.to_string()).collect());
    for names in declared.values() {
        for m in [metric::STATE, metric::REASON, metric::CONNECTED] {
            assert!(names.contains(m), "{names:?}");
        }
    }
    let mut last_state: BTreeMap<String, String> = BTreeMap::new();
    for d in decoder.of("DDATA") {
        let device = d["topic"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        for m in d["metrics"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            assert!(declared[&device].contains(name), "{device}: {name} used before a birth declared it");
            if name == metric::STATE {
                last_state.insert(device.clone(), m["value"].as_str().unwrap().to_string());
            }
        }
    }
    // The last state of each asset is the last one produced.
    for (i, asset) in ASSETS.iter().enumerate() {
        let n = (0..400).rev().find(|n| n % 4 == i && n % 3 != 0).unwrap();
        assert_eq!(last_state[*asset], states[n % 4].as_str(), "{asset}");
    }
    // seq runs 0, 1, 2, ... modulo 256 from each NBIRTH over every message of the node (a new alarm id
    // brings a new birth).
    let mut expected = 0;
    for v in all.iter().filter(|v| v["type"] != "STATE") {
        if v["type"] == "NBIRTH" {
            expected = 0;
        }
        assert_eq!(v["seq"].as_i64(), Some(expected), "seq of {v}");
        expected = (expected + 1) % 256;
    }
    agent.shutdown().await.unwrap();
    wait_for("the NDEATH of a clean stop", LONG, || decoder.of("NDEATH").len() == 1).await;
    assert_eq!(bd_seq(&decoder.of("NDEATH")[0]), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebirth_command_is_answered_with_a_new_birth_and_bd_seq_continues_across_a_restart() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let decoder = Decoder::start(broker.port).await;
    let config = sparkplug_config(dir.path(), broker.port, None);
    let agent = Agent::start(&config).await.unwrap();
    agent.observations.send(state("press-1", 1, MachineState::Down)).await.unwrap();
    wait_for("the first birth and data", LONG, || !decoder.of("DDATA").is_empty()).await;
    let cmd = sp::encode(&Payload {
        timestamp: Some(1),
        metrics: vec![Metric::boolean(Some(metric::REBIRTH), None, 1, Some(true))],
        ..Default::default()
    });
    // The first DDATA may follow one birth or two (a birth before the first event declared no device).
    let (n, d) = (decoder.of("NBIRTH").len(), decoder.of("DBIRTH").len());
    publisher(broker.port).publish("spBv1.0/plant-a/NCMD/gw-1", QoS::AtLeastOnce, false, cmd).await.unwrap();
    wait_for("a new NBIRTH", LONG, || decoder.of("NBIRTH").len() == n + 1).await;
    wait_for("its DBIRTH", LONG, || decoder.of("DBIRTH").len() == d + 1).await;
    let births = decoder.of("NBIRTH");
    assert_eq!(births[n]["seq"], 0);
    assert_eq!(bd_seq(&births[n]), bd_seq(&births[0]), "a rebirth keeps the session's bdSeq");
    // The new DBIRTH carries the current state.
    let db = &decoder.of("DBIRTH")[d];
    let s = db["metrics"].as_array().unwrap().iter().find(|m| m["name"] == metric::STATE).unwrap().clone();
    assert_eq!(s["value"], "down");

    agent.shutdown().await.unwrap();
    wait_for("NDEATH", LONG, || decoder.of("NDEATH").len() == 1).await;
    let agent = Agent::start(&config).await.unwrap();
    wait_for("the NBIRTH after the restart", LONG, || decoder.of("NBIRTH").len() == n + 2).await;
    assert_eq!(bd_seq(&decoder.of("NBIRTH")[n + 1]), Some(1), "bdSeq is kept in the outbox and goes on");
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_primary_host_is_offline_then_follow_a_birth_as_historical() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let decoder = Decoder::start(broker.port).await;
    let host = publisher(broker.port);
    // A host of the Sparkplug 2.2 kind says OFFLINE (retained) before the agent starts.
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, "OFFLINE").await.unwrap();
    wait_for("the retained STATE", LONG, || !decoder.of("STATE").is_empty()).await;
    let agent = Agent::start(&sparkplug_config(dir.path(), broker.port, Some("scada"))).await.unwrap();
    for n in 0..50 {
        agent.observations.send(state("press-1", n, MachineState::ALL[(n % 4) as usize])).await.unwrap();
    }
    wait_for("50 events in the outbox", LONG, || depth(&agent) == 50).await;
    assert!(decoder.of("NBIRTH").is_empty() && decoder.of("DDATA").is_empty(), "published while the host was offline");

    // The host comes back (Sparkplug 3.0 JSON): a birth, then the backlog in order, historical.
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, sp::state_json(true, 1)).await.unwrap();
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    let states = |from: usize| -> Vec<(String, bool)> {
        decoder.of("DDATA")[from..]
            .iter()
            .flat_map(|d| d["metrics"].as_array().unwrap().clone())
            .filter(|m| m["name"] == metric::STATE)
            .map(|m| (m["value"].as_str().unwrap().to_string(), m["historical"] == true))
            .collect()
    };
    wait_for("the backlog at Tahu's decoder", LONG, || states(0).len() >= 50).await;
    let backlog = states(0);
    assert_eq!(backlog.len(), 50);
    assert!(backlog.iter().all(|(_, h)| *h), "the backlog is historical");
    let produced: Vec<String> = (0..50).map(|n| MachineState::ALL[n % 4].as_str().to_string()).collect();
    assert_eq!(backlog.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(), produced, "in order");
    let all = decoder.all();
    let first_data = all.iter().position(|v| v["type"] == "DDATA").unwrap();
    let birth = all.iter().position(|v| v["type"] == "NBIRTH").unwrap();
    assert!(birth < first_data, "the birth comes before the backlog");

    // Offline again, events, online again: a new birth, and every event arrives.
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, sp::state_json(false, 2)).await.unwrap();
    wait_for("the host offline", LONG, || decoder.of("STATE").len() >= 3).await;
    for n in 50..60 {
        agent.observations.send(state("press-1", n, MachineState::Down)).await.unwrap();
    }
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, sp::state_json(true, 3)).await.unwrap();
    wait_for("a second birth", LONG, || decoder.of("NBIRTH").len() == 2).await;
    wait_for("all 60 states", LONG, || states(0).len() >= 60).await;
    wait_for("an empty outbox again", LONG, || depth(&agent) == 0).await;
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_gets_its_ndeath_from_the_broker_as_last_will() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let decoder = Decoder::start(broker.port).await;
    let config = write_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port));
    let text = std::fs::read_to_string(&config).unwrap()
        + "protocol = \"sparkplug\"\n[uplink.sparkplug]\ngroup_id = \"plant-a\"\n";
    std::fs::write(&config, text).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the NBIRTH", LONG, || !decoder.of("NBIRTH").is_empty()).await;
    assert!(decoder.of("NDEATH").is_empty());
    agent.kill().unwrap();
    agent.wait().unwrap();
    wait_for("the NDEATH the broker publishes for the dead agent", LONG, || !decoder.of("NDEATH").is_empty()).await;
    assert_eq!(bd_seq(&decoder.of("NDEATH")[0]), bd_seq(&decoder.of("NBIRTH")[0]), "NDEATH names the session's bdSeq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_while_the_broker_was_down_follow_a_new_session_with_the_next_bd_seq() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), "");
    let decoder = Decoder::start(broker.port).await;
    let host = publisher(broker.port);
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, sp::state_json(true, 1)).await.unwrap();
    let agent = Agent::start(&sparkplug_config(dir.path(), broker.port, Some("scada"))).await.unwrap();
    let states = |d: &Decoder| -> Vec<String> {
        d.of("DDATA")
            .iter()
            .flat_map(|v| v["metrics"].as_array().unwrap().clone())
            .filter(|m| m["name"] == metric::STATE)
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect()
    };
    let produced = |n: i64| MachineState::ALL[(n % 4) as usize];
    for n in 0..100 {
        agent.observations.send(state("press-1", n, produced(n))).await.unwrap();
    }
    wait_for("the first 100 states", LONG, || states(&decoder).len() == 100).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;

    broker.kill();
    for n in 100..300 {
        agent.observations.send(state("press-1", n, produced(n))).await.unwrap();
    }
    wait_for("the events of the outage in the outbox", LONG, || depth(&agent) == 200).await;
    broker.restart();
    // Retained messages died with the broker: the agent waits for the host's STATE; the decoder is back first.
    let subscribed = || decoder.seen.lock().unwrap().iter().filter(|v| v["subscribed"] == true).count();
    wait_for("Tahu's decoder subscribed again", LONG, || subscribed() == 2).await;
    let host = publisher(broker.port);
    host.publish("spBv1.0/STATE/scada", QoS::AtLeastOnce, true, sp::state_json(true, 2)).await.unwrap();
    wait_for("all 300 states", LONG, || states(&decoder).len() >= 300).await;
    wait_for("an empty outbox again", LONG, || depth(&agent) == 0).await;
    let got = states(&decoder);
    let want: Vec<String> = (0..300).map(|n| produced(n).as_str().to_string()).collect();
    assert_eq!(got, want, "every state once, in order");
    // The first session's births (a new asset brings a second one) carry bdSeq 0, the next session's 1.
    let mut bd: Vec<i64> = decoder.of("NBIRTH").iter().filter_map(bd_seq).collect();
    bd.dedup();
    assert_eq!(bd, [0, 1], "a new session takes the next bdSeq");
    agent.shutdown().await.unwrap();
}
