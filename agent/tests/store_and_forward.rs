//! Store-and-forward against real brokers: the outbox (SQLite files) and the uplink (MQTT) lose nothing
//! when the broker goes down, forgets messages, or the agent is killed; the outbox bound drops the oldest
//! events with a gap; mTLS lets the right client in and nobody else.
#![allow(clippy::unwrap_used)]

mod helpers;

use helpers::*;
use shiftlens_agent::outbox::{Outbox, OutboxConfig};
use shiftlens_agent::topology::Agent;
use shiftlens_agent::uplink::mqtt::Params;
use shiftlens_common::{EventBody, GapReason};
use std::io::BufRead;
use std::time::Duration;

/// Deadline of every wait: generous for a loaded machine, since a wait ends as soon as its condition holds.
const LONG: Duration = Duration::from_secs(60);

fn depth(agent: &Agent) -> u64 {
    agent.outbox.lock().unwrap().stats().unwrap().depth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_after_the_broker_was_down() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), "");
    let collector = Collector::start(broker.port);
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port), "", "");
    let agent = Agent::start(&config).await.unwrap();
    const N: u64 = 30_000;
    // The broker dies with most of the first part undelivered; the rest is produced while it is down, so the
    // backlog does not depend on how far the producer got before the first deliveries (a loaded machine).
    const FIRST: u64 = 10_000;
    let producer = tokio::spawn(produce(agent.observations.clone(), 0, FIRST, 200));

    wait_for("first deliveries", LONG, || collector.count() >= 2_000).await;
    broker.kill();
    let before = depth(&agent);
    producer.await.unwrap();
    produce(agent.observations.clone(), FIRST, N - FIRST, 200).await;
    wait_for("a backlog while the broker is down", LONG, || depth(&agent) >= before + 5_000).await;
    broker.restart();
    wait_for("all events at the collector", LONG, || collector.count() as u64 >= N).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;

    let r = std::mem::take(&mut *collector.received.lock().unwrap());
    assert_complete(&r, N);
    assert_eq!(r.epochs.len(), 1);
    assert_eq!(r.keys.len() as u64, N);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_restarted_broker_forgot_are_sent_again() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), "");
    // A collector with a persistent session goes away: the broker queues its messages, unread.
    let absent = Collector::start_with(broker.port, "collector-persistent", false, true);
    wait_for("the persistent subscription", LONG, || absent.received.lock().unwrap().subscribed).await;
    absent.stop();
    let spy = Collector::spy(broker.port);
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port), "", "");
    let agent = Agent::start(&config).await.unwrap();
    const N: u64 = 5_000;
    produce(agent.observations.clone(), 0, N, 500).await;
    wait_for("the broker to hold every event", LONG, || spy.count() as u64 >= N).await;
    assert_eq!(depth(&agent), N, "nothing is deleted before the collector confirms it");

    broker.restart(); // no persistence: the queued messages are gone
    let collector = Collector::start_with(broker.port, "collector-persistent", false, true);
    wait_for("all events at the collector", LONG, || collector.count() as u64 >= N).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    assert_complete(&collector.received.lock().unwrap(), N);
    spy.stop();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_the_oldest_and_the_gap_is_delivered() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let port = start_rumqttd();
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "", "max_bytes = \"1MiB\"");
    let agent = Agent::start(&config).await.unwrap();
    const N: u64 = 40_000; // about 3 MB stored: three times the bound
    produce(agent.observations.clone(), 0, N, 1_000).await;
    let mut committed = agent.committed.clone();
    wait_for("all committed", LONG, || *committed.borrow_and_update() >= N).await;
    let stats = agent.outbox.lock().unwrap().stats().unwrap();
    assert!(stats.dropped > 0 && stats.bytes <= 1 << 20, "{stats:?}");

    let collector = Collector::start(port);
    // `committed` counts the gaps' seqs too, so it reached N before the last events were committed: wait
    // for the newest event itself, so that `last` below is final.
    wait_for("the newest event at the collector", LONG, || collector.received.lock().unwrap().has_counter(N - 1)).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    let last = *agent.committed.borrow();
    let r = std::mem::take(&mut *collector.received.lock().unwrap());
    let gaps = r.gaps();
    assert!(!gaps.is_empty() && gaps.iter().all(|g| g.2 == GapReason::OutboxFull), "{gaps:?}");
    assert!(r.covers(last), "every seq arrived or is named by a gap");
    let dropped: u64 = gaps.iter().map(|&(a, b, _)| b - a + 1).sum();
    assert!(dropped >= stats.dropped, "gaps name {dropped} seqs, the outbox counted {}", stats.dropped);
    // The newest events survive, in order.
    let counters: Vec<u64> = r.counters_by_asset().into_values().flatten().collect();
    assert!(counters.contains(&(N - 1)));
    agent.shutdown().await.unwrap();
}

