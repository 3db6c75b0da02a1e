//! The collector as a Sparkplug B host application, fed by an edge node ShiftLens did not write: Eclipse
//! Tahu's `sparkplug-client` (driven by `tests/sparkplug/edge.js`) connects to the embedded broker (port 0,
//! plaintext on loopback: the gate takes the identity from the client id), publishes births, data and deaths,
//! and its machine states become downtime through the `[[sparkplug.map]]` table. A seq gap gets a rebirth
//! request that Tahu's client receives; an NDEATH marks the node's assets unknown.
//!
//! Needs Node.js and `npm ci` in `tests/sparkplug` (`.ci/run` does both).
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use shiftlens_collector::{feed, topology, Config};
use shiftlens_common::config::ConfigFile;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const WAIT_S: u64 = 60;

fn collector_config(dir: &Path) -> Config {
    let text = format!(
        r#"
[broker]
listen = "127.0.0.1:0"

[store]
path = "{}"

[http]
bind = "127.0.0.1:0"

[sparkplug]
host_id = "shiftlens"
groups = ["plant-a"]

[[sparkplug.map]]
metric = "Status"
state = {{ 0 = "idle", 1 = "running", 2 = "down" }}

[[sparkplug.map]]
metric = "Faults/Jam"
alarm = "JAM"
severity = 700
text = "Infeed jam"
class = "mechanical"
"#,
        dir.join("collector.db").display()
    );
    Config::from_file(&ConfigFile::from_text(dir.join("collector.toml"), text)).unwrap()
}

/// Tahu's sparkplug-client as an edge node in a child process.
struct Edge {
    child: Child,
    stdin: ChildStdin,
    said: Arc<Mutex<Vec<Value>>>,
}

