//! Escalation with real parts: the real collector binary with its embedded broker, a gateway publishing
//! over MQTT/TLS, a local SMTP server (Python's aiosmtpd) and an HTTP receiver that checks the HMAC.
//! Every wait ends on an event (a message received, a row stored); none is a fixed sleep.
#![allow(clippy::unwrap_used)]

mod support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use shiftlens_collector::people::import::Kind;
use shiftlens_common::{AssetId, Batch, Event as WireEvent, EventBody, MachineState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const SECRET: &str = "webhook-secret-for-tests";

/// What reached a recipient: (channel, rung, person, ack link).
#[derive(Debug, Clone)]
struct Got {
    channel: &'static str,
    id: String,
    ack: String,
}

/// The local SMTP server: aiosmtpd on a free port, one stdout line per message.
struct Smtp {
    _child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const SMTP_SERVER: &str = r#"
import sys, time, email, ssl
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        body = msg.get_payload(decode=True).decode("utf8", "replace").replace("\r", "").replace("\n", "\\n")
        print("MAIL", envelope.rcpt_tos[0], body, flush=True)
        return "250 OK"
if len(sys.argv) > 3:
    # STARTTLS required, with the test PKI's server certificate.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]), tls_context=ctx, require_starttls=True)
else:
    c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
"#;

/// `tls`: the server certificate and key; the server then requires STARTTLS.
async fn smtp_server(tx: mpsc::UnboundedSender<Got>, tls: Option<&shiftlens_collector::broker::TlsFiles>) -> Smtp {
    let port = free_port();
    let mut args = vec!["-c".to_string(), SMTP_SERVER.to_string(), port.to_string()];
    if let Some(t) = tls {
        args.extend([t.cert.display().to_string(), t.key.display().to_string()]);
    }
    let mut child = Command::new("python3")
        .args(&args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(WAIT), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(ready.as_deref(), Some("READY"), "aiosmtpd did not start");
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let Some(rest) = l.strip_prefix("MAIL ") else { continue };
            let body = rest.replace("\\n", "\n");
            let ack = body.split_whitespace().find(|w| w.contains("/ack/")).unwrap_or_default().to_string();
            let id = body.lines().find_map(|l| l.strip_prefix("Message id: ")).unwrap_or_default().to_string();
            let _ = tx.send(Got { channel: "email", id, ack });
        }
    });
    Smtp { _child: child, port }
}

