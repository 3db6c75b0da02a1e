//! OPC UA Alarms & Conditions against the simulated plant's real OPC UA server (async-opcua) over loopback:
//! condition events become alarm samples with their attributes, ConditionRefresh after a reconnect or a server
//! restart clears what cleared meanwhile, the severity filter, and sources mapped to no asset.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use shiftlens_agent::config::opcua::{validate, RawOpcUaEndpoint};
use shiftlens_agent::detect::Sample;
use shiftlens_agent::source::opcua::{self, OpcUaEndpoint};
use shiftlens_common::config::{ConfigFile, Spanned};
use shiftlens_common::Alarm;
use shiftlens_sim::opcua::{serve, OpcUaOptions, OpcUaServer};
use shiftlens_sim::plant::{ConditionKind, Plant};
use shiftlens_sim::scenario::{condition, ConditionAction, ConditionStep};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

fn init_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
}

fn port_socket(addr: SocketAddr) -> TcpSocket {
    let s = TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.set_reuseport(true).unwrap();
    s.bind(addr).unwrap();
    s
}

async fn serve_on(plant: &Plant, listener: TcpListener, pki: &Path) -> OpcUaServer {
    serve(plant.clone(), listener, pki, &OpcUaOptions::default()).await.unwrap()
}

async fn start_server(plant: &Plant, pki: &Path) -> OpcUaServer {
    serve_on(plant, port_socket("127.0.0.1:0".parse().unwrap()).listen(1024).unwrap(), pki).await
}

#[derive(Deserialize)]
struct Section {
    opcua: Vec<Spanned<RawOpcUaEndpoint>>,
}

/// An endpoint with one alarm source mapping `press1` and `Line2.*` to assets; `extra` adds alarm settings.
fn endpoint(url: &str, pki: &Path, extra: &str) -> OpcUaEndpoint {
    let text = format!(
        r#"
[[opcua]]
id = "scada"
endpoint = "{url}"
pki_dir = "{pki}"
security_policy = "none"
security_mode = "none"
keep_alive = "500ms"
request_timeout = "1s"

[[opcua.alarms]]
{extra}
[[opcua.alarms.assets]]
source = "press1"
asset = "press1"
[[opcua.alarms.assets]]
pattern = "Line2.*"
asset = "line2"
"#,
        pki = pki.display(),
    );
    let file = ConfigFile::from_text("agent.toml", text);
    let section: Section = file.parse().unwrap();
    let mut errors = Vec::new();
    validate(&section.opcua, &file, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    section.opcua.into_iter().next().unwrap().into_inner().validated()
}

const WAIT: Duration = Duration::from_secs(60);

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

/// Waits for an alarm sample of `name` (the end of its ConditionId) matching `pred`; returns it and every
/// sample seen before it.
async fn wait_alarm(
    rx: &mut mpsc::Receiver<Sample>,
    name: &str,
    pred: impl Fn(&Alarm) -> bool,
) -> (Alarm, Vec<Sample>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Sample::Alarm { alarm, .. })) if alarm.id.ends_with(&format!(".{name}")) && pred(&alarm) => {
                return (alarm, seen)
            }
            Ok(Some(s)) => seen.push(s),
            Ok(None) => panic!("source ended while waiting for {name}; seen: {seen:#?}"),
            Err(_) => panic!("no matching alarm {name} within {WAIT:?}; seen: {seen:#?}"),
        }
    }
}

fn step(name: &str, action: ConditionAction, severity: u16) -> ConditionStep {
    ConditionStep {
        name: name.into(),
        source: None,
        action,
        kind: ConditionKind::OffNormal,
        severity: Some(severity),
        text: Some(format!("{name} text")),
    }
}

fn is_refreshed(s: &Sample) -> bool {
    matches!(s, Sample::Refreshed { .. })
}

