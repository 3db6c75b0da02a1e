//! The agent as a whole against the simulated plant: the real `shiftlens-agent` binary stopped by SIGTERM
//! while the plant changes, `probe` and `trust` as an operator runs them, and Modbus devices behind one
//! address sharing one TCP connection.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use shiftlens_agent::outbox::{Outbox, OutboxConfig};
use shiftlens_agent::topology::Agent;
use shiftlens_common::{EventBody, MachineState};
use shiftlens_sim::modbus::ModbusServer;
use shiftlens_sim::plant::Plant;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Deadline of every wait: generous for a loaded machine, since a wait ends as soon as its condition holds.
const LONG: Duration = Duration::from_secs(60);

const AGENT: &str = env!("CARGO_BIN_EXE_shiftlens-agent");

/// A loopback port that refuses connections: bound but never listening, so no other socket can take it.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// A config for the binary (outbox in `dir`, uplink to `broker`) followed by `sources`.
fn config_file(dir: &Path, broker: &str, sources: &str) -> PathBuf {
    let path = write_config(dir, broker);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(sources); // the uplink section is the last one, so the sources follow it
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary to its end without blocking the runtime (the sim serves on it meanwhile).
async fn run_agent(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(AGENT).args(&args).output().unwrap()).await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An alarm word point of `press-1` at holding `address`, bit n named `{prefix}{n}`, for 16 bits.
fn alarm_word_point(name: &str, address: u16, prefix: &str, extra: &str) -> String {
    let bits: Vec<String> = (0..16).map(|b| format!("{b} = {{ id = \"{prefix}{b}\" }}")).collect();
    format!(
        "[[modbus.points]]\nname = \"{name}\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = {address}\n\
         type = \"u16\"\n{extra}meaning = {{ alarm_word = {{ bits = {{ {} }} }} }}\n",
        bits.join(", ")
    )
}

/// SIGTERM while the agent polls a changing plant with the broker down: exit code 0, and the outbox holds
/// every event of every poll the agent had finished, the last one before the signal included, without seq gaps.
///
/// What "had finished" means, from the sim's side: the agent polls one device with one request per poll
/// and sends request n+1 only after the events of answer n are handed to the outbox writer. So if the sim
/// counted R requests in all, the events of answer R-1 were taken in, however close to the signal; and
/// answer R-1 shows at least every plant value set before request R-2 was counted. The plant's alarm word
/// counts up (k = 1, 2, ...), so the alarm events stored must add up to a word of at least the last such k.
/// An agent that dropped queued or uncommitted events on SIGTERM would store an older word (or, cut inside
/// a poll, two words that differ): with SIGKILL in place of SIGTERM this test fails every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_plant_changes_stores_every_event_the_agent_had_read() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press-1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Arc::new(ModbusServer::start(plant.clone(), listener).unwrap());
    let (_broker_down, broker_port) = refusing_port();
    // Holding 2 (alarm word) and 14 (the same word, bytes swapped) in one request: each change makes events
    // for two points. The long timeout keeps a loaded machine from breaking the one-request-per-poll chain.
    let device = format!(
        "\n[[modbus]]\nid = \"plc1\"\naddress = \"{}\"\nunit = 1\npoll = \"2ms\"\ntimeout = \"20s\"\n\
         coalesce_gap = 11\n{}{}",
        server.local_addr(),
        alarm_word_point("alarms", 2, "A", ""),
        alarm_word_point("alarms_swapped", 14, "B", "byte_order = \"little\"\n"),
    );
    let config = config_file(dir.path(), &format!("mqtt://127.0.0.1:{broker_port}"), &device);
    let log_path = dir.path().join("agent.log");
    let mut agent = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The plant changes all along: marks[k - 1] is the sim's request count right after word k was set.
    let marks: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let changer = {
        let (plant, server, marks, stop) = (plant.clone(), server.clone(), marks.clone(), stop.clone());
        std::thread::spawn(move || {
            for k in 1..=u16::MAX {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                plant.update("press-1", |p| p.alarms = k);
                marks.lock().unwrap().push(server.requests());
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let start = server.requests();
    wait_for("a hundred polls", LONG, || server.requests() >= start + 100).await;
    assert!(agent.try_wait().unwrap().is_none(), "the agent ended early:\n{}", log());
    // A disk that stalls: the test holds the outbox's write lock, so the writer's commit waits (SQLite busy
    // timeout, 5 s) and the events of the next polls pile up in memory. SIGTERM lands while they are there,
    // and the lock is released once the agent is stopping.
    let lock = rusqlite::Connection::open(dir.path().join("outbox.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = server.requests();
    wait_for("polls while the outbox is locked", LONG, || server.requests() >= locked + 20).await;
    let term = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    assert!(term.success());
    wait_for("the agent stopping", LONG, || log().contains("stopping: committing queued events")).await;
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let exit = tokio::task::spawn_blocking(move || agent.wait().unwrap()).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    changer.join().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}\n{}", log());
    // Counted after the exit: the agent's last request (sent after the previous answer's events were
    // handed on) is in; one still in flight to the sim only makes the bound below weaker.
    let last_request = server.requests();

    let marks = std::mem::take(&mut *marks.lock().unwrap());
    let written = marks.len() as u64;
    let seen = marks.iter().rposition(|&c| c + 2 <= last_request).map_or(0, |i| i as u64 + 1);
    assert!(seen > 0, "the plant changed before the polls counted");

    let outbox = Outbox::open(&OutboxConfig::at(dir.path().join("outbox.db"))).unwrap();
    let events = outbox.read_after(0, 1_000_000, u64::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "seqs without gaps from 1: {seqs:?}");
    // Replay the alarm events poll by poll (a poll's events share its timestamp): after each poll both
    // words read the same value, and the value only grows.
    let (mut a, mut b, mut last) = (0u16, 0u16, 0u16);
    let mut polls = 0;
    for (i, e) in events.iter().enumerate() {
        match &e.body {
            EventBody::Alarm(alarm) => {
                let (word, bit) = alarm.id.split_at(1);
                let mask = 1u16 << bit.parse::<u16>().unwrap();
                let w = if word == "A" { &mut a } else { &mut b };
                *w = if alarm.active { *w | mask } else { *w & !mask };
            }
            EventBody::Source { connected, error, .. } => {
                assert!(connected, "the link dropped ({error:?}), so a poll may have ended without events");
            }
            EventBody::Gap { .. } => panic!("a gap in the outbox: {e:?}"),
            EventBody::State { .. } => {}
        }
        if events.get(i + 1).is_none_or(|n| n.ts_ms != e.ts_ms) {
            assert_eq!(a, b, "a poll stored in part (seq {})", e.seq);
            assert!(a >= last, "the word went back from {last} to {a} (seq {})", e.seq);
            last = a;
            polls += 1;
        }
    }
    eprintln!(
        "{} events from {polls} polls; plant words 1..={written}, read by request {last_request}: at least \
         {seen}; stored {last}",
        events.len()
    );
    assert!(
        u64::from(last) >= seen,
        "the outbox ends at word {last}, but the agent had read word {seen} or later before SIGTERM\n{}",
        log()
    );
    assert!(u64::from(last) <= written);
}

/// The columns of a `probe` table, cut at the header's column starts (cells may contain spaces).
fn probe_rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(names, ["DEVICE", "ASSET", "POINT", "RAW", "VALUE", "MEANING", "QUALITY"], "{table}");
    let starts: Vec<usize> = names.iter().map(|n| header.find(n).unwrap()).collect();
    lines
        .map(|l| {
            (0..starts.len())
                .map(|i| {
                    let end = starts.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                    l.get(starts[i]..end).unwrap_or("").trim().to_string()
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_the_reachable_device_and_names_the_unreachable_one_with_a_failing_exit_code() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press-1"]);
    plant.update("press-1", |p| {
        p.state = 1;
        p.alarms = 0b1001;
        p.temperature = 21.5;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant.clone(), listener).unwrap();
    let (_refusing, closed) = refusing_port();
    let device = |id: &str, addr: &str| {
        format!(
            "\n[[modbus]]\nid = \"{id}\"\naddress = \"{addr}\"\n\
             [[modbus.points]]\nname = \"state\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n\
             meaning = {{ state = {{ codes = {{ 0 = \"idle\", 1 = \"running\" }} }} }}\n\
             [[modbus.points]]\nname = \"alarms\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 2\ntype = \"u16\"\n\
             meaning = {{ alarm_word = {{ bits = {{ 0 = {{ id = \"GUARD\" }}, 3 = {{ id = \"JAM\" }} }} }} }}\n\
             [[modbus.points]]\nname = \"temperature\"\nasset = \"press-1\"\ntable = \"input\"\naddress = 3\ntype = \"f32\"\n\
             meaning = {{ threshold = {{ id = \"HOT\", above = 80.0 }} }}\n"
        )
    };
    let sources = format!(
        "{}{}",
        device("plc-good", &server.local_addr().to_string()),
        device("plc-gone", &format!("127.0.0.1:{closed}"))
    );
    let config = config_file(dir.path(), "mqtt://127.0.0.1:1883", &sources);
    let out = run_agent(vec!["probe".into(), "--config".into(), config.display().to_string()]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "an unreachable device fails the probe: {:?}\n{stdout}{stderr}", out.status);
    let rows = probe_rows(&stdout);
    let good: Vec<Vec<&str>> =
        rows.iter().filter(|r| r[0] == "plc-good").map(|r| r.iter().map(String::as_str).collect()).collect();
    assert_eq!(
        good,
        [
            ["plc-good", "press-1", "state", "0x0001", "1", "state (codes)", "ok"],
            ["plc-good", "press-1", "alarms", "0x0009", "9", "alarm word (GUARD, JAM)", "ok"],
            ["plc-good", "press-1", "temperature", "0x41ac 0x0000", "21.5", "threshold HOT", "ok"],
        ],
        "\n{stdout}"
    );
    let gone: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "plc-gone").collect();
    assert_eq!(gone.len(), 3, "\n{stdout}");
    assert!(gone.iter().all(|r| r[6].starts_with("unreachable") && r[3] == "-"), "\n{stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("plc-gone") && errors[0].contains("cannot connect"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_through_the_binary_lets_the_next_connect_through() {
    use shiftlens_sim::opcua::{node_id, serve, OpcUaOptions};
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    plant.update("press1", |p| p.state = 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(plant.clone(), listener, &dir.path().join("server"), &OpcUaOptions::default()).await.unwrap();
    let agent_pki = dir.path().join("agent-pki");
    // A long request timeout: `probe` waits three of them for values, and the wait ends with the values.
    let endpoint = format!(
        "\n[[opcua]]\nid = \"plc1\"\nendpoint = \"{}\"\nsecurity_policy = \"basic256sha256\"\n\
         security_mode = \"sign_and_encrypt\"\npki_dir = \"{}\"\nrequest_timeout = \"10s\"\n\
         [[opcua.points]]\nname = \"state\"\nnode = \"{}\"\nasset = \"press1\"\nsampling = \"50ms\"\n\
         meaning = {{ state = {{ codes = {{ 0 = \"idle\", 1 = \"running\", 2 = \"down\" }} }} }}\n",
        server.endpoint_url(),
        agent_pki.display(),
        node_id("press1", "state"),
    );
    let config = config_file(dir.path(), "mqtt://127.0.0.1:1883", &endpoint);
    let cfg = config.display().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Not trusted yet: the probe fails, keeps the certificate and says which command trusts it.
    let out = run_agent(args(&["probe", "--config", &cfg])).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    assert!(stderr.contains(&format!("shiftlens-agent trust --config {cfg} --endpoint plc1")), "{stderr}");
    assert_eq!(std::fs::read_dir(agent_pki.join("rejected")).unwrap().count(), 1);

    let out = run_agent(args(&["trust", "--config", &cfg, "--endpoint", "plc9"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no OPC UA endpoint \"plc9\""), "{}", text(&out.stderr));

    let out = run_agent(args(&["trust", "--config", &cfg, "--endpoint", "plc1"])).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("trusted server certificate") && stdout.contains("moved to"), "{stdout}");
    assert_eq!(std::fs::read_dir(agent_pki.join("rejected")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(agent_pki.join("trusted")).unwrap().count(), 1);

    // Trusted: the agent connects over SignAndEncrypt and reads the point.
    let out = run_agent(args(&["probe", "--config", &cfg])).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let rows = probe_rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!((rows[0][0].as_str(), rows[0][4].as_str(), rows[0][6].as_str()), ("plc1", "2", "ok"), "{stdout}");
    server.stop().await;
}

/// Two devices with different unit ids behind one `ip:port` are polled over one TCP connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_behind_one_address_share_one_connection() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press-1", "press-2"]);
    plant.update("press-1", |p| p.state = 1);
    plant.update("press-2", |p| p.state = 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant.clone(), listener).unwrap();
    let (_broker_down, broker_port) = refusing_port();
    let device = |id: &str, unit: u8, asset: &str, address: u16| {
        format!(
            "[[modbus]]\nid = \"{id}\"\naddress = \"{}\"\nunit = {unit}\npoll = \"20ms\"\ntimeout = \"5s\"\n\
             [[modbus.points]]\nname = \"state\"\nasset = \"{asset}\"\ntable = \"holding\"\naddress = {address}\n\
             type = \"u16\"\nmeaning = {{ state = {{ codes = {{ 0 = \"idle\", 1 = \"running\", 2 = \"down\" }} }} }}\n",
            server.local_addr()
        )
    };
    let devices = format!("\n{}{}", device("unit1", 1, "press-1", 0), device("unit2", 2, "press-2", 100));
    let config = agent_config(dir.path(), &format!("mqtt://127.0.0.1:{broker_port}"), &devices, "");
    let agent = Agent::start(&config).await.unwrap();
    let sources = shiftlens_agent::source::spawn_all(&config, agent.observations.clone(), agent.health.clone());
    let stored = |asset: &str, want: MachineState| {
        let events = agent.outbox.lock().unwrap().read_after(0, 1_000, 1 << 20).unwrap();
        events
            .iter()
            .any(|e| e.asset.as_str() == asset && matches!(e.body, EventBody::State { state, .. } if state == want))
    };
    wait_for("both units' states in the outbox", LONG, || {
        stored("press-1", MachineState::Running) && stored("press-2", MachineState::Down)
    })
    .await;
    // Both keep polling: many requests later there is still one connection.
    let requests = server.requests();
    wait_for("more polls", LONG, || server.requests() >= requests + 40).await;
    assert_eq!(server.connections(), 1, "one TCP connection for both unit ids");

    for s in &sources {
        s.abort();
    }
    for s in sources {
        let _ = s.await;
    }
    agent.shutdown().await.unwrap();
}