/// The HTTP receiver: checks `X-ShiftLens-Signature` and answers 200, or 500 while `failing`.
struct Receiver {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

async fn receiver(tx: mpsc::UnboundedSender<Got>) -> Receiver {
    let failing = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (f, n) = (failing.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (f, n, tx) = (f.clone(), n.clone(), tx.clone());
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
                let got = headers.get("x-shiftlens-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                assert_eq!(got, format!("sha256={want}"), "bad signature");
                if f.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["schema"], "shiftlens.escalation/1");
                let _ = tx.send(Got {
                    channel: "webhook",
                    id: v["id"].as_str().unwrap().to_string(),
                    ack: v["ack_url"].as_str().unwrap().to_string(),
                });
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { addr, failing, attempts }
}

/// The plant: press-1 at plant-a needs PLC level 2; op1 is on shift without it, so a stop is uncovered;
/// tech (PLC 4, e-mail) starts the next shift in 30 minutes, tech2 (PLC 3, webhook) is on call, sam is the
/// on-call supervisor (webhook).
fn import_people(db: &Path, now: i64, tech_contact: &str) {
    let t = |ms: i64| shiftlens_collector::feed::rfc3339(ms);
    let (from, to, next) = (t(now - 3_600_000), t(now + 10 * 3_600_000), t(now + 1_800_000));
    let files = [
        (Kind::Skills, "id,name,domain,certificate\nplc,PLC,automation,no\n".to_string()),
        (
            Kind::People,
            "id,name,crew,discipline\nop1,Op One,A,operator\ntech,Tech,A,electrical\ntech2,Tech Two,A,electrical\nsam,Sam,A,supervisor\n".into(),
        ),
        (
            Kind::PersonSkills,
            "person,skill,level,assessed\ntech,plc,4,2024-01-01\ntech2,plc,3,2024-01-01\n".into(),
        ),
        (
            Kind::Roster,
            format!("person,start,end,kind\nop1,{from},{to},work\ntech,{next},{to},work\n"),
        ),
        (Kind::Assets, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-1,500,plc:2\n".into()),
        (
            Kind::OnCall,
            format!(
                "person,channel,address,site,role,start,end\ntech,{tech_contact},plant-a,,,\n\
                 tech2,webhook,pager-2,plant-a,,{from},{to}\nsam,webhook,pager-9,plant-a,supervisor,{from},{to}\n"
            ),
        ),
    ];
    // Through the read side's door: the SQLite file, or the PostgreSQL store registered for `db`.
    for (kind, text) in files {
        shiftlens_collector::store::reads::import_personnel(db, Default::default(), kind, "t.csv", &text, now)
            .unwrap()
            .unwrap();
    }
}

struct Plant {
    dir: tempfile::TempDir,
    pki: Pki,
    cfg: PathBuf,
    db: PathBuf,
    got: mpsc::UnboundedReceiver<Got>,
    hook: Receiver,
    _smtp: Smtp,
}

async fn plant(second_after: &str, supervisor_after: &str) -> Plant {
    plant_with(second_after, supervisor_after, false, false).await
}

/// With `mqtt`: tech is reached over MQTT, bodies are pseudonymised, and `it-feed` may subscribe.
/// With `smtp_tls`: the SMTP server requires STARTTLS with a certificate of the test CA, which the
/// collector trusts through `[escalation.smtp] ca`.
async fn plant_with(second_after: &str, supervisor_after: &str, mqtt: bool, smtp_tls: bool) -> Plant {
    plant_on(second_after, supervisor_after, mqtt, smtp_tls, None).await
}

/// As [`plant_with`]; with `pg`, the store is database `pg.1` of cluster `pg.0` (the people imported there),
/// and `Plant::db` is the store path registered for it.
async fn plant_on(
    second_after: &str,
    supervisor_after: &str,
    mqtt: bool,
    smtp_tls: bool,
    pg: Option<(&support::pg::PgCluster, &str)>,
) -> Plant {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let (tx, got) = mpsc::unbounded_channel();
    let smtp_files = smtp_tls.then(|| pki.leaf("smtp"));
    let smtp = smtp_server(tx.clone(), smtp_files.as_ref()).await;
    let hook = receiver(tx).await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let text = format!(
        "{}\n[escalation]\npublic_url = \"http://127.0.0.1:9\"\nretry_min = \"20ms\"\nretry_max = \"100ms\"\nmax_attempts = 3\n\
         [[escalation.rungs]]\nafter = \"0s\"\nto = \"qualified\"\n\
         [[escalation.rungs]]\nafter = \"{second_after}\"\nto = \"qualified\"\n\
         [[escalation.rungs]]\nafter = \"{supervisor_after}\"\nto = \"supervisor\"\n\
         [escalation.webhook]\nurl = \"http://{}/hook\"\nsecret_file = \"{}\"\n\
         [escalation.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"shiftlens@plant.example\"\n{}",
        config_text(dir.path(), &pki.leaf("localhost"), if mqtt { "feed_readers = [\"it-feed\"]" } else { "" }),
        hook.addr,
        secret.display(),
        smtp.port,
        if mqtt { "[escalation.mqtt]\n" } else { "" },
    );
    let text = match &smtp_files {
        Some(f) => text.replace("tls = \"none\"\n", &format!("tls = \"starttls\"\nca = \"{}\"\n", f.ca.display())),
        None => text,
    };
    let text = if mqtt { text.replace("max_attempts = 3\n", "max_attempts = 3\npseudonymize = true\n") } else { text };
    let db = dir.path().join("collector.db");
    let text = match pg {
        Some((pg, name)) => {
            let store = format!("{}path = \"{}\"\n", pg.store_toml(name), db.display());
            let file = shiftlens_common::config::ConfigFile::from_text(dir.path().join("store.toml"), store);
            let store = shiftlens_collector::Config::from_file(&file).unwrap().store;
            shiftlens_collector::store::reads::serve_from_postgres(&store).unwrap();
            pg.with_store(&text, name)
        }
        None => text,
    };
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, text).unwrap();
    let tech = if mqtt { "mqtt,radio-7" } else { "email,tech@plant.example" };
    let people_db = db.clone();
    tokio::task::spawn_blocking(move || import_people(&people_db, chrono::Utc::now().timestamp_millis(), tech))
        .await
        .unwrap();
    Plant { dir, pki, cfg, db, got, hook, _smtp: smtp }
}

/// The real collector; returns its broker and HTTP addresses.
async fn spawn_collector(config: &Path) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut broker, mut http) = (None, None);
    tokio::time::timeout(Duration::from_secs(WAIT), async {
        while broker.is_none() || http.is_none() {
            let l = lines.next_line().await.unwrap().expect("collector exited before listening");
            if let Some(a) = l.strip_prefix("broker listening on ") {
                broker = Some(a.parse().unwrap());
            }
            if let Some(a) = l.strip_prefix("http listening on ") {
                http = Some(a.parse().unwrap());
            }
        }
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, broker.unwrap(), http.unwrap())
}

fn state(gw: &str, seq: u64, ts_ms: i64, state: MachineState) -> Batch {
    let e = WireEvent {
        seq,
        ts_ms,
        asset: AssetId::parse("press-1").unwrap(),
        body: EventBody::State { state, reason: None },
    };
    Batch::new(site(), gateway(gw), 1, vec![e])
}

/// Publishes one state change of press-1 and waits for its ack (it is then committed).
async fn publish_state(a: &mut TestClient, seq: u64, s: MachineState) -> i64 {
    let ts = chrono::Utc::now().timestamp_millis();
    publish_batch(a, "gw-1", &state("gw-1", seq, ts, s)).await;
    let mut acked = std::collections::BTreeSet::new();
    assert!(wait_acked(a, 1, &[seq].into(), &mut acked, WAIT).await, "state {seq} not acked");
    ts
}

async fn next(p: &mut Plant) -> Got {
    tokio::time::timeout(Duration::from_secs(WAIT), p.got.recv()).await.expect("no escalation message").unwrap()
}

async fn connected_agent(addr: SocketAddr, pki: &Pki) -> TestClient {
    let mut a = agent(addr, pki, "gw-1");
    assert_eq!(refused(&mut a).await, Some(false));
    a
}

fn http_client() -> reqwest_like::Client {
    reqwest_like::Client
}

/// A minimal HTTP/1.1 client over a TCP socket (GET/POST without body), enough for the ack routes.
mod reqwest_like {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client;