#[tokio::test]
async fn raise_ack_shelve_and_clear_arrive_as_alarm_samples_with_their_attributes() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), "");
    let (tx, mut rx) = mpsc::channel(1000);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "the first refresh", is_refreshed).await;

    condition(&plant, "press1", &step("Overtemp", ConditionAction::Raise, 800));
    let (a, _) = wait_alarm(&mut rx, "Overtemp", |a| a.active).await;
    assert_eq!(a.id, "ns=2;s=press1.Overtemp");
    assert_eq!((a.severity, a.text.as_str(), a.priority.as_deref()), (800, "Overtemp text", Some("high")));
    assert_eq!((a.acked, a.shelved, a.suppressed), (Some(false), Some(false), Some(false)));

    condition(&plant, "press1", &step("Overtemp", ConditionAction::Ack, 0));
    let (a, _) = wait_alarm(&mut rx, "Overtemp", |a| a.acked == Some(true)).await;
    assert!(a.active);
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Shelve, 0));
    let (a, _) = wait_alarm(&mut rx, "Overtemp", |a| a.shelved == Some(true)).await;
    assert_eq!(a.suppressed, Some(false), "shelved is not also reported as suppressed");

    condition(&plant, "press1", &step("Overtemp", ConditionAction::Clear, 0));
    wait_alarm(&mut rx, "Overtemp", |a| !a.active).await;
    // A pattern maps a source too; severity 200 is in the low band.
    condition(&plant, "Line2.Filler", &step("LowLevel", ConditionAction::Raise, 200));
    let (a, seen) = wait_alarm(&mut rx, "LowLevel", |a| a.active).await;
    assert_eq!(a.priority.as_deref(), Some("low"));
    assert!(!seen.iter().any(|s| matches!(s, Sample::Alarm { .. })), "no duplicate samples: {seen:#?}");
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_server_restart_refreshes_and_clears_what_cleared_while_it_was_down() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server_pki = dir.path().join("server");
    let server = start_server(&plant, &server_pki).await;
    let addr = server.local_addr();
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), "");
    let (tx, mut rx) = mpsc::channel(1000);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "the first refresh", is_refreshed).await;
    condition(&plant, "press1", &step("Jam", ConditionAction::Raise, 500));
    wait_alarm(&mut rx, "Jam", |a| a.active).await;
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Raise, 800));
    wait_alarm(&mut rx, "Overtemp", |a| a.active).await;

    let port = port_socket(addr);
    server.stop().await;
    wait_for(&mut rx, "link lost", |s| matches!(s, Sample::Link { connected: false, .. })).await;
    // While the server is down: Overtemp clears and is acknowledged (no longer retained); Jam stays.
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Clear, 0));
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Ack, 0));
    let server = serve_on(&plant, port.listen(1024).unwrap(), &server_pki).await;
    let (a, seen) = wait_alarm(&mut rx, "Overtemp", |a| !a.active).await;
    assert_eq!(a.id, "ns=2;s=press1.Overtemp");
    assert!(!seen.iter().any(|s| matches!(s, Sample::Alarm { alarm, .. } if alarm.id.ends_with(".Jam"))), "{seen:#?}");
    let refreshed = wait_for(&mut rx, "the refresh's end", is_refreshed).await;
    let Sample::Refreshed { active, .. } = refreshed else { unreachable!() };
    assert_eq!(active.iter().map(|(_, a)| a.id.as_str()).collect::<Vec<_>>(), ["ns=2;s=press1.Jam"]);
    // Events flow after the restart too.
    condition(&plant, "press1", &step("Jam", ConditionAction::Clear, 0));
    wait_alarm(&mut rx, "Jam", |a| !a.active).await;
    task.abort();
    server.stop().await;
}

/// A TCP proxy whose connections can all be cut at once (new ones are accepted again afterwards).
async fn cuttable_proxy(upstream: SocketAddr, cut: Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let cut = cut.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = cr.read(&mut b).await {
                        if n == 0 || sw.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = sr.read(&mut b).await {
                        if n == 0 || cw.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {}, _ = cut.notified() => {} }
            });
        }
    });
    addr
}

