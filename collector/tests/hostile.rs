//! Issue 11's acceptance, end to end: one real collector (the embedded mTLS broker with its gate, ingest,
//! the store, and the HTTP router on a real port) and a good gateway that publishes a small batch every
//! 100 ms and times each ack, while each attack of the issue is replayed in turn. After each attack the good
//! gateway's acks kept coming (worst publish-to-ack time within [`ACK_BOUND`]), every good event is stored
//! exactly once, and `/healthz` answers. Also: the gate's connection budget, and `report --from/--to`
//! through the real binary.
#![allow(clippy::unwrap_used)]

mod http_support;
mod support;

use http_support::{get, plant, request, seed, SMALL};
use rumqttc::{MqttOptions, QoS};
use shiftlens_collector::topology::{self, Collector};
use shiftlens_collector::{feed, http, Config};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::wire::encode_batch;
use shiftlens_common::{AssetId, Batch, Event as WireEvent, EventBody, MachineState, SiteId, Topic};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound: a good gateway keeps being acked within 1 s during each attack.
const ACK_BOUND: Duration = Duration::from_secs(1);
/// The good gateway's epoch.
const EPOCH: u64 = 42;
/// Good events acked while an attack that lasts is held open, and again before its end is judged: ten
/// batches, about a second.
const ACKS_DURING: usize = 30;

/// What the good gateway saw: when each seq was published and acked.
#[derive(Default)]
struct Probe {
    sent: HashMap<u64, Instant>,
    acked: BTreeSet<u64>,
    next: u64,
    /// Since the current attack began: the worst publish-to-ack time and the number of acked seqs.
    worst: Duration,
    acks: usize,
    errors: Vec<String>,
}

impl Probe {
    fn begin(&mut self) {
        self.worst = Duration::ZERO;
        self.acks = 0;
    }
}

type Shared = Arc<Mutex<Probe>>;

/// Publishes 3 events every 100 ms as gateway `good` and records each ack's delay.
fn good_gateway(mut c: TestClient, probe: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let first = {
                        let mut p = probe.lock().unwrap();
                        let first = p.next;
                        p.next += 3;
                        let now = Instant::now();
                        for seq in first..first + 3 {
                            p.sent.insert(seq, now);
                        }
                        first
                    };
                    publish_batch(&c, "good", &batch("good", EPOCH, first, 3)).await;
                }
                seen = c.seen.recv() => {
                    let now = Instant::now();
                    let mut p = probe.lock().unwrap();
                    match seen {
                        Some(Seen::Ack(a)) if a.epoch == EPOCH => {
                            for (lo, hi) in a.ranges {
                                for seq in lo..=hi {
                                    if p.acked.insert(seq) {
                                        let waited = p.sent.get(&seq).map_or(Duration::ZERO, |t| now - *t);
                                        p.worst = p.worst.max(waited);
                                        p.acks += 1;
                                    }
                                }
                            }
                        }
                        Some(Seen::Error(e)) => p.errors.push(e),
                        Some(_) => {}
                        None => return,
                    }
                }
            }
        }
    })
}

