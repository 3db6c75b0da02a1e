//! The OPC UA source against the simulated plant's real OPC UA server (async-opcua), over loopback
//! TCP with fresh PKI directories: data flow, security and trust, restart, bad status, half-open link.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use shiftlens_agent::config::opcua::{validate, RawOpcUaEndpoint};
use shiftlens_agent::detect::{Sample, Value};
use shiftlens_agent::source::opcua::{self, OpcUaEndpoint};
use shiftlens_agent::trust::trust_endpoint;
use shiftlens_common::config::{ConfigFile, Spanned};
use shiftlens_sim::opcua::{node_id, serve, OpcUaOptions, OpcUaServer};
use shiftlens_sim::plant::{Faults, Plant};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

fn init_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
}

async fn start_server(plant: &Plant, pki: &Path) -> OpcUaServer {
    serve_on(plant, port_socket("127.0.0.1:0".parse().unwrap()).listen(1024).unwrap(), pki).await
}

async fn serve_on(plant: &Plant, listener: TcpListener, pki: &Path) -> OpcUaServer {
    let options = OpcUaOptions { users: vec![("op".into(), "s3cret".into())], ..Default::default() };
    serve(plant.clone(), listener, pki, &options).await.unwrap()
}

/// A socket bound to `addr` with `SO_REUSEPORT`: a second one can hold a server's port while it is down (bound,
/// not listening, so connections are refused), and no other test's socket can be given the port meanwhile.
fn port_socket(addr: SocketAddr) -> TcpSocket {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(addr).unwrap();
    s
}

#[derive(Deserialize)]
struct Section {
    opcua: Vec<Spanned<RawOpcUaEndpoint>>,
}

/// An endpoint for `url` with a state and an alarm-word point of asset `press1`; `extra` adds settings.
fn endpoint(url: &str, pki: &Path, extra: &str) -> OpcUaEndpoint {
    let text = format!(
        r#"
[[opcua]]
id = "plc1"
endpoint = "{url}"
pki_dir = "{pki}"
{extra}

[[opcua.points]]
name = "state"
node = "{state}"
asset = "press1"
sampling = "50ms"
meaning = {{ state = {{ codes = {{ 0 = "idle", 1 = "running", 2 = "down" }} }} }}

[[opcua.points]]
name = "alarms"
node = "{alarms}"
asset = "press1"
sampling = "50ms"
meaning = {{ alarm_word = {{ bits = {{ 0 = {{ id = "E1", text = "Guard open" }} }} }} }}
"#,
        pki = pki.display(),
        state = node_id("press1", "state"),
        alarms = node_id("press1", "alarms"),
    );
    let file = ConfigFile::from_text("agent.toml", text);
    let section: Section = file.parse().unwrap();
    let mut errors = Vec::new();
    validate(&section.opcua, &file, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    section.opcua.into_iter().next().unwrap().into_inner().validated()
}

const NONE: &str = r#"security_policy = "none"
security_mode = "none"
keep_alive = "500ms"
request_timeout = "1s""#;

/// How long [`wait_for`] waits: generous, since sessions, secure channels and reconnects slow down on a
/// loaded machine, and the wait ends with the sample.
const WAIT: Duration = Duration::from_secs(60);

/// Waits for a sample matching `pred`, failing with everything seen when [`WAIT`] passes first.
async fn wait_for(rx: &mut mpsc::Receiver<Sample>, what: &str, pred: impl Fn(&Sample) -> bool) -> Sample {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) if pred(&s) => return s,
            Ok(Some(s)) => seen.push(s),
            Ok(None) => panic!("source ended while waiting for {what}; seen: {seen:#?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; seen: {seen:#?}"),
        }
    }
}

fn is_value(s: &Sample, point: &str, want: i64) -> bool {
    matches!(s, Sample::Value { point: p, value: Value::Int(v), .. } if p == point && *v == want)
}

fn is_link(s: &Sample, up: bool) -> bool {
    matches!(s, Sample::Link { connected, .. } if *connected == up)
}

use shiftlens_common::clock::now_ms;