impl Edge {
    fn start(port: u16, node: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sparkplug");
        assert!(
            dir.join("node_modules/sparkplug-client").is_dir(),
            "Eclipse Tahu's packages are missing: run `npm ci` in {} (.ci/run does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("edge.js"))
            .args([&format!("mqtt://127.0.0.1:{port}"), "plant-a", node, &format!("plant-a.{node}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let said: Arc<Mutex<Vec<Value>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let s = said.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                s.lock().unwrap().push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
        });
        let stdin = child.stdin.take().unwrap();
        Self { child, stdin, said }
    }

    fn send(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn count(&self, what: &Value) -> usize {
        self.said.lock().unwrap().iter().filter(|v| v.as_object().is_some_and(|o| matches(o, what))).count()
    }

    /// Sends a command and waits until the edge node has published it.
    async fn run(&mut self, command: Value) {
        let done = json!({"event": "done", "op": command["op"]});
        let before = self.count(&done);
        self.send(command.clone());
        assert!(eventually(WAIT_S, || self.count(&done) > before).await, "edge node did not run {command}");
    }
}

fn matches(o: &serde_json::Map<String, Value>, what: &Value) -> bool {
    what.as_object().unwrap().iter().all(|(k, v)| o.get(k) == Some(v))
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metrics(ts: i64, status: i32, jam: bool) -> Value {
    json!([
        {"name": "Status", "type": "Int32", "value": status, "timestamp": ts},
        {"name": "Faults/Jam", "type": "Boolean", "value": jam, "timestamp": ts},
    ])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tahu_edge_node_s_machine_states_become_downtime_and_its_death_makes_them_unknown() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let collector = topology::start(&collector_config(dir.path()), feed::no_lines()).await.unwrap();
    let port = collector.broker.unwrap().port();
    let mut edge = Edge::start(port, "line-3");
    assert!(eventually(WAIT_S, || edge.count(&json!({"event": "connected"})) == 1).await, "Tahu did not connect");
    let t0 = now_ms() - 600_000;
    edge.run(json!({"op": "birth", "device": "press-7", "metrics": metrics(t0, 1, false)})).await;
    edge.run(json!({"op": "ddata", "device": "press-7", "metrics": metrics(t0 + 60_000, 2, true)})).await;
    edge.run(json!({"op": "ddata", "device": "press-7", "metrics": metrics(t0 + 180_000, 1, false)})).await;
    let closed = "SELECT COUNT(*) FROM downtime WHERE site = 'plant-a' AND asset = 'press-7' AND gateway = 'line-3' \
                  AND end_ms IS NOT NULL";
    assert!(eventually(WAIT_S, || count(&db, closed) == 1).await, "no downtime from the Sparkplug states");
    let ttr = count(&db, "SELECT end_ms - start_ms FROM downtime WHERE asset = 'press-7'");
    assert_eq!(ttr, 120_000, "the stop lasts from the DDATA down to the DDATA running");
    let first_out = count(&db, "SELECT COUNT(*) FROM downtime WHERE asset = 'press-7' AND first_out LIKE '%JAM%'");
    assert_eq!(first_out, 1, "the mapped alarm is the stop's first-out");
    assert_eq!(count(&db, "SELECT online FROM gateways WHERE site = 'plant-a' AND gateway = 'line-3'"), 1);

    // Down again, then the edge node dies: the open stop gets a data gap, the gateway is offline.
    edge.run(json!({"op": "ddata", "device": "press-7", "metrics": metrics(t0 + 300_000, 2, false)})).await;
    let open = "SELECT COUNT(*) FROM downtime WHERE asset = 'press-7' AND end_ms IS NULL";
    assert!(eventually(WAIT_S, || count(&db, open) == 1).await);
    edge.run(json!({"op": "stop"})).await;
    let offline = "SELECT COUNT(*) FROM gateways WHERE site = 'plant-a' AND gateway = 'line-3' AND online = 0";
    assert!(eventually(WAIT_S, || count(&db, offline) == 1).await, "NDEATH did not mark the node offline");
    let gap = "SELECT COUNT(*) FROM downtime WHERE asset = 'press-7' AND end_ms IS NULL AND data_gap = 1";
    assert!(eventually(WAIT_S, || count(&db, gap) == 1).await, "the asset is not unknown after NDEATH");
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_gets_a_rebirth_request_that_tahu_s_client_receives() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let collector = topology::start(&collector_config(dir.path()), feed::no_lines()).await.unwrap();
    let port = collector.broker.unwrap().port();
    let mut edge = Edge::start(port, "line-4");
    assert!(eventually(WAIT_S, || edge.count(&json!({"event": "connected"})) == 1).await, "Tahu did not connect");
    let t0 = now_ms() - 600_000;
    edge.run(json!({"op": "birth", "device": "oven-1", "metrics": metrics(t0, 1, false)})).await;
    let events = "SELECT COUNT(*) FROM events WHERE gateway = 'line-4'";
    assert!(eventually(WAIT_S, || count(&db, events) == 2).await);
    // Messages lost between the edge node and the host: the next seq is not the one expected.
    edge.run(json!({"op": "raw_seq", "seq": 40})).await;
    edge.run(json!({"op": "ddata", "device": "oven-1", "metrics": metrics(t0 + 1_000, 2, false)})).await;
    let rebirth = json!({"event": "ncmd", "rebirth": true});
    assert!(eventually(WAIT_S, || edge.count(&rebirth) == 1).await, "no NCMD rebirth request reached the edge node");
    assert_eq!(count(&db, events), 2, "data after a seq gap is not used");
    // The edge node answers with a new birth; its data is taken again.
    edge.run(json!({"op": "birth", "device": "oven-1", "metrics": metrics(t0 + 2_000, 2, false)})).await;
    edge.run(json!({"op": "ddata", "device": "oven-1", "metrics": metrics(t0 + 3_000, 1, false)})).await;
    assert!(eventually(WAIT_S, || count(&db, events) == 6).await, "events after the rebirth: {}", count(&db, events));
    assert!(eventually(WAIT_S, || count(&db, "SELECT COUNT(*) FROM downtime WHERE asset = 'oven-1'") == 1).await);
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}