/// The child side of the SIGKILL test: runs an agent with a producer and prints every committed seq.
#[test]
fn child_agent_process() {
    let Ok(dir) = std::env::var("SHIFTLENS_CHILD_DIR") else { return };
    let port = std::env::var("SHIFTLENS_CHILD_PORT").unwrap();
    let first: u64 = std::env::var("SHIFTLENS_CHILD_FIRST").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let config = agent_config(std::path::Path::new(&dir), &format!("mqtt://127.0.0.1:{port}"), "", "");
        let agent = Agent::start(&config).await.unwrap();
        println!("epoch {}", agent.epoch);
        let mut committed = agent.committed.clone();
        if first != u64::MAX {
            tokio::spawn(produce(agent.observations.clone(), first, 1_000_000, 200));
        }
        while committed.changed().await.is_ok() {
            let seq = *committed.borrow_and_update();
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "committed {seq}");
            let _ = out.flush();
        }
    });
}

fn spawn_child(
    dir: &std::path::Path,
    port: u16,
    first: u64,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_agent_process", "--exact", "--nocapture", "--test-threads=1"])
        .env("SHIFTLENS_CHILD_DIR", dir)
        .env("SHIFTLENS_CHILD_PORT", port.to_string())
        .env("SHIFTLENS_CHILD_FIRST", first.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_under_load_loses_nothing_it_committed() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let port = start_rumqttd();
    let collector = Collector::start(port);
    let mut committed = 0u64;
    let mut epochs = std::collections::BTreeSet::new();
    for run in 0..8u64 {
        let (mut child, lines) = spawn_child(dir.path(), port, run * 1_000_000);
        // Kill after a few commits and a varying number of events, so that the kill lands in different phases
        // and the backlog left for the last run is bounded: commit groups grow on a loaded machine, and
        // counting commits alone left 200k events to drain (more than a minute there).
        let base = committed;
        let mut commits = 0;
        while commits < 3 || committed < base + 1_000 * (run + 1) {
            let line = lines.recv_timeout(LONG).expect("the child agent reports commits");
            // The test harness may print on the same line before the child's first output.
            if let Some(seq) = line.split("committed ").nth(1) {
                committed = committed.max(seq.trim().parse().unwrap());
                commits += 1;
            } else if let Some(e) = line.split("epoch ").nth(1) {
                epochs.insert(e.trim().to_string());
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert_eq!(epochs.len(), 1, "the outbox keeps its epoch across restarts");
    // A last run without load drains what is left.
    let (mut child, _lines) = spawn_child(dir.path(), port, u64::MAX);
    wait_for("every committed seq at the collector", LONG, || collector.received.lock().unwrap().covers(committed))
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let r = std::mem::take(&mut *collector.received.lock().unwrap());
    assert!(r.gaps().is_empty(), "nothing was dropped");
    assert_eq!(r.epochs.len(), 1);
    // Every produced counter that arrived did so under one seq only.
    let mut counters: Vec<u64> = r.counters_by_asset().into_values().flatten().collect();
    let n = counters.len();
    counters.sort_unstable();
    counters.dedup();
    assert_eq!(counters.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_survived_and_the_loss_is_recorded_as_a_gap() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let port = start_rumqttd();
    // A small memory bound, so that the outage outlasts it.
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "", "memory_bytes = \"64KiB\"");
    let agent = Agent::start(&config).await.unwrap();
    let collector = Collector::start(port);
    produce(agent.observations.clone(), 0, 1_000, 1_000).await;
    wait_for("first events delivered", LONG, || collector.count() >= 1_000).await;
    // Simulate a full device: the database may not grow by a single page.
    {
        let o = agent.outbox.lock().unwrap();
        let pages: u64 = std::fs::metadata(o.path()).unwrap().len() / 4096;
        o.set_max_page_count(pages.max(1)).unwrap();
    }
    produce(agent.observations.clone(), 1_000, 20_000, 1_000).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // at least one failed retry
    let committed_during = *agent.committed.borrow();
    agent.outbox.lock().unwrap().set_max_page_count(1 << 30).unwrap();
    produce(agent.observations.clone(), 21_000, 1_000, 1_000).await;
    // The commit after the outage alone moves `committed` past `committed_during + 1_000` (the lost events'
    // seqs are reserved), so wait for the newest event itself before reading the final `committed`.
    wait_for("the newest event at the collector", LONG, || collector.received.lock().unwrap().has_counter(21_999))
        .await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    let last = *agent.committed.borrow();
    let r = std::mem::take(&mut *collector.received.lock().unwrap());
    let gaps = r.gaps();
    eprintln!("committed during the outage {committed_during}, last {last}, gaps {gaps:?}");
    assert!(gaps.iter().any(|g| g.2 == GapReason::StorageFailed), "{gaps:?}");
    assert!(r.covers(last));
    let counters: Vec<u64> = r.counters_by_asset().into_values().flatten().collect();
    let lost: u64 = gaps.iter().map(|&(a, b, _)| b - a + 1).sum();
    assert_eq!(counters.len() as u64 + lost, 22_000, "received + recorded as lost = produced");
    agent.shutdown().await.unwrap();
}

#[test]
fn a_corrupt_or_unwritable_outbox_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let e = Outbox::open(&OutboxConfig::at(&garbage)).err().unwrap().to_string();
    assert!(e.contains("garbage.db") && e.contains("not a database"), "{e}");
    let e = Outbox::open(&OutboxConfig::at(dir.path().join("missing/dir/outbox.db"))).err().unwrap().to_string();
    assert!(e.starts_with("cannot open outbox") && e.contains("missing/dir"), "{e}");
    let e = Outbox::open(&OutboxConfig::at(dir.path())).err().unwrap().to_string();
    assert!(e.starts_with("cannot open outbox"), "{e}");
}

#[test]
fn seqs_are_never_reused_and_the_epoch_stays_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig::at(dir.path().join("o.db"));
    let mut o = Outbox::open(&config).unwrap();
    let epoch = o.epoch();
    let a = o.append(&[alarm("press-1", 0), alarm("press-1", 1)], 0).unwrap();
    assert_eq!(a.last_seq, 2);
    assert_eq!(o.delete(&[(0, 100)]).unwrap(), 2);
    drop(o);
    let mut o = Outbox::open(&config).unwrap();
    assert_eq!(o.epoch(), epoch);
    assert_eq!(o.append(&[alarm("press-1", 2)], 0).unwrap().last_seq, 3);
    let events = o.read_after(0, 10, 1 << 20).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let other = Outbox::open(&OutboxConfig::at(dir.path().join("other.db"))).unwrap();
    assert_ne!(other.epoch(), epoch);
}

#[test]
fn the_latest_state_of_each_asset_is_found_for_sending_first() {
    use shiftlens_common::{AssetId, MachineState};
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(&OutboxConfig::at(dir.path().join("o.db"))).unwrap();
    let state = |asset: &str, state| shiftlens_agent::Observation {
        ts_ms: 1,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::State { state, reason: None },
    };
    o.append(
        &[
            state("a", MachineState::Running),
            alarm("a", 1),
            state("b", MachineState::Down),
            state("a", MachineState::Idle),
            alarm("b", 2),
        ],
        0,
    )
    .unwrap();
    let latest = o.latest_states(100).unwrap();
    assert_eq!(latest.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(o.stats().unwrap().depth, 5);
}

fn tls_options(
    port: u16,
    ca: &std::path::Path,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> rumqttc::MqttOptions {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = format!("ca = {:?}\n", ca.display().to_string());
    match cert {
        Some((c, k)) => {
            extra += &format!("cert = {:?}\nkey = {:?}\n", c.display().to_string(), k.display().to_string())
        }
        None => extra += "insecure = true\n",
    }
    let config = agent_config(dir.path(), &format!("mqtts://localhost:{port}"), &extra, "");
    Params { config: config.uplink, site: config.site, gateway: config.gateway }.mqtt_options().unwrap()
}

/// Connects once; Ok when the broker accepted the session.
async fn try_connect(options: rumqttc::MqttOptions) -> Result<(), String> {
    shiftlens_agent::uplink::mqtt::install_crypto_provider();
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    // TLS handshake and CONNACK: generous for a loaded machine.
    match tokio::time::timeout(LONG, eventloop.poll()).await {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => {
            // TLS 1.3 reports a refused client certificate only on the next read.
            match tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await {
                Ok(Err(e)) => Err(e.to_string()),
                _ => Ok(()),
            }
        }
        Ok(other) => Err(format!("{other:?}")),
        Err(_) => Err("timeout".into()),
    }
}

/// Mosquitto with an mTLS listener (returned port) besides the plaintext loopback one.
fn tls_broker(dir: &std::path::Path, pki: &Pki) -> (Mosquitto, u16) {
    let broker = Mosquitto::start_with_listener(dir, |tls_port| {
        format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        )
    });
    let tls_port = broker.extra_port.unwrap();
    (broker, tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_the_right_client_certificate_delivers_events() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (broker, tls_port) = tls_broker(dir.path(), &pki);
    let collector = Collector::start(broker.port); // the collector side uses the plaintext loopback listener
    let extra = format!(
        "ca = {:?}\ncert = {:?}\nkey = {:?}\n",
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string()
    );
    let config = agent_config(dir.path(), &format!("mqtts://localhost:{tls_port}"), &extra, "");
    let agent = Agent::start(&config).await.unwrap();
    produce(agent.observations.clone(), 0, 1_000, 500).await;
    wait_for("events over mTLS", LONG, || collector.count() >= 1_000).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    assert_complete(&collector.received.lock().unwrap(), 1_000);
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_is_refused_without_a_certificate_or_with_a_wrong_ca() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (_broker, port) = tls_broker(dir.path(), &pki);
    let good = tls_options(port, &pki.ca, Some((&pki.client_cert, &pki.client_key)));
    assert_eq!(try_connect(good).await, Ok(()), "the right certificate is accepted");
    let none = tls_options(port, &pki.ca, None);
    assert!(try_connect(none).await.is_err(), "no client certificate");
    let impostor = tls_options(port, &pki.ca, Some((&pki.other_client_cert, &pki.other_client_key)));
    assert!(try_connect(impostor).await.is_err(), "client certificate from another CA");
    let wrong_ca = tls_options(port, &pki.other_ca, Some((&pki.client_cert, &pki.client_key)));
    let e = try_connect(wrong_ca).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
}

#[test]
fn unreadable_tls_files_fail_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "ca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n";
    let config = agent_config(dir.path(), "mqtts://broker.example:8883", extra, "");
    let e = Params { config: config.uplink, site: config.site, gateway: config.gateway }.mqtt_options().unwrap_err();
    assert!(e.to_string().starts_with("cannot read CA file /nonexistent/ca.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_announces_itself_and_sigterm_stops_it_cleanly_offline() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let (status, _task) = watch_status(broker.port);
    let config = write_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port));
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the birth status", LONG, || status.lock().unwrap().iter().any(|s| s.online && s.epoch != 0)).await;
    let heartbeats = status.lock().unwrap().len();
    wait_for("a heartbeat", LONG, || status.lock().unwrap().len() > heartbeats).await;
    let term = std::process::Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    assert!(term.success());
    let exit = tokio::task::spawn_blocking(move || agent.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    wait_for("the offline status", LONG, || status.lock().unwrap().last().is_some_and(|s| !s.online)).await;

    // SIGKILL: the broker publishes the last will.
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("online again", LONG, || status.lock().unwrap().last().is_some_and(|s| s.online)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    wait_for("the last will", LONG, || status.lock().unwrap().last().is_some_and(|s| !s.online)).await;
}

#[test]
fn check_prints_every_config_error_located_and_exits_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "site = \"plant-a\"\ngateway = \"gw-1\"\n[outbox]\nmax_bytes = \"1KiB\"\n[uplink]\nbroker = \"mqtt://10.0.0.9\"\n")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].ends_with("agent.toml:4:13: outbox max_bytes must be at least 1MiB"), "{stderr}");
    assert!(lines[1].contains("agent.toml:6:10: plaintext MQTT to 10.0.0.9 is refused"), "{stderr}");
    let good = write_config(dir.path(), "mqtt://127.0.0.1:1883");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The heartbeat lists every configured source: a reachable Modbus device as connected until the sim drops
/// it, then as lost with the reason; an unreachable one as not connected with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_shows_each_source_connected_and_lost_after_the_sim_drops() {
    use shiftlens_common::status::{SourceHealth, Status};
    use shiftlens_sim::modbus::ModbusServer;
    use shiftlens_sim::plant::{Faults, Plant};
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let (status, _task) = watch_status(broker.port);
    let plant = Plant::new(["press-1"]);
    plant.update("press-1", |p| p.state = 1);
    let server =
        ModbusServer::start(plant.clone(), tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
    let device = |id: &str, addr: &str| {
        format!(
            "[[modbus]]\nid = \"{id}\"\naddress = \"{addr}\"\nunit = 1\npoll = \"50ms\"\ntimeout = \"200ms\"\n\
             backoff_max = \"400ms\"\n[[modbus.points]]\nname = \"state\"\nasset = \"press-1\"\ntable = \"holding\"\n\
             address = 0\ntype = \"u16\"\nmeaning = {{ state = {{ codes = {{ 0 = \"idle\", 1 = \"running\" }} }} }}\n"
        )
    };
    let devices = format!(
        "\n{}{}",
        device("plc1", &server.local_addr().to_string()),
        device("plc-nowhere", &format!("127.0.0.1:{}", free_port()))
    );
    // The uplink section is the last one, so the devices follow it.
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port), &devices, "");
    let agent = Agent::start(&config).await.unwrap();
    let sources = shiftlens_agent::source::spawn_all(&config, agent.observations.clone(), agent.health.clone());
    let src = |s: &Status, id: &str| -> Option<SourceHealth> { s.sources.iter().find(|h| h.id == id).cloned() };
    let last = || status.lock().unwrap().last().cloned();

    // The two devices report independently: wait for a heartbeat that has seen both.
    wait_for("a heartbeat with plc1 connected and plc-nowhere failed", LONG, || {
        last().is_some_and(|s| {
            s.online
                && src(&s, "plc1").is_some_and(|h| h.connected && h.error.is_none())
                && src(&s, "plc-nowhere").is_some_and(|h| h.error.is_some())
        })
    })
    .await;
    let s = last().unwrap();
    assert!(s.clock_ok, "{s:?}");
    let nowhere = src(&s, "plc-nowhere").unwrap();
    assert!(!nowhere.connected && nowhere.error.as_deref().is_some_and(|e| e.contains("cannot connect")), "{s:?}");

    plant.set_faults(Faults { drop_connections: true, ..Faults::default() });
    drop(server);
    wait_for("a heartbeat with plc1 lost", LONG, || {
        last().is_some_and(|s| src(&s, "plc1").is_some_and(|h| !h.connected && h.error.is_some()))
    })
    .await;
    assert_eq!(last().unwrap().sources.len(), 2);

    for s in &sources {
        s.abort();
    }
    for s in sources {
        let _ = s.await;
    }
    agent.shutdown().await.unwrap();
}