#[tokio::test]
async fn plant_changes_flow_as_samples_with_source_timestamps() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), NONE);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);

    let link = wait_for(&mut rx, "link up", |s| is_link(s, true)).await;
    assert!(matches!(&link, Sample::Link { source, assets, .. } if source == "plc1" && assets.len() == 1));
    wait_for(&mut rx, "initial state 0", |s| is_value(s, "state", 0)).await;

    let before = now_ms();
    plant.update("press1", |p| p.state = 1);
    let s = wait_for(&mut rx, "state 1", |s| is_value(s, "state", 1)).await;
    let Sample::Value { ts_ms, asset, .. } = s else { unreachable!() };
    assert_eq!(asset.as_str(), "press1");
    assert!(ts_ms >= before - 1000 && ts_ms <= now_ms(), "source timestamp {ts_ms} not near {before}");
    plant.update("press1", |p| p.alarms = 0b1);
    wait_for(&mut rx, "alarm word 1", |s| is_value(s, "alarms", 1)).await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn untrusted_server_certificate_is_named_then_trust_lets_the_next_connect_through() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let pw = dir.path().join("opcua.pass");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let extra = format!(
        "security_policy = \"basic256sha256\"\nsecurity_mode = \"sign_and_encrypt\"\n\
         identity = {{ user = {{ name = \"op\", password_file = \"{}\" }} }}",
        pw.display()
    );
    let agent_pki = dir.path().join("agent");
    let mut ep = endpoint(&server.endpoint_url(), &agent_pki, &extra);
    ep.config_file = "/etc/shiftlens/agent.toml".into();
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);

    let lost = wait_for(&mut rx, "rejection", |s| is_link(s, false)).await;
    let Sample::Link { error: Some(error), .. } = lost else { panic!("no error in {lost:?}") };
    assert!(error.contains("not trusted"), "{error}");
    assert!(error.contains("shiftlens-agent trust --config /etc/shiftlens/agent.toml --endpoint plc1"), "{error}");
    assert!(error.contains("ShiftLens simulated plant"), "subject missing: {error}");
    let rejected: Vec<_> = std::fs::read_dir(agent_pki.join("rejected")).unwrap().flatten().collect();
    assert_eq!(rejected.len(), 1);
    assert!(error.contains(&rejected[0].path().display().to_string()), "{error}");

    let msg = trust_endpoint(&ep, None).unwrap();
    assert!(msg.contains("moved to"), "{msg}");
    assert_eq!(std::fs::read_dir(agent_pki.join("trusted")).unwrap().count(), 1);

    wait_for(&mut rx, "link up after trust", |s| is_link(s, true)).await;
    plant.update("press1", |p| p.state = 2);
    wait_for(&mut rx, "state 2 over SignAndEncrypt", |s| is_value(s, "state", 2)).await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_pinned_fingerprint_is_trusted_and_a_wrong_one_refused() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server_pki = dir.path().join("server");
    let server = start_server(&plant, &server_pki).await;
    let der = std::fs::read(server_pki.join("own/cert.der")).unwrap();
    let good = opcua::fingerprint(&der);

    let wrong = "00".repeat(32);
    let extra = format!("security_mode = \"sign\"\nserver_fingerprint = \"{wrong}\"");
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent-wrong"), &extra);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);
    let lost = wait_for(&mut rx, "pin mismatch", |s| is_link(s, false)).await;
    let Sample::Link { error: Some(error), .. } = lost else { panic!() };
    assert!(error.contains("does not match the pinned") && error.contains(&good), "{error}");
    task.abort();

    let extra = format!("security_mode = \"sign\"\nserver_fingerprint = \"{}\"", good.to_lowercase());
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), &extra);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "link up with pin", |s| is_link(s, true)).await;
    plant.update("press1", |p| p.state = 1);
    wait_for(&mut rx, "state 1 over Sign", |s| is_value(s, "state", 1)).await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn data_flows_again_by_itself_after_a_server_restart() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server_pki = dir.path().join("server");
    let server = start_server(&plant, &server_pki).await;
    let addr = server.local_addr();
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), NONE);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "initial state", |s| is_value(s, "state", 0)).await;

    // Held while the server is down, so that the restart gets its port back.
    let port = port_socket(addr);
    server.stop().await;
    wait_for(&mut rx, "link lost", |s| is_link(s, false)).await;
    plant.update("press1", |p| p.state = 2);
    let server = serve_on(&plant, port.listen(1024).unwrap(), &server_pki).await;
    wait_for(&mut rx, "link up again", |s| is_link(s, true)).await;
    wait_for(&mut rx, "current state after restart", |s| is_value(s, "state", 2)).await;
    // Not just the initial values of the new subscription: later changes flow too (no silent stall).
    plant.update("press1", |p| p.state = 1);
    wait_for(&mut rx, "a change after restart", |s| is_value(s, "state", 1)).await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_bad_status_marks_the_source_lost_until_values_are_good_again() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), NONE);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "initial state", |s| is_value(s, "state", 0)).await;

    plant.set_faults(Faults { bad_status: true, ..Default::default() });
    let lost = wait_for(&mut rx, "link lost on bad status", |s| is_link(s, false)).await;
    let Sample::Link { error: Some(error), .. } = lost else { panic!() };
    assert!(error.contains("BadDeviceFailure"), "{error}");

    plant.update("press1", |p| p.state = 1);
    plant.set_faults(Faults::default());
    wait_for(&mut rx, "link up when good again", |s| is_link(s, true)).await;
    // Every point is reported again, since the detector forgot the source's values.
    wait_for(&mut rx, "state after recovery", |s| is_value(s, "state", 1)).await;
    wait_for(&mut rx, "alarms after recovery", |s| is_value(s, "alarms", 0)).await;
    task.abort();
    server.stop().await;
}

/// A TCP proxy that stops forwarding (but keeps both sockets open) once `frozen` is set.
async fn freezable_proxy(upstream: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, frozen.clone()));
            tokio::spawn(pump(sr, cw, frozen.clone()));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Half-open: swallow everything from now on, keep the sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_half_open_link_is_detected_within_seconds() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let frozen = Arc::new(AtomicBool::new(false));
    let proxy = freezable_proxy(server.local_addr(), frozen.clone()).await;
    let extra = "security_policy = \"none\"\nsecurity_mode = \"none\"\nkeep_alive = \"1s\"\nrequest_timeout = \"2s\"";
    let ep = endpoint(&format!("opc.tcp://{proxy}/"), &dir.path().join("agent"), extra);
    let (tx, mut rx) = mpsc::channel(100);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "initial state through the proxy", |s| is_value(s, "state", 0)).await;

    frozen.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    wait_for(&mut rx, "link lost on a half-open link", |s| is_link(s, false)).await;
    let took = t0.elapsed();
    eprintln!("half-open link detected after {took:?}");
    // Timers, not CPU: three failed keep-alives of 1 s each bounded by 2 s take about 9 s here. The bound
    // leaves room for a loaded machine; without keep-alives the frozen link would never be noticed.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    task.abort();
    server.stop().await;
}