    impl Client {
        pub async fn call(&self, method: &str, url: &str) -> (u16, String) {
            let rest = url.strip_prefix("http://").unwrap();
            let (host, path) = rest.split_at(rest.find('/').unwrap());
            let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf).to_string();
            let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
            (status, text)
        }
    }
}

/// The ack link of a message, pointed at the collector under test (the configured public_url is a dummy).
fn link(got: &Got, http: SocketAddr) -> String {
    let token = got.ack.rsplit('/').next().unwrap();
    format!("http://{http}/ack/{token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncovered_stop_climbs_the_ladder_until_acknowledged_and_the_link_works_once() {
    let mut p = plant("2s", "15s").await;
    let (_child, broker, http) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let key = format!("plant-a/press-1/{start}");

    // Rung 1: the best-ranked qualified person (tech, PLC 4) by e-mail.
    let first = next(&mut p).await;
    assert_eq!((first.channel, first.id.as_str()), ("email", format!("{key}#0").as_str()));
    // No acknowledgement: rung 2 after its delay, the next qualified person (tech2) by webhook, signed.
    let second = next(&mut p).await;
    assert_eq!((second.channel, second.id.as_str()), ("webhook", format!("{key}#1").as_str()));

    // The link shows a confirm form, then acknowledges once.
    let c = http_client();
    let (status, page) = c.call("GET", &link(&second, http)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("ack-confirm"), "{page}");
    let (status, page) = c.call("POST", &link(&second, http)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acknowledged"), "{page}");
    let (who, response): (String, i64) = shiftlens_collector::store::open_reader(&p.db)
        .unwrap()
        .query_row("SELECT person, ack_ms - start_ms FROM escalation_ack WHERE stop_key = ?1", [&key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(who, "tech2");
    assert!(response >= 0);
    // Replayed: refused.
    let (status, page) = c.call("POST", &link(&second, http)).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("already used"), "{page}");
    // Expired: tech's link, made to have expired.
    let conn = rusqlite::Connection::open(&p.db).unwrap();
    conn.execute("UPDATE escalation SET token_expires_ms = 0 WHERE stop_key = ?1 AND rung = 0", [&key]).unwrap();
    let (status, page) = c.call("POST", &link(&first, http)).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("expired"), "{page}");
    // A made-up token: unknown.
    let (status, _) = c.call("GET", &format!("http://{http}/ack/{}", "ab".repeat(32))).await;
    assert_eq!(status, 404);

    // The ladder stops: the supervisor's rung (due 15 s after the start) is never claimed: once its time has
    // passed by two planning passes, nothing was added.
    let due = start + 15_000 + 2 * 5_000;
    assert!(eventually(WAIT, || chrono::Utc::now().timestamp_millis() > due).await);
    let n = count(&p.db, &format!("SELECT COUNT(*) FROM escalation WHERE stop_key = '{key}'"));
    assert_eq!(n, 2);
    assert!(p.got.try_recv().is_err());
    // The board shows who was asked and who acknowledged.
    let (status, board) = c.call("GET", &format!("http://{http}/escalations")).await;
    assert_eq!(status, 200);
    assert!(board.contains("tech2 at") && board.contains("rung 1: tech"), "{board}");

    // Once the stop ends, the feed splits its time to restoration at the acknowledgement.
    publish_state(&mut a, 2, MachineState::Running).await;
    let record = repaired_record(http, start).await;
    assert!((record["response_s"].as_f64().unwrap() * 1000.0 - response as f64).abs() < 1.0, "{record}");
}

/// The API's downtime record of the stop that started at `start`, once it has ended (waits for it), its
/// time to restoration split at the acknowledgement.
async fn repaired_record(http: SocketAddr, start: i64) -> serde_json::Value {
    let url = format!("http://{http}/api/v1/downtime?from={}&to={}", start - 3_600_000, start + 86_400_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
    let record = loop {
        let (_, text) = http_client().call("GET", &url).await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        // Chunked or not, the JSON array is the part between the first '[' and the last ']'.
        let json = body.get(body.find('[').unwrap_or(0)..=body.rfind(']').unwrap_or(0)).unwrap_or("[]");
        let records: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
        if let Some(r) = records.into_iter().find(|r| !r["repair_s"].is_null()) {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record with repair_s: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (resp, rep, total) = (
        record["response_s"].as_f64().unwrap(),
        record["repair_s"].as_f64().unwrap(),
        record["duration_s"].as_f64().unwrap(),
    );
    assert!((resp + rep - total).abs() < 0.002, "{record}");
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_between_rungs_sends_each_rung_exactly_once() {
    let mut p = plant("4s", "4s").await;
    let (mut child, broker, _) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let key = format!("plant-a/press-1/{start}");
    let first = next(&mut p).await;
    assert_eq!(first.id, format!("{key}#0"));
    // Rung 1 is recorded sent before the kill.
    assert!(eventually(WAIT, || count(&p.db, "SELECT COUNT(*) FROM escalation WHERE state = 'sent'") == 1).await);
    child.kill().await.unwrap();
    drop(a);
    let (_child, _, _) = spawn_collector(&p.cfg).await;
    let mut ids = vec![first.id];
    for _ in 0..2 {
        ids.push(next(&mut p).await.id);
    }
    // Rungs 2 and 3 are both due after the restart and delivered concurrently.
    ids.sort();
    assert_eq!(ids, [format!("{key}#0"), format!("{key}#1"), format!("{key}#2")]);
    assert!(eventually(WAIT, || count(&p.db, "SELECT COUNT(*) FROM escalation WHERE state = 'sent'") == 3).await);
    // Nothing more: one message per rung.
    assert!(p.got.try_recv().is_err());
    assert_eq!(count(&p.db, "SELECT COUNT(*) FROM escalation"), 3);
    let _ = p.dir.path();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_closes_before_the_next_rung_gets_nothing_more() {
    let mut p = plant("3s", "3s").await;
    let (_child, broker, http) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let first = next(&mut p).await;
    assert_eq!(first.channel, "email");
    publish_state(&mut a, 2, MachineState::Running).await;
    assert!(eventually(WAIT, || count(&p.db, "SELECT COUNT(*) FROM downtime WHERE end_ms IS NOT NULL") == 1).await);
    let due = start + 3_000 + 2 * 5_000;
    assert!(eventually(WAIT, || chrono::Utc::now().timestamp_millis() > due).await);
    assert!(p.got.try_recv().is_err());
    assert_eq!(count(&p.db, "SELECT COUNT(*) FROM escalation"), 1);
    // The link of the ended stop acknowledges nothing.
    let c = http_client();
    let (status, page) = c.call("GET", &link(&first, http)).await;
    assert!(status == 200 && page.contains("Stop is over") && !page.contains("ack-confirm"), "{page}");
    let (status, page) = c.call("POST", &link(&first, http)).await;
    assert_eq!(status, 409, "{page}");
    assert_eq!(count(&p.db, "SELECT COUNT(*) FROM escalation_ack"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_keeps_failing_gets_retries_then_a_dead_letter() {
    let mut p = plant("1s", "1s").await;
    p.hook.failing.store(true, Ordering::SeqCst);
    let (_child, broker, _) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    publish_state(&mut a, 1, MachineState::Down).await;
    assert_eq!(next(&mut p).await.channel, "email");
    // Rung 2 goes to the webhook: three attempts (max_attempts), then a dead letter with the last error.
    assert!(
        eventually(WAIT, || count(&p.db, "SELECT COUNT(*) FROM escalation WHERE rung = 1 AND state = 'dead'") == 1)
            .await
    );
    let (attempts, error): (i64, String) = shiftlens_collector::store::open_reader(&p.db)
        .unwrap()
        .query_row("SELECT attempts, error FROM escalation WHERE rung = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(attempts, 3);
    assert!(error.contains("500"), "{error}");
    assert!(p.hook.attempts.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_channel_publishes_on_the_sites_escalations_topic_without_personal_data() {
    let p = plant_with("60s", "60s", true, false).await;
    let (_child, broker, _) = spawn_collector(&p.cfg).await;
    let reader_files = p.pki.leaf("it-feed");
    let topic = shiftlens_common::Topic::Escalations { site: site() }.to_string();
    let mut reader = connect(options(broker, "it-feed", &p.pki.ca, Some(&reader_files)), vec![topic.clone()], false);
    assert!(wait_for(&mut reader, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let body = wait_for(&mut reader, WAIT, |s| match s {
        Seen::Message(t, body) if t == topic => Some(body),
        _ => None,
    })
    .await
    .expect("no escalation on the MQTT topic");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["schema"], "shiftlens.escalation/1");
    assert_eq!(v["id"], format!("plant-a/press-1/{start}#0"));
    assert_eq!((v["reason"].as_str(), v["skills"][0].as_str()), (Some("uncovered"), Some("plc")));
    // Pseudonymised: a pseudonym, no address, no person id anywhere in the body.
    let to = &v["to"];
    assert!(to["person"].as_str().unwrap().starts_with("P-"), "{v}");
    assert!(to.get("address").is_none(), "{v}");
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("radio-7") && !text.contains("\"tech\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_starttls_to_a_server_that_requires_it() {
    let mut p = plant_with("60s", "60s", false, true).await;
    let (_child, broker, _) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let got = next(&mut p).await;
    assert_eq!((got.channel, got.id), ("email", format!("plant-a/press-1/{start}#0")));
    let sent = "SELECT COUNT(*) FROM escalation WHERE state = 'sent' AND channel = 'email'";
    assert!(eventually(WAIT, || count(&p.db, sent) == 1).await);
}

/// Waits until `sql` (one value) in database `db` reads `want`.
async fn pg_becomes(pg: &support::pg::PgCluster, db: &str, sql: &str, want: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
    loop {
        if pg.psql(db, sql) == want {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The board of a collector as the API serves it, without the waiting time (it grows while we look).
async fn board(http: SocketAddr) -> serde_json::Value {
    let (status, text) = http_client().call("GET", &format!("http://{http}/api/v1/escalations")).await;
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = body.get(body.find('[').unwrap_or(0)..=body.rfind(']').unwrap_or(0)).unwrap_or("[]");
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for r in v.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("waited_s");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_postgres_page_each_rung_once_and_an_ack_through_the_other_stops_the_ladder() {
    let pg = support::pg::PgCluster::start(false);
    let name = "escalation_two";
    pg.create_db(name);
    let mut p = plant_on("2s", "15s", false, false, Some((&pg, name))).await;
    let (_owner, broker, http1) = spawn_collector(&p.cfg).await;
    let (_other, _, http2) = spawn_collector(&p.cfg).await;
    // The stop reaches the first collector, which so owns the site; both run escalation.
    let mut a = connected_agent(broker, &p.pki).await;
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let key = format!("plant-a/press-1/{start}");
    let first = next(&mut p).await;
    assert_eq!((first.channel, first.id.as_str()), ("email", format!("{key}#0").as_str()));
    let second = next(&mut p).await;
    assert_eq!((second.channel, second.id.as_str()), ("webhook", format!("{key}#1").as_str()));

    // Acknowledged through the collector that does not run the ladder.
    let c = http_client();
    let (status, page) = c.call("POST", &link(&second, http2)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acknowledged"), "{page}");
    assert_eq!(pg.psql(name, "SELECT person, via FROM shiftlens.escalation_ack"), "tech2|link");
    // Replayed through the owner: refused there too.
    let (status, page) = c.call("POST", &link(&second, http1)).await;
    assert_eq!(status, 410, "{page}");

    // The supervisor's rung (due 15 s after the start) is never claimed, by either collector: once its time
    // has passed by two planning passes, the two messages are all there is, each sent once.
    let due = start + 15_000 + 2 * 5_000;
    assert!(eventually(WAIT, || chrono::Utc::now().timestamp_millis() > due).await);
    assert!(p.got.try_recv().is_err(), "a message was sent twice or after the acknowledgement");
    assert_eq!(
        pg.psql(name, "SELECT count(*), count(*) FILTER (WHERE state = 'sent') FROM shiftlens.escalation"),
        "2|2"
    );
    // Both collectors show the same board, from the shared store.
    let (b1, b2) = (board(http1).await, board(http2).await);
    assert_eq!(b1, b2);
    assert_eq!(b1[0]["acknowledged"][0], "tech2", "{b1}");
    assert_eq!(b1[0]["messages"].as_array().unwrap().len(), 2, "{b1}");

    // Once the stop ends, either collector's feed API splits its time to restoration at the acknowledgement.
    publish_state(&mut a, 2, MachineState::Running).await;
    let response: i64 = pg.psql(name, "SELECT ack_ms - start_ms FROM shiftlens.escalation_ack").parse().unwrap();
    for http in [http1, http2] {
        let record = repaired_record(http, start).await;
        assert!((record["response_s"].as_f64().unwrap() * 1000.0 - response as f64).abs() < 1.0, "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_ladder_on_postgres_the_other_collector_goes_on_without_resending() {
    let pg = support::pg::PgCluster::start(false);
    let name = "escalation_kill";
    pg.create_db(name);
    let mut p = plant_on("4s", "4s", false, false, Some((&pg, name))).await;
    // Deliveries keep retrying (slowly) rather than become dead letters within the test.
    let text = std::fs::read_to_string(&p.cfg).unwrap();
    let text =
        text.replace("retry_max = \"100ms\"", "retry_max = \"1s\"").replace("max_attempts = 3", "max_attempts = 100");
    std::fs::write(&p.cfg, text).unwrap();
    let (mut owner, broker, _) = spawn_collector(&p.cfg).await;
    let (_other, _, http2) = spawn_collector(&p.cfg).await;
    let mut a = connected_agent(broker, &p.pki).await;
    p.hook.failing.store(true, Ordering::SeqCst);
    let start = publish_state(&mut a, 1, MachineState::Down).await;
    let key = format!("plant-a/press-1/{start}");
    let first = next(&mut p).await;
    assert_eq!(first.id, format!("{key}#0"));
    // Rung 1 (e-mail) is sent; rungs 2 and 3 (webhook, failing) are claimed and being retried when the
    // owner dies.
    let state = "SELECT string_agg(rung || ':' || state, ',' ORDER BY rung) FROM shiftlens.escalation";
    assert!(pg_becomes(&pg, name, state, "0:sent,1:pending,2:pending").await, "{}", pg.psql(name, state));
    let failed = "SELECT count(*) FROM shiftlens.escalation WHERE attempts > 0 AND state = 'pending'";
    assert!(pg_becomes(&pg, name, failed, "2").await);
    owner.kill().await.unwrap();
    drop(a);
    p.hook.failing.store(false, Ordering::SeqCst);
    // The other collector takes the site, delivers the two pending rungs, and sends rung 1 no more.
    let mut ids = vec![first.id];
    for _ in 0..2 {
        ids.push(next(&mut p).await.id);
    }
    ids.sort();
    assert_eq!(ids, [format!("{key}#0"), format!("{key}#1"), format!("{key}#2")]);
    assert!(pg_becomes(&pg, name, state, "0:sent,1:sent,2:sent").await, "{}", pg.psql(name, state));
    // Nothing more once the rungs are used up: two planning passes later, still one message per rung.
    let passes = chrono::Utc::now().timestamp_millis() + 2 * 5_000;
    assert!(eventually(WAIT, || chrono::Utc::now().timestamp_millis() > passes).await);
    assert!(p.got.try_recv().is_err(), "a rung was sent twice");
    assert_eq!(pg.psql(name, "SELECT count(*) FROM shiftlens.escalation"), "3");
    // The survivor's board shows the three rungs.
    let b = board(http2).await;
    assert_eq!(b[0]["messages"].as_array().unwrap().len(), 3, "{b}");
}

/// The fence on the shared store: a rung is claimed only for a writer session that holds the site's
/// ownership lock, and a delivery check by any other session answers "not the owner".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_on_postgres_holds_only_for_the_session_that_owns_the_site() {
    use shiftlens_collector::escalate::{ladder::Recipient, Action, Reason, Target};
    use shiftlens_collector::store::escalations::{Db, Wanted};
    use shiftlens_collector::store::pg::{owner, sql};
    let pg = support::pg::PgCluster::start(false);
    let name = "escalation_fence";
    pg.create_db(name);
    let dir = tempfile::tempdir().unwrap();
    let file = shiftlens_common::config::ConfigFile::from_text(dir.path().join("c.toml"), pg.store_toml(name));
    let store = shiftlens_collector::Config::from_file(&file).unwrap().store;
    // A session that owns plant-a, as a store writer does.
    let target = shiftlens_collector::store::pg::Target::from_store(&store).unwrap();
    let writer = shiftlens_collector::store::pg::open(&target).await.unwrap();
    assert!(sql::try_own(&writer, "plant-a").await.unwrap());
    let pid = owner::backend_pid(&writer).await.unwrap();
    let (claims, wanted) = tokio::task::spawn_blocking(move || {
        let db = Db::open(&store).unwrap();
        let action = |site: &str, rung| Action {
            stop_key: format!("{site}/press-1/1000"),
            site: site.into(),
            asset: "press-1".into(),
            start_ms: 1000,
            rung,
            target: Target::Qualified,
            reason: Reason::Uncovered,
            skills: vec!["plc".into()],
            to: Some(Recipient {
                person: "tech".into(),
                channel: shiftlens_collector::people::Channel::Email,
                address: "tech@plant.example".into(),
                availability: "on_call",
            }),
            due_ms: 1000,
        };
        let claim = |site, rung, pid| db.claim(&action(site, rung), 1000, &[rung as u8; 32], 9_000, pid).unwrap();
        let claims = [
            claim("plant-a", 0, pid).is_some(),
            claim("plant-a", 0, pid).is_some(),     // claimed before
            claim("plant-a", 1, pid + 1).is_some(), // not the owner's session
            claim("plant-b", 1, pid).is_some(),     // a site it does not own
        ];
        let wanted = [
            db.still_wanted("plant-a/press-1/1000", "plant-a", "press-1", 1000, pid).unwrap(),
            db.still_wanted("plant-a/press-1/1000", "plant-a", "press-1", 1000, pid + 1).unwrap(),
        ];
        (claims, wanted)
    })
    .await
    .unwrap();
    assert_eq!(claims, [true, false, false, false]);
    // No downtime row: the stop is not open (so not wanted) for the owner; another session is not the owner.
    assert_eq!(wanted, [Wanted::No, Wanted::NotOwner]);
}