#[tokio::test]
async fn after_a_link_drop_the_refresh_reports_the_conditions_as_they_are() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let cut = Arc::new(tokio::sync::Notify::new());
    let proxy = cuttable_proxy(server.local_addr(), cut.clone()).await;
    let ep = endpoint(&format!("opc.tcp://{proxy}/"), &dir.path().join("agent"), "");
    let (tx, mut rx) = mpsc::channel(1000);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "the first refresh", is_refreshed).await;
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Raise, 800));
    wait_alarm(&mut rx, "Overtemp", |a| a.active).await;

    cut.notify_waiters();
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Clear, 0));
    condition(&plant, "press1", &step("Overtemp", ConditionAction::Ack, 0));
    wait_alarm(&mut rx, "Overtemp", |a| !a.active).await;
    let refreshed = wait_for(&mut rx, "a refresh after the reconnect", is_refreshed).await;
    let Sample::Refreshed { active, .. } = refreshed else { unreachable!() };
    assert!(active.is_empty(), "{active:?}");
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn the_severity_filter_keeps_low_severity_conditions_out() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let extra = "min_severity = 600\nevent_types = [\"i=10637\"]\n";
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), extra);
    let (tx, mut rx) = mpsc::channel(1000);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "the first refresh", is_refreshed).await;

    condition(&plant, "press1", &step("Minor", ConditionAction::Raise, 300));
    let mut other_type = step("PlainAlarm", ConditionAction::Raise, 900);
    other_type.kind = ConditionKind::Alarm;
    condition(&plant, "press1", &other_type);
    condition(&plant, "press1", &step("Major", ConditionAction::Raise, 900));
    let (a, seen) = wait_alarm(&mut rx, "Major", |a| a.active).await;
    assert_eq!(a.severity, 900);
    let alarms: Vec<&Sample> = seen.iter().filter(|s| matches!(s, Sample::Alarm { .. })).collect();
    assert!(alarms.is_empty(), "severity 300 and AlarmConditionType (not OffNormal) are filtered: {alarms:#?}");
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_source_mapped_to_no_asset_is_counted_and_reported_once() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let plant = Plant::new(["press1"]);
    let server = start_server(&plant, &dir.path().join("server")).await;
    let ep = endpoint(&server.endpoint_url(), &dir.path().join("agent"), "");
    let (tx, mut rx) = mpsc::channel(1000);
    let task = opcua::spawn(&ep, tx);
    wait_for(&mut rx, "the first refresh", is_refreshed).await;

    condition(&plant, "mixer9", &step("Stuck", ConditionAction::Raise, 700));
    let report = wait_for(&mut rx, "the unmapped source reported", |s| matches!(s, Sample::Unmapped { .. })).await;
    assert!(matches!(&report, Sample::Unmapped { from, .. } if from == "mixer9"), "{report:?}");
    // Its next events are only counted. Each step waits for a mapped marker, so each is its own event.
    let mut seen = Vec::new();
    for (i, action) in [ConditionAction::Ack, ConditionAction::Clear].into_iter().enumerate() {
        condition(&plant, "mixer9", &step("Stuck", action, 0));
        let marker = format!("Zz{i}");
        condition(&plant, "press1", &step(&marker, ConditionAction::Raise, 700));
        seen.extend(wait_alarm(&mut rx, &marker, |a| a.active).await.1);
    }
    assert!(!seen.iter().any(|s| matches!(s, Sample::Unmapped { .. } | Sample::Alarm { .. })), "{seen:#?}");
    // probe's own session refreshes: it lists the active conditions with their mapping, and the retained
    // conditions of unmapped sources with their count.
    condition(&plant, "mixer8", &step("Overload", ConditionAction::Raise, 900));
    let probe = shiftlens_agent::probe::run(&shiftlens_agent::Config {
        site: "plant-a".parse().unwrap(),
        gateway: "gw-1".parse().unwrap(),
        outbox: Default::default(),
        uplink: shiftlens_agent::uplink::UplinkConfig::plain("mqtt://127.0.0.1"),
        modbus: Vec::new(),
        opcua: vec![ep.clone()],
        health: Default::default(),
    })
    .await;
    let text = probe.table();
    assert!(text.contains("mixer8") && text.contains("mapped to no asset"), "{text}");
    assert!(text.contains("ns=2;s=press1.Zz0") && text.contains("active unacked"), "{text}");
    task.abort();
    server.stop().await;
}