struct World {
    _dir: tempfile::TempDir,
    pki: Pki,
    db: PathBuf,
    collector: Collector,
    gate: SocketAddr,
    web: SocketAddr,
    probe: Shared,
    worst: Vec<(&'static str, Duration)>,
}

impl World {
    async fn start() -> World {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("collector.db");
        seed(&db, &plant(SMALL));
        let pki = Pki::new(dir.path(), "plant");
        let broker = "max_connections = 512\nmax_handshakes = 64\n";
        let text =
            config_text(dir.path(), &pki.leaf("localhost"), broker) + "\n[people]\ntimezone = \"Europe/Berlin\"\n";
        let cfg = Config::from_file(&ConfigFile::from_text(dir.path().join("collector.toml"), text)).unwrap();
        let collector = topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap();
        let state = http::AppState::new(&cfg, Some(collector.metrics.clone())).unwrap();
        let web = http::serve_with("127.0.0.1:0", http::router(state), cfg.http.limits).await.unwrap();
        let gate = collector.broker.unwrap();
        let mut good = agent(gate, &pki, "good");
        assert!(wait_for(&mut good, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
        let probe: Shared = Arc::new(Mutex::new(Probe { next: 1, ..Probe::default() }));
        // The gateway task ends with the test's runtime.
        drop(good_gateway(good, probe.clone()));
        let w = World { _dir: dir, pki, db, collector, gate, web, probe, worst: Vec::new() };
        w.acks_at_least(ACKS_DURING).await;
        w
    }

    fn acks(&self) -> usize {
        self.probe.lock().unwrap().acks
    }

    /// Waits until the good gateway got `n` acks since the attack began (so the attack ran meanwhile).
    async fn acks_at_least(&self, n: usize) {
        assert!(eventually(WAIT, || self.acks() >= n).await, "the good gateway got {} acks, not {n}", self.acks());
    }

    fn begin(&self) {
        self.probe.lock().unwrap().begin();
    }

    /// After an attack: everything the good gateway sent so far is acked (and each ack was within the
    /// bound, checked at the end), each of its events is stored exactly once, and `/healthz` answers.
    async fn end(&mut self, attack: &'static str) {
        self.acks_at_least(ACKS_DURING).await;
        let mark = self.probe.lock().unwrap().next;
        let all_acked = || {
            let p = self.probe.lock().unwrap();
            (1..mark).all(|s| p.acked.contains(&s))
        };
        assert!(eventually(WAIT, all_acked).await, "{attack}: the good gateway's events were not all acked");
        let (worst, acks) = {
            let p = self.probe.lock().unwrap();
            assert!(p.errors.is_empty(), "{attack}: the good gateway lost its connection: {:?}", p.errors);
            (p.worst, p.acks)
        };
        assert!(acks > 0, "{attack}: no ack during the attack");
        let good = |sql: &str| count(&self.db, &format!("SELECT {sql} FROM events WHERE gateway = 'good'"));
        assert_eq!(
            good(&format!("COUNT(*) FILTER (WHERE seq < {mark} AND epoch = {EPOCH})")),
            mark as i64 - 1,
            "{attack}"
        );
        assert_eq!(good("COUNT(*)"), good("COUNT(DISTINCT seq)"), "{attack}: a good event is stored twice");
        assert_eq!(good(&format!("COUNT(*) FILTER (WHERE epoch <> {EPOCH} OR site <> '{SITE}')")), 0, "{attack}");
        let web = self.web;
        let mut healthy = false;
        for _ in 0..(WAIT * 10) {
            // Until the server has seen the attack's sockets close, the HTTP cap may still be full: a new
            // connection is then turned away (503, or a reset when it closes with our request unread).
            if healthz(web).await {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(healthy, "{attack}: /healthz does not answer 200");
        eprintln!("{attack:<44} worst ack {worst:>8.0?} ({acks} events acked)");
        self.worst.push((attack, worst));
        self.begin();
    }

    /// A connected gateway of `site` (the good gateway's site when `None`) with its own certificate.
    async fn gateway(&self, gw: &str, site: Option<&str>) -> TestClient {
        let files = self.pki.leaf_at(gw, Some(site.unwrap_or(SITE)));
        let s = SiteId::parse(site.unwrap_or(SITE)).unwrap();
        let ack = Topic::Ack { site: s, gateway: gateway(gw) }.to_string();
        let mut c = connect(options(self.gate, gw, &self.pki.ca, Some(&files)), vec![ack], site.is_some());
        assert!(wait_for(&mut c, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
        c
    }

    fn dead_letters(&self, kind: &str) -> i64 {
        count(&self.db, &format!("SELECT COUNT(*) FROM dead_letters WHERE kind = '{kind}'"))
    }
}

fn events(gw: &str, epoch: u64, seqs: impl Iterator<Item = (u64, i64)>) -> Batch {
    let events = seqs
        .map(|(seq, ts_ms)| WireEvent {
            seq,
            ts_ms,
            asset: AssetId::parse("press-2").unwrap(),
            body: EventBody::State {
                state: if seq % 2 == 0 { MachineState::Down } else { MachineState::Running },
                reason: None,
            },
        })
        .collect();
    Batch::new(site(), gateway(gw), epoch, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_gateway_keeps_being_acked_during_every_attack_and_loses_nothing() {
    let mut w = World::start().await;
    let web = w.web;

    // 1. A viewer asks for a window of 285 million years (it aborted the collector), and for the alarm
    //    load of the whole history; a window at the bound (three years) is served meanwhile.
    w.begin();
    for path in [
        "/api/v1/overview?from=0&to=9000000000000000000",
        "/api/v1/alarm-load?from=1970-01-01T00:00:00Z&to=9999-12-31T00:00:00Z",
        "/api/v1/alarm-load?from=2001-01-01&to=2199-12-31",
    ] {
        assert_eq!(get(web, path).await.status, 400, "{path}");
    }
    assert_eq!(get(web, "/api/v1/overview?from=2023-01-01&to=2026-01-01").await.status, 200);
    w.end("huge-window overview and alarm load").await;

    // 2. 500 connections that send half a header and stall, held while the good gateway runs.
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(web).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await;
        slow.push(s);
    }
    w.acks_at_least(ACKS_DURING).await;
    drop(slow);
    w.end("500 partial HTTP headers").await;

    // 3. Half-open TLS connections to the gate (silent, or a TLS record header and then nothing), well
    //    beyond max_handshakes, held while the good gateway runs.
    let mut half_open = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(w.gate).await.unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
        }
        half_open.push(s);
    }
    w.acks_at_least(ACKS_DURING).await;
    drop(half_open);
    w.end("300 half-open TLS connections to the gate").await;

    // 4. A second gateway floods its own topic with garbage (the gate lets it in: it is its own topic).
    let bad = w.gateway("bad", None).await;
    for i in 0..2000u32 {
        let junk = format!("not a batch {i}").into_bytes();
        bad.client.publish(events_topic("bad"), QoS::AtMostOnce, false, junk).await.unwrap();
    }
    w.acks_at_least(ACKS_DURING).await;
    let junk = "SELECT COUNT(*) FROM dead_letters WHERE topic LIKE '%/bad/events'";
    assert!(eventually(WAIT, || count(&w.db, junk) > 0).await, "no dead letter for the garbage");
    w.end("2,000 malformed publishes").await;

    // 5. Another gateway sends 8,000 events in descending time order (each one late).
    let mut late = w.gateway("late", None).await;
    let top = 1_800_000_000_000i64;
    for b in 0..40u64 {
        let first = b * 200 + 1;
        let batch = events("late", 9, (first..first + 200).map(|seq| (seq, top - seq as i64 * 1000)));
        publish(&late, &events_topic("late"), encode_batch(&batch)).await;
    }
    assert!(wait_acked(&mut late, 9, &(1..=8000).collect(), &mut BTreeSet::new(), WAIT).await);
    w.end("8,000 descending timestamps").await;

    // 6. `good` of another site publishes on this site's `good` topic (seqs the good gateway never uses).
    let mut intruder = w.gateway("good", Some("plant-b")).await;
    publish(&intruder, &events_topic("good"), encode_batch(&batch("good", EPOCH, 1_000_000, 5))).await;
    assert!(wait_for(&mut intruder, WAIT, |s| matches!(s, Seen::Error(_)).then_some(())).await.is_some());
    assert!(eventually(WAIT, || w.dead_letters("identity") >= 1).await);
    drop(intruder);
    w.end("another site's topic").await;

    // 7. A plain client on rumqttd's internal port, without and with a guessed login.
    let internal = w.collector.broker_internal.unwrap();
    for login in [None, Some(("shiftlens", "guess"))] {
        let mut o = MqttOptions::new("good", internal.ip().to_string(), internal.port());
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let mut snoop = connect(o, vec!["shiftlens/v1/#".into()], true);
        let outcome = refused(&mut snoop).await;
        assert_eq!(outcome, Some(true), "{login:?}: the internal port took the client");
    }
    w.end("plain client on the internal port").await;

    // 8. Timestamps at the ends of i64.
    for ts in [i64::MIN, i64::MAX] {
        publish(&bad, &events_topic("bad"), encode_batch(&events("bad", 3, [(1, ts)].into_iter()))).await;
    }
    assert!(eventually(WAIT, || w.dead_letters("bad_timestamp") >= 2).await);
    w.end("i64::MIN and i64::MAX timestamps").await;

    // 9. Cross-site POSTs to the import API (open mode: everyone local is admin).
    let csv = b"id,name,go_live,needs\nvision-qa,Vision QA,2026-03-01,vision:3:2\n";
    for headers in [vec![("Origin", "http://evil.example")], vec![("Sec-Fetch-Site", "cross-site"), ("Origin", "null")]]
    {
        for _ in 0..20 {
            let r = request(web, "POST", "/api/v1/import/initiatives", &headers, csv).await;
            assert_eq!(r.status, 403, "{headers:?}");
        }
    }
    w.end("cross-site POSTs").await;

    // Nothing of the attackers got in under the good gateway's name, nor any impossible time.
    assert_eq!(count(&w.db, "SELECT COUNT(*) FROM events WHERE seq >= 1000000"), 0);
    assert_eq!(count(&w.db, "SELECT COUNT(*) FROM events WHERE ts_ms < 946684800000 OR ts_ms > 7258118400000"), 0);
    assert_eq!(count(&w.db, "SELECT COUNT(*) FROM events WHERE gateway = 'late'"), 8000);
    let over: Vec<_> = w.worst.iter().filter(|(_, d)| *d > ACK_BOUND).collect();
    assert!(over.is_empty(), "acks slower than {ACK_BOUND:?}: {over:?}");
    drop(bad);
    w.collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Reads from `s` until the peer closes it (EOF or reset).
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(Duration::from_secs(WAIT), s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

async fn start_gate(dir: &Path, pki: &Pki, broker: &str) -> Collector {
    init_logs();
    let cfg = config(dir, &pki.leaf("localhost"), broker);
    topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_has_its_own_connection_budget_and_few_unauthenticated_places() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    // A handshake timeout far longer than the test: a silent connection closed at once was refused.
    let collector =
        start_gate(dir.path(), &pki, "max_connections = 3\nmax_handshakes = 2\nhandshake_timeout = \"300s\"\n").await;
    let addr = collector.broker.unwrap();

    // Two silent connections take both unauthenticated places; a third is closed at once.
    let mut pending = vec![TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut third).await, "a third unauthenticated connection was kept");
    // A real gateway is refused too while they last, and gets in (it retries) once they are gone.
    let mut a = agent(addr, &pki, "gw-a");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Error(_)).then_some(())).await.is_some());
    pending.clear();
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // Authenticated, a gateway no longer counts against max_handshakes, only against max_connections.
    let mut b = agent(addr, &pki, "gw-b");
    assert!(wait_for(&mut b, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let _last_place = TcpStream::connect(addr).await.unwrap();
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut over).await, "a fourth connection was kept beyond max_connections = 3");
    // Those connected are untouched: both still acked.
    for (c, gw) in [(&mut a, "gw-a"), (&mut b, "gw-b")] {
        publish_batch(c, gw, &batch(gw, 1, 1, 5)).await;
        assert!(wait_acked(c, 1, &(1..=5).collect(), &mut BTreeSet::new(), WAIT).await, "{gw}");
    }
    drop((a, b));
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_is_closed_after_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start_gate(dir.path(), &pki, "max_handshakes = 1\nhandshake_timeout = \"1s\"\n").await;
    let addr = collector.broker.unwrap();
    // Silent, and a TLS record header with nothing after it: each holds the only unauthenticated place
    // until the timeout closes it, and then the next one gets it.
    for hello in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00]] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(hello).await.unwrap();
        assert!(closed(&mut s).await);
    }
    let mut a = agent(addr, &pki, "gw-a");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    drop(a);
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// `shiftlens-collector report` through the real binary, on the seeded store.
fn report(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .arg("report")
        .args(args)
        .arg("--config")
        .arg(dir.join("collector.toml"))
        .output()
        .unwrap()
}

#[test]
fn report_refuses_an_unbounded_window_with_an_error_naming_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let text = format!("[store]\npath = {:?}\n\n[people]\ntimezone = \"Europe/Berlin\"\n", db.display().to_string());
    std::fs::write(dir.path().join("collector.toml"), text).unwrap();
    for (name, from, to, needle) in [
        ("coverage", "2001-01-01", "2199-12-31", "[http] max_window"),
        ("alarm-load", "2001-01-01", "2199-12-31", "at most 1096 days"),
        ("coverage", "1970-01-01", "9999-12-31", "times must lie between 2000-01-01 and 2200-01-01"),
        ("join", "-9223372036854775808", "2025-01-01", "out of range"),
        ("mttr", "2025-01-01", "9223372036854775807", "out of range"),
        ("gaps", "2025-02-01", "2025-01-01", "from must be before to"),
    ] {
        let out = report(dir.path(), &[name, &format!("--from={from}"), &format!("--to={to}")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} {from} {to}: {err}");
        assert!(!err.contains("panicked"), "{name} {from} {to}: {err}");
        assert!(err.contains("report --from/--to") && err.contains(needle), "{name} {from} {to}: {err}");
    }
    // A window within the bound is still served.
    let out = report(dir.path(), &["coverage", "--from", "2025-01-01", "--to", "2026-01-01", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Whether `GET /healthz` answers 200 over a fresh connection (false on any socket error).
async fn healthz(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.is_ok() && raw.starts_with(b"HTTP/1.1 200")
}
