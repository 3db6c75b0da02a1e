//! `shiftlens-agent status` and the metrics endpoint against the real binary: a simulated PLC whose alarm word
//! keeps changing, a real Mosquitto that is killed and started again, and a collector that acks. `status`
//! shows the backlog growing while the broker is down and draining after it is back, the endpoint serves the
//! same figures, and once the agent is stopped (cleanly or killed) `status` says so and exits 1.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use shiftlens_sim::modbus::ModbusServer;
use shiftlens_sim::plant::Plant;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Guard of every wait (each ends as soon as its condition holds).
const LONG: Duration = Duration::from_secs(60);

const AGENT: &str = env!("CARGO_BIN_EXE_shiftlens-agent");

/// What one `status` run printed, and whether it said the agent runs (exit 0).
#[derive(Debug)]
struct Screen {
    running: bool,
    code: Option<i32>,
    text: String,
}

impl Screen {
    fn backlog(&self) -> Option<u64> {
        let line = self.text.lines().find(|l| l.starts_with("backlog"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The sources table lists plc1 as connected.
    fn plc_connected(&self) -> bool {
        self.text.lines().any(|l| l.contains(" plc1 ") && l.trim_end().ends_with("connected"))
    }

    fn has(&self, s: &str) -> bool {
        self.text.contains(s)
    }
}

fn status(config: &Path) -> Screen {
    let out = Command::new(AGENT).args(["status", "--config"]).arg(config).output().unwrap();
    assert!(out.stderr.is_empty(), "status wrote to stderr: {}", String::from_utf8_lossy(&out.stderr));
    Screen {
        running: out.status.success(),
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// `GET /metrics` on the agent's endpoint: `(name with labels, value)` of every sample.
fn metrics(port: u16) -> Vec<(String, f64)> {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return Vec::new() };
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn metric(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// An alarm word of `press-1` at holding register 2, one alarm per bit.
fn device(addr: std::net::SocketAddr) -> String {
    let bits: Vec<String> = (0..16).map(|b| format!("{b} = {{ id = \"A{b}\" }}")).collect();
    format!(
        "\n[[modbus]]\nid = \"plc1\"\naddress = \"{addr}\"\nunit = 1\npoll = \"20ms\"\ntimeout = \"5s\"\n\
         [[modbus.points]]\nname = \"alarms\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 2\ntype = \"u16\"\n\
         meaning = {{ alarm_word = {{ bits = {{ {} }} }} }}\n",
        bits.join(", ")
    )
}

/// The agent config: uplink to `broker`, state file every 200 ms, backlog alert above 1 s of age, metrics on
/// `metrics_port`, then the PLC.
fn config(dir: &Path, broker: &str, metrics_port: u16, plc: std::net::SocketAddr, health_extra: &str) -> PathBuf {
    let path = write_config(dir, broker);
    let mut text = std::fs::read_to_string(&path).unwrap();
    // Quick resends: after the broker's restart the agent may publish before the collector has subscribed again.
    text.push_str("ack_timeout = \"2s\"\n");
    text.push_str(&format!(
        "\n[health]\nstate_interval = \"200ms\"\noutbox_alert_age = \"1s\"\nlisten = \"127.0.0.1:{metrics_port}\"\n{health_extra}"
    ));
    text.push_str(&device(plc));
    std::fs::write(&path, text).unwrap();
    path
}

/// The running agent; killed when dropped, so a failing test leaves no process behind.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(config: &Path, log: &Path) -> Agent {
    let child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Agent(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_backlog_growing_while_the_broker_is_down_and_draining_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path(), "");
    let collector = Collector::start(mosquitto.port);
    wait_for("the collector's subscription", LONG, || collector.received.lock().unwrap().subscribed).await;
    let plant = Plant::new(["press-1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant.clone(), listener).unwrap();
    let metrics_port = free_port();
    let broker = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    let config = config(dir.path(), &broker, metrics_port, server.local_addr(), "");
    let log_path = dir.path().join("agent.log");
    let mut agent = run(&config, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Up and delivering: connected, the PLC connected, nothing unsent.
    let mut last = None;
    wait_for("status: running, connected, nothing unsent", LONG, || {
        let s = status(&config);
        // The PLC's first events were confirmed (there was an ack) and nothing is left.
        let ok = s.running
            && s.has("uplink     CONNECTED")
            && s.plc_connected()
            && !s.has("last ack: never")
            && s.backlog() == Some(0);
        last = Some(s);
        ok
    })
    .await;
    let s = last.take().unwrap();
    eprintln!("{}", s.text);
    assert!(s.has(&broker) && s.has("plant-a/gw-1") && s.has("clock      ok"), "{}", s.text);
    wait_for("metrics: connected, nothing unsent", LONG, || {
        let m = metrics(metrics_port);
        metric(&m, "shiftlens_agent_uplink_connected") == Some(1.0)
            && metric(&m, "shiftlens_agent_outbox_events") == Some(0.0)
            && metric(&m, "shiftlens_agent_source_connected{source=\"plc1\"}") == Some(1.0)
    })
    .await;

    // The broker dies while the plant keeps changing: the backlog grows, and status says why.
    mosquitto.kill();
    let stop = Arc::new(AtomicBool::new(false));
    let changer = {
        let (plant, stop) = (plant.clone(), stop.clone());
        std::thread::spawn(move || {
            for k in 1..=u16::MAX {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                plant.update("press-1", |p| p.alarms = k);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut first = 0;
    wait_for("status: not connected, a backlog", LONG, || {
        let s = status(&config);
        // Right after the kill the reason is still "connection lost"; the first reconnect then says "refused".
        let ok = s.running
            && s.has("uplink     NOT CONNECTED")
            && s.has("reason: connection refused")
            && s.backlog().is_some_and(|b| b > 0);
        first = s.backlog().unwrap_or(0);
        last = Some(s);
        ok
    })
    .await;
    let s = last.take().unwrap();
    eprintln!("{}", s.text);
    assert!(s.has("reason: connection refused: nothing listens on 127.0.0.1:"), "{}", s.text);
    assert!(s.has("action: check that the collector (or broker) runs"), "{}", s.text);
    let mut grown = 0;
    wait_for("status: the backlog growing", LONG, || {
        grown = status(&config).backlog().unwrap_or(0);
        grown >= first + 50
    })
    .await;
    eprintln!("backlog {first} -> {grown} while the broker is down");
    wait_for("metrics: not connected, a backlog", LONG, || {
        let m = metrics(metrics_port);
        metric(&m, "shiftlens_agent_uplink_connected") == Some(0.0)
            && metric(&m, "shiftlens_agent_outbox_events").is_some_and(|n| n >= grown as f64)
            && metric(&m, "shiftlens_agent_uplink_connect_failures_total").is_some_and(|n| n >= 1.0)
            && metric(&m, "shiftlens_agent_outbox_oldest_age_seconds").is_some_and(|a| a > 0.0)
    })
    .await;
    assert!(log().contains("broker connection lost"), "{}", log());
    // Events wait longer than outbox_alert_age: an ERROR, the alert on the status screen and in the metrics.
    wait_for("the backlog ERROR", LONG, || {
        log().lines().any(|l| l.contains("ERROR") && l.contains("outbox backlog over the alert threshold"))
    })
    .await;
    let line = log().lines().find(|l| l.contains("outbox backlog over the alert threshold")).unwrap().to_string();
    assert!(line.contains("the oldest unsent event is") && line.contains("alert above 1s"), "{line}");
    wait_for("status and metrics: the alert", LONG, || {
        status(&config).has("ALERT: the oldest unsent event is")
            && metric(&metrics(metrics_port), "shiftlens_agent_outbox_alert") == Some(1.0)
    })
    .await;

    // The broker is back: the backlog drains to nothing.
    stop.store(true, Ordering::SeqCst);
    changer.join().unwrap();
    mosquitto.restart();
    wait_for("status: connected again, nothing unsent", LONG, || {
        let s = status(&config);
        let ok = s.running && s.has("uplink     CONNECTED") && s.backlog() == Some(0);
        last = Some(s);
        ok
    })
    .await;
    eprintln!("{}", last.take().unwrap().text);
    wait_for("metrics: connected, drained", LONG, || {
        let m = metrics(metrics_port);
        metric(&m, "shiftlens_agent_uplink_connected") == Some(1.0)
            && metric(&m, "shiftlens_agent_outbox_events") == Some(0.0)
    })
    .await;
    assert!(log().contains("connected to broker again; delivery resumes"), "{}", log());
    wait_for("the alert cleared", LONG, || log().contains("outbox backlog back under the alert thresholds")).await;
    assert!(collector.count() as u64 > grown, "the collector got the backlog");

    // A clean stop: status says the agent is not running, still shows the outbox, and exits 1.
    assert!(Command::new("kill").args(["-TERM", &agent.0.id().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || agent.0.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "{exit:?}\n{}", log());
    let s = status(&config);
    assert!(!s.running && s.code == Some(1), "{s:?}");
    assert!(s.text.starts_with("agent      NOT RUNNING  the agent stopped cleanly"), "{}", s.text);
    assert_eq!(s.backlog(), Some(0), "{}", s.text);
    collector.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_a_killed_agent_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press-1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant, listener).unwrap();
    // Nothing listens on the broker port: events stay in the outbox.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let broker = format!("mqtt://127.0.0.1:{}", refusing.local_addr().unwrap().port());
    // The state file somewhere else than next to the outbox: agent and status both follow the config.
    let state_file = dir.path().join("run").join("agent.state.json");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let extra = format!("state_file = {:?}\n", state_file.display().to_string());
    let config = config(dir.path(), &broker, free_port(), server.local_addr(), &extra);
    let mut agent = run(&config, &dir.path().join("agent.log"));
    let before = status(&config);
    wait_for("status: running with a backlog", LONG, || {
        let s = status(&config);
        s.running && s.backlog().is_some_and(|b| b > 0)
    })
    .await;
    let pid = agent.0.id();
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let s = status(&config);
    eprintln!("{}", s.text);
    assert!(!s.running && s.code == Some(1), "{s:?}");
    assert!(s.text.starts_with(&format!("agent      NOT RUNNING  process {pid} is gone")), "{}", s.text);
    assert!(s.backlog().is_some_and(|b| b > 0), "the outbox is still read:\n{}", s.text);
    // Before the agent had written its first state file, status said so too (or it was already running).
    assert!(before.running || before.has("NOT RUNNING"), "{before:?}");
    assert!(state_file.exists() && !dir.path().join("outbox.state.json").exists());
}

#[test]
fn status_without_a_state_file_says_the_agent_has_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "mqtt://127.0.0.1:1883");
    let s = status(&config);
    assert!(!s.running && s.code == Some(1), "{s:?}");
    assert!(s.has("NOT RUNNING  no state file"), "{}", s.text);
    assert!(s.has("outbox.state.json"), "{}", s.text);
    assert!(s.has("does not exist"), "{}", s.text);
}
