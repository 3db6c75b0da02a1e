//! Helpers of the HTTP and browser tests and the HTTP benchmark: seed a real store file from the synthetic
//! plant generator, start the real router on a free loopback port, and speak HTTP/1.1 over a real socket.
#![allow(dead_code)] // each test binary and the bench use a different part

use shiftlens_collector::http::{self, AppState};
use shiftlens_collector::people::import::{Kind, Record};
use shiftlens_collector::report::synth::{self, Plant, Size};
use shiftlens_collector::store::{self, events, people as db};
use shiftlens_collector::Config;
use shiftlens_common::config::ConfigFile;
use shiftlens_common::status::{SourceHealth, Status};
use shiftlens_common::{GatewayId, SiteId};
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A small plant year: quick to seed and join, big enough for every report to have rows.
pub const SMALL: Size = Size { assets: 8, people: 40, downtime: 3_000, alarms: 5_000 };

/// The synthetic year's window as URL parameters.
pub const YEAR: &str = "from=2025-01-01&to=2026-01-01";

pub fn plant(size: Size) -> Plant {
    synth::year(7, size)
}

/// Rows for the import path, keyed by position.
pub fn records<T: serde::Serialize>(items: &[T]) -> Vec<Record> {
    items
        .iter()
        .enumerate()
        .map(|(i, x)| Record { key: format!("{i:07}"), body: serde_json::to_value(x).unwrap() })
        .collect()
}

/// Writes the plant into a fresh store: personnel through the import path, downtime rows, alarm events,
/// and two gateways (one online with a backlog, one offline).
pub fn seed(path: &Path, plant: &Plant) {
    let mut conn = store::open_writer(path).unwrap();
    let p = &plant.people;
    let now = chrono::Utc::now().timestamp_millis();
    let kinds: [(Kind, Vec<Record>); 8] = [
        (Kind::Skills, records(&p.skills)),
        (Kind::People, records(&p.people)),
        (Kind::PersonSkills, records(&p.person_skills)),
        (Kind::Rotation, records(&p.rotations)),
        (Kind::Roster, records(&p.roster)),
        (Kind::Assets, records(&p.assets)),
        (Kind::AlarmClasses, records(&p.alarm_classes)),
        (Kind::WorkOrders, records(&p.work_orders)),
    ];
    for (kind, recs) in kinds {
        db::import(&mut conn, kind, "seed", &recs, now).unwrap();
    }
    db::import(&mut conn, Kind::Initiatives, "seed", &records(&p.initiatives), now).unwrap();
    let tx = conn.transaction().unwrap();
    for d in &plant.downtime {
        events::upsert_downtime(&tx, d).unwrap();
    }
    {
        let mut ins = tx
            .prepare("INSERT INTO events (gateway, epoch, seq, site, asset, ts_ms, kind, body, received_ms) VALUES ('gw-1', 1, ?1, 'plant-a', ?2, ?3, 'alarm', ?4, ?3)")
            .unwrap();
        // One alarm id per activation: an `active` for an alarm already active is not a new activation.
        for (i, a) in plant.alarms.iter().enumerate() {
            let body = serde_json::json!({ "alarm": { "id": format!("AL{i}"), "active": true, "severity": 500, "text": "alarm" } })
                .to_string();
            ins.execute(rusqlite::params![i as i64, a.asset, a.ts_ms, body]).unwrap();
        }
    }
    let site = SiteId::parse("plant-a").unwrap();
    let status = |online: bool, depth: u64| Status {
        online,
        buffer_depth: depth,
        agent_version: "0.1.0".into(),
        sources: vec![SourceHealth { id: "plc-1".into(), connected: online, error: None }],
        ..Status::offline(now)
    };
    events::upsert_status(&tx, &site, &GatewayId::parse("gw-1").unwrap(), &status(true, 1234), now - 5_000).unwrap();
    events::upsert_status(&tx, &site, &GatewayId::parse("gw-2").unwrap(), &status(false, 0), now - 3_600_000).unwrap();
    tx.commit().unwrap();
}

/// A validated config for a store file, with extra `[http]` lines (tokens).
pub fn config(db: &Path, http_extra: &str) -> Config {
    let text = format!(
        "[store]\npath = {:?}\n\n[people]\ntimezone = \"Europe/Berlin\"\n\n[http]\nbind = \"127.0.0.1:0\"\n{http_extra}\n",
        db.display().to_string()
    );
    Config::from_file(&ConfigFile::from_text("collector.toml", text)).unwrap()
}

/// Starts the router on a free port, with the config's `[http]` limits.
pub async fn spawn(config: &Config) -> (SocketAddr, AppState) {
    let state = AppState::new(config, None).unwrap();
    let addr = http::serve_with("127.0.0.1:0", http::router(state.clone()), config.http.limits).await.unwrap();
    (addr, state)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// `app;dur=12.3` → 12.3
    pub fn server_ms(&self) -> f64 {
        self.header("server-timing").and_then(|v| v.split("dur=").nth(1)).and_then(|v| v.parse().ok()).unwrap()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Host: addr` unless `headers` name another).
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body: String::from_utf8(body).unwrap() }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().split(';').next().unwrap().trim(), 16)
            .unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}