/// Sends [`toggle`] states `first..first+count`.
async fn produce_toggles(agent: &Agent, first: u64, count: u64) {
    for n in first..first + count {
        agent.observations.send(toggle(n)).await.unwrap();
    }
}

type BySeq = std::collections::BTreeMap<u64, shiftlens_common::Event>;

/// Seq → event over what two collectors received; panics on a seq seen with two contents.
fn merged(a: BySeq, b: BySeq) -> BySeq {
    let mut all = a;
    for (seq, e) in b {
        if let Some(old) = all.get(&seq) {
            assert_eq!(old, &e, "seq {seq} with two contents");
        }
        all.insert(seq, e);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_lost_the_dictionary_asks_for_it_and_gets_every_event_once() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let first = Collector::start(broker.port);
    wait_for("the subscription", LONG, || first.received.lock().unwrap().subscribed).await;
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port), "", "");
    let agent = Agent::start(&config).await.unwrap();
    produce_toggles(&agent, 0, 400).await;
    wait_for("the first part delivered and confirmed", LONG, || depth(&agent) == 0 && first.count() == 400).await;
    assert_eq!(first.received.lock().unwrap().versions, [3].into(), "the dictionary form by default");

    // The collector restarts and knows no dictionary; the agent's MQTT session goes on.
    let got_first = first.received.lock().unwrap().events.clone();
    first.stop();
    let second = Collector::start(broker.port);
    wait_for("the new subscription", LONG, || second.received.lock().unwrap().subscribed).await;
    produce_toggles(&agent, 400, 400).await;
    wait_for("the second part delivered and confirmed", LONG, || depth(&agent) == 0 && second.count() >= 400).await;
    assert!(second.received.lock().unwrap().dictionary_requests >= 1, "the new collector asked for the dictionary");

    let all = merged(got_first, second.received.lock().unwrap().events.clone());
    assert_eq!(all.len(), 800);
    for (i, (seq, e)) in all.iter().enumerate() {
        let t = toggle(i as u64);
        assert_eq!((*seq, e.ts_ms, &e.asset, &e.body), (i as u64 + 1, t.ts_ms, &t.asset, &t.body), "event {i}");
    }
    second.stop();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_plain_sends_version_2_batches_for_an_older_collector() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    let collector = Collector::start(broker.port);
    wait_for("the subscription", LONG, || collector.received.lock().unwrap().subscribed).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let agent = Agent::start(&agent_config(dir.path(), &url, "encoding = \"plain\"", "")).await.unwrap();
    produce_toggles(&agent, 0, 100).await;
    wait_for("everything delivered and confirmed", LONG, || depth(&agent) == 0 && collector.count() == 100).await;
    assert_eq!(collector.received.lock().unwrap().versions, [2].into());
    collector.stop();
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_splitting_the_batches_make_the_agent_fall_back_to_plain_batches() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "");
    // Both members of one shared subscription: the broker hands each batch to one of them, so neither holds
    // the whole dictionary.
    let (a, b) = (Collector::shared(broker.port, "shiftlens"), Collector::shared(broker.port, "shiftlens"));
    wait_for("both subscriptions", LONG, || {
        a.received.lock().unwrap().subscribed && b.received.lock().unwrap().subscribed
    })
    .await;
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{}", broker.port), "", "");
    let agent = Agent::start(&config).await.unwrap();
    for chunk in 0..20 {
        produce_toggles(&agent, chunk * 20, 20).await;
        let delivered = || {
            let (ra, rb) = (a.received.lock().unwrap(), b.received.lock().unwrap());
            ra.events.keys().chain(rb.events.keys()).collect::<std::collections::BTreeSet<_>>().len() as u64
        };
        wait_for("the chunk delivered and confirmed", LONG, || delivered() == (chunk + 1) * 20 && depth(&agent) == 0)
            .await;
    }
    let (ra, rb) = (std::mem::take(&mut *a.received.lock().unwrap()), std::mem::take(&mut *b.received.lock().unwrap()));
    let requests = (ra.dictionary_requests, rb.dictionary_requests);
    assert!(requests.0 + requests.1 >= 3, "the collectors asked for the dictionary: {requests:?}");
    assert!(ra.versions.contains(&2) || rb.versions.contains(&2), "plain batches after the fallback");
    let all = merged(ra.events, rb.events);
    assert_eq!(all.len(), 400);
    for (i, (seq, e)) in all.iter().enumerate() {
        let t = toggle(i as u64);
        assert_eq!((*seq, e.ts_ms, &e.asset, &e.body), (i as u64 + 1, t.ts_ms, &t.asset, &t.body), "event {i}");
    }
    a.stop();
    b.stop();
    agent.shutdown().await.unwrap();
}
