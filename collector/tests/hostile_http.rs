//! Hostile input against the HTTP server, over real sockets to the real router on a free port and a real
//! store seeded from the synthetic plant: every window, limit and offset is bounded before work is sized
//! from it; state-changing requests from another site are refused with a cookie and in open mode; a
//! forged Host is refused; half-sent headers, slow bodies and a connection flood are cut off while real
//! requests still get through; every CSV the program writes neutralises formulas; the login redirect stays
//! on the site; and every path of the OpenAPI document survives hostile parameters without a 5xx.
#![allow(clippy::unwrap_used)]

mod http_support;

use http_support::*;
use proptest::prelude::*;
use shiftlens_collector::http::openapi;
use shiftlens_collector::store::{self, events};
use shiftlens_collector::timeline::{Downtime, FirstOut};
use shiftlens_common::status::Status;
use shiftlens_common::{AssetId, GatewayId, SiteId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-0987654321";

/// A hang guard, not a timing assertion: a test that would wait for ever fails after this long instead.
const HANG: Duration = Duration::from_secs(120);

async fn seeded(http_extra: &str) -> (tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, http_extra)).await;
    (dir, addr)
}

fn error_of(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(HANG, s.read(&mut buf)).await.expect("the server never closed the connection") {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_limits_and_offsets_are_bounded_with_a_400_naming_the_bound() {
    let (_dir, addr) = seeded("max_rows = 500\n").await;
    for (path, needle) in [
        // Sized a weekly series of ~600 GB from this window and aborted the process.
        ("/api/v1/overview?from=0&to=9000000000000000000", "times must lie between 2000-01-01 and 2200-01-01"),
        ("/api/v1/overview?from=-9223372036854775808&to=2025-01-01", "out of range"),
        ("/api/v1/overview?from=2025-01-01&to=9223372036854775807", "out of range"),
        ("/api/v1/overview?from=1970-01-01T00:00:00Z&to=9999-12-31T00:00:00Z", "out of range"),
        ("/api/v1/alarm-load?from=2001-01-01&to=2199-12-31", "at most 1096 days"),
        ("/api/v1/coverage?from=2001-01-01&to=2199-12-31", "[http] max_window"),
        ("/api/v1/downtime?from=2001-01-01&to=2199-12-31", "[http] max_window"),
        ("/api/v1/join?from=2001-01-01", "[http] max_window"),
        ("/api/v1/join?limit=501", "limit 501 is too large: at most 500 ([http] max_rows)"),
        ("/api/v1/join?limit=18446744073709551616", "invalid limit"),
        ("/api/v1/join?offset=18446744073709551615", "offset 18446744073709551615 is too large"),
        ("/api/v1/mttr?limit=99999999", "[http] max_rows"),
        ("/api/v1/recert?horizon=99999d", "at most 730d"),
        // The synthetic year has 3000 downtime events: more than max_rows in one answer needs paging.
        (&format!("/api/v1/downtime?{YEAR}") as &str, "page with limit and offset"),
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let e = error_of(&r);
        assert!(e.contains(needle), "{path}: {e}");
    }
    // The pages take the same parameters and answer the same way.
    for path in [
        "/?from=0&to=9000000000000000000",
        "/alarm-load?from=2001-01-01&to=2199-12-31",
        "/downtime?offset=18446744073709551615",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    // Paging the feed: each page at most `limit`, X-Total-Count the whole window.
    let r = get(addr, &format!("/api/v1/downtime?{YEAR}&limit=500")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 500);
    let total: usize = r.header("x-total-count").unwrap().parse().unwrap();
    assert!(total > 2000, "{total}");
    let r = get(addr, &format!("/api/v1/downtime?{YEAR}&limit=500&offset={}", total - 123)).await;
    assert_eq!(r.json().as_array().unwrap().len(), 123);
    // A window at the bound is served, and the server is still there.
    let r = get(addr, "/api/v1/overview?from=2023-01-01&to=2026-01-01").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rows"].as_array().unwrap().len(), 157, "weekly rows of three years");
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

/// Imports a new initiative (a change the gaps report shows) with `headers`; returns the status.
async fn try_import(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let csv = "id,name,go_live,needs\nvision-qa,Vision QA,2026-03-01,vision:3:2\n";
    request(addr, "POST", "/api/v1/import/initiatives", headers, csv.as_bytes()).await.status
}

async fn initiatives(addr: SocketAddr, headers: &[(&str, &str)]) -> Vec<String> {
    let r = request(addr, "GET", &format!("/api/v1/gaps?{YEAR}"), headers, b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut s: Vec<String> =
        r.json()["rows"].as_array().unwrap().iter().map(|r| r["scope"].as_str().unwrap().to_string()).collect();
    s.dedup();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_in_open_mode_and_with_a_session_cookie() {
    // Open mode (no tokens, loopback): everyone local is admin, so only the origin tells a page of ours
    // from another site's.
    let (_dir, addr) = seeded("").await;
    let before = initiatives(addr, &[]).await;
    assert_eq!(before, ["now", "opcua-rollout"]);
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site"), ("Origin", "null")],
        vec![("Referer", "http://evil.example/page")],
        vec![],
    ] {
        assert_eq!(try_import(addr, &headers).await, 403, "{headers:?}");
    }
    assert_eq!(initiatives(addr, &[]).await, before, "nothing was imported");
    let origin = format!("http://{addr}");
    assert_eq!(try_import(addr, &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")]).await, 200);
    assert_eq!(initiatives(addr, &[]).await, ["now", "vision-qa"], "a same-origin import is stored");

    // With tokens: a session cookie alone is not enough from another site; a bearer token is.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(ADMIN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let (addr, _) =
        spawn(&config(&db, &format!("[[http.tokens]]\nname = \"hr\"\nrole = \"admin\"\nsha256 = \"{hash}\"\n"))).await;
    let origin = format!("http://{addr}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let r =
        request(addr, "POST", "/login", &[ct, ("Origin", &origin)], format!("token={ADMIN}&next=%2F").as_bytes()).await;
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let before = initiatives(addr, &[("Cookie", &cookie)]).await;
    for extra in [vec![("Origin", "http://evil.example")], vec![("Sec-Fetch-Site", "cross-site")], vec![]] {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(extra);
        assert_eq!(try_import(addr, &headers).await, 403, "{headers:?}");
    }
    assert_eq!(initiatives(addr, &[("Cookie", &cookie)]).await, before, "nothing was imported");
    let bearer = format!("Bearer {ADMIN}");
    assert_eq!(try_import(addr, &[("Authorization", &bearer)]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_ours_is_refused_so_dns_rebinding_gets_nothing() {
    let (_dir, addr) = seeded("public_names = [\"dashboard.plant.example\"]\n").await;
    let port = addr.port();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil}");
    // A rebound page sends its own name as Host and as Origin: they match each other, not us.
    let r = request(addr, "GET", &format!("/api/v1/overview?{YEAR}"), &[("Host", &evil)], b"").await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert!(error_of(&r).contains("[http] public_names"), "{}", r.body);
    let before = initiatives(addr, &[]).await;
    let h = [("Host", evil.as_str()), ("Origin", evil_origin.as_str())];
    assert_eq!(try_import(addr, &h).await, 421);
    assert_eq!(initiatives(addr, &[]).await, before, "nothing was imported");
    let page = request(addr, "GET", "/", &[("Host", &evil)], b"").await;
    assert_eq!(page.status, 421);
    // Our own names pass: loopback with any port, and the configured public name.
    for host in ["localhost", &format!("127.0.0.1:{port}"), &format!("[::1]:{port}"), "dashboard.plant.example"] {
        let r = request(addr, "GET", &format!("/api/v1/overview?{YEAR}"), &[("Host", host)], b"").await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_header_and_a_stalled_body_are_cut_off() {
    let (_dir, addr) = seeded("header_timeout = \"1s\"\nrequest_timeout = \"1s\"\n").await;
    // Headers that never end: the server closes the connection (waited for, not timed).
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /api/v1/overview HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes()).await.unwrap();
    read_to_eof(&mut s).await;
    // A connection that never sends anything is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    read_to_eof(&mut idle).await;
    // A body that stops halfway: 503 naming the timeout, then the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let origin = format!("http://{addr}");
    s.write_all(
        format!(
            "POST /api/v1/import/skills HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nContent-Length: 1000\r\n\r\nid,name"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut s).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // Meanwhile and afterwards, real requests are served.
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

/// A request on a fresh connection; the raw answer, empty if the connection was reset.
async fn probe(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    String::from_utf8_lossy(&read_to_eof(&mut s).await).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_a_connection_is_turned_away_and_real_requests_resume() {
    let (_dir, addr) = seeded("max_connections = 4\nheader_timeout = \"600s\"\n").await;
    // Fill every slot with a connection that is sending its headers slowly.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes()).await.unwrap();
        held.push(s);
    }
    // The server accepts in order, so the fifth is over the cap: told 503 and closed without waiting for
    // anything (it sends nothing, so only the server can end it).
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut fifth).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("max_connections"), "{answer}");
    // The held ones are still open: finishing a header gets an answer.
    let mut first = held.remove(0);
    first.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut first).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "a held connection is served: {answer}");
    // Its slot is free again once the server has seen the close: a real request succeeds.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let answer = probe(addr, &format!("/api/v1/overview?{YEAR}")).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other three still hold.
    for mut s in held {
        s.write_all(b"Connection: close\r\n\r\n").await.unwrap();
        assert!(String::from_utf8_lossy(&read_to_eof(&mut s).await).starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sends_the_browser_only_to_paths_of_this_site() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(ADMIN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let (addr, _) =
        spawn(&config(&db, &format!("[[http.tokens]]\nname = \"hr\"\nrole = \"admin\"\nsha256 = \"{hash}\"\n"))).await;
    let origin = format!("http://{addr}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    for (next, want) in [
        ("%2F%09%2Fevil.example", "/"),
        ("%2F%5C%2Fevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2Fcoverage%3Fcrew%3DA", "/coverage?crew=A"),
    ] {
        let form = format!("token={ADMIN}&next={next}");
        let r = request(addr, "POST", "/login", &[ct, ("Origin", &origin)], form.as_bytes()).await;
        assert_eq!((r.status, r.header("location")), (303, Some(want)), "{next}");
    }
    let r = get(addr, "/login?next=%2F%09%2Fevil.example").await;
    assert!(r.body.contains("name=\"next\" value=\"/\""), "{}", r.body);
}

/// Text cells a spreadsheet would run.
const FORMULAS: [&str; 4] = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"];

fn assert_no_formula(what: &str, csv: &str) {
    let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(csv.as_bytes());
    let mut cells = 0;
    for rec in r.records() {
        for cell in rec.unwrap().iter() {
            cells += 1;
            let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
            assert!(!formula || cell.parse::<f64>().is_ok(), "{what}: a cell would run as a formula: {cell:?}");
        }
    }
    assert!(cells > 0, "{what}: empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_csv_the_collector_writes_neutralises_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    {
        let conn = store::open_writer(&db).unwrap();
        let d = Downtime {
            site: SiteId::parse("plant-a").unwrap(),
            gateway: GatewayId::parse("gw-1").unwrap(),
            asset: AssetId::parse("asset-001").unwrap(),
            start_ms: 1_750_000_000_000,
            end_ms: Some(1_750_000_600_000),
            reason: Some(FORMULAS[0].into()),
            first_out: Some(FirstOut {
                id: FORMULAS[3].into(),
                text: FORMULAS[1].into(),
                class: Some(FORMULAS[2].into()),
                ts_ms: 1_749_999_999_000,
            }),
            data_gap: false,
        };
        events::upsert_downtime(&conn, &d).unwrap();
        let status = Status { online: true, agent_version: FORMULAS[0].into(), ..Status::offline(1_750_000_000_000) };
        let gw = GatewayId::parse("gw-3").unwrap();
        events::upsert_status(&conn, &SiteId::parse("plant-a").unwrap(), &gw, &status, 1_750_000_000_000).unwrap();
    }
    let cfg = config(&db, "");
    let (addr, _) = spawn(&cfg).await;
    let window = "from=2025-06-15&to=2025-06-16";
    let feed = get(addr, &format!("/api/v1/downtime?{window}&format=csv")).await;
    assert_eq!(feed.status, 200);
    assert!(feed.body.contains("'=HYPERLINK(") && feed.body.contains("'@SUM(1+1)"), "{}", feed.body);
    assert_no_formula("downtime feed CSV", &feed.body);
    let gws = get(addr, "/api/v1/gateways?format=csv").await;
    assert!(gws.body.contains("'=HYPERLINK("), "{}", gws.body);
    assert_no_formula("gateways CSV", &gws.body);
    let join = get(addr, &format!("/api/v1/join?{window}&format=csv")).await;
    assert_no_formula("join report CSV", &join.body);

    // `shiftlens-collector export downtime --format csv`, the real binary.
    let toml = dir.path().join("collector.toml");
    std::fs::write(&toml, format!("[store]\npath = {:?}\n", db.display().to_string())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["export", "downtime", "--config"])
        .arg(&toml)
        .args(["--from", "2025-06-15T00:00:00Z", "--to", "2025-06-16T00:00:00Z", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.contains("'+cmd|"), "{csv}");
    assert_no_formula("export downtime", &csv);
}

/// Values a hostile client tries in every parameter.
const HOSTILE: [&str; 16] = [
    "0",
    "-1",
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e309",
    "NaN",
    "2199-12-31",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2025-13-45",
    "%00",
    "%F0%28%8C%28",
    "p0001%3Aopc-ua%3A99999999999999999999",
    "%27%20OR%201%3D1%20--",
];

/// The GET paths of the OpenAPI document with their parameter names, and the POST paths.
fn documented() -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let doc = openapi::document();
    let mut gets = Vec::new();
    let mut posts = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if let Some(op) = ops.get("get") {
            let names = op["parameters"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            gets.push((path.clone(), names));
        }
        if ops.get("post").is_some() {
            posts.push(path.clone());
        }
    }
    (gets, posts)
}

async fn no_5xx(addr: SocketAddr, method: &str, path: &str, body: &[u8]) {
    let origin = format!("http://{addr}");
    let r = tokio::time::timeout(HANG, request(addr, method, path, &[("Origin", &origin)], body))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer"));
    assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_survives_hostile_parameters() {
    let (_dir, addr) = seeded("").await;
    let (gets, posts) = documented();
    assert!(gets.len() >= 12, "{gets:?}");
    let long = "x".repeat(20_000);
    for (path, names) in &gets {
        // Each parameter alone with each hostile value, then reversed and unbounded windows.
        for name in names {
            for v in HOSTILE.iter().copied().chain([long.as_str()]) {
                no_5xx(addr, "GET", &format!("{path}?{name}={v}"), b"").await;
            }
        }
        for q in [
            "from=2026-01-01&to=2025-01-01",
            "from=2025-01-01&to=2025-01-01",
            "from=2000-01-01&to=2200-01-01",
            "from=0",
            "to=0",
            "from=2022-12-31&to=2025-12-31&limit=10000&offset=0",
        ] {
            no_5xx(addr, "GET", &format!("{path}?{q}"), b"").await;
        }
    }
    for path in &posts {
        for kind in ["skills", "people", "nonsense", &long] {
            let p = path.replace("{kind}", kind);
            no_5xx(addr, "POST", &p, b"id,name\n=cmd,\"unterminated\n").await;
            no_5xx(addr, "POST", &p, &[0xff, 0xfe, 0x00]).await;
        }
    }
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(HOSTILE.to_vec()).prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        (1990i32..2300, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        "[a-z0-9:%-]{0,40}",
    ]
}

/// One seeded server for every proptest case, on a runtime of its own.
struct Shared {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static S: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (dir, addr) = rt.block_on(seeded(""));
        Shared { rt, addr, _dir: dir }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random combinations of hostile values over every documented GET path: never a 5xx, always an answer.
    #[test]
    fn random_hostile_combinations_never_get_a_5xx(
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), hostile_value()), 1..6),
        which in any::<proptest::sample::Index>(),
    ) {
        let s = shared();
        let (gets, _) = documented();
        let (path, names) = which.get(&gets);
        let q: Vec<String> = picks
            .iter()
            .filter(|_| !names.is_empty())
            .map(|(i, v)| format!("{}={v}", i.get(names)))
            .collect();
        s.rt.block_on(no_5xx(s.addr, "GET", &format!("{path}?{}", q.join("&")), b""));
    }
}
