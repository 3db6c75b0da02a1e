//! The HTTP API over a real socket against a real store seeded from the synthetic plant: responses match
//! the OpenAPI document (validated with the jsonschema crate), CSV matches JSON, filters narrow results,
//! bad input gets a clear 400, and tokens, roles, sessions and cross-site checks hold.
#![allow(clippy::unwrap_used)]

mod http_support;

use http_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shiftlens_collector::http::openapi;
use shiftlens_collector::query::CATALOGUE as REPORTS;
use shiftlens_collector::Config;
use shiftlens_common::config::ConfigFile;
use std::net::SocketAddr;

const VIEWER: &str = "viewer-token-1234567890";
const ADMIN: &str = "admin-token-0987654321";

fn sha(t: &str) -> String {
    Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn seeded(http_extra: &str) -> (tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, http_extra)).await;
    (dir, addr)
}

/// The JSON schema of a path's 200 response, resolvable against the whole document.
fn response_schema(path: &str) -> Value {
    let doc = openapi::document();
    let r = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    serde_json::json!({ "$ref": r["$ref"], "components": doc["components"] })
}

fn check(path: &str, body: &Value) {
    let schema = response_schema(path);
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{path}: response does not match the OpenAPI document: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_response_matches_the_openapi_document_and_csv_matches_json() {
    let (_dir, addr) = seeded("").await;
    let doc = get(addr, "/api/v1/openapi.json").await.json();
    assert_eq!(&doc, openapi::document());
    for e in &REPORTS {
        let q = if e.path.ends_with("whatif") { format!("{YEAR}&change=p0001:opc-ua:4") } else { YEAR.to_string() };
        let r = get(addr, &format!("{}?{q}", e.path)).await;
        assert_eq!(r.status, 200, "{}: {}", e.path, r.body);
        let body = r.json();
        check(e.path, &body);
        let rows = body["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{} has no rows on a seeded year", e.path);
        let csv = request(addr, "GET", &format!("{}?{q}", e.path), &[("Accept", "text/csv")], b"").await;
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        let mut rdr = csv::Reader::from_reader(csv.body.as_bytes());
        let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
        let keys: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
        let mut sorted = header.clone();
        sorted.sort();
        let mut keys_sorted = keys;
        keys_sorted.sort();
        assert_eq!(sorted, keys_sorted, "{}: CSV columns differ from JSON keys", e.path);
        assert_eq!(rdr.records().count(), rows.len(), "{}: CSV rows differ from JSON rows", e.path);
    }
    for path in ["/api/v1/downtime", "/api/v1/gateways"] {
        let r = get(addr, &format!("{path}?{YEAR}")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        check(path, &r.json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_the_rows_and_change_the_numbers() {
    let (_dir, addr) = seeded("").await;
    let all = get(addr, &format!("/api/v1/downtime?{YEAR}")).await.json();
    let one = get(addr, &format!("/api/v1/downtime?{YEAR}&asset=asset-003")).await.json();
    let (all, one) = (all.as_array().unwrap(), one.as_array().unwrap());
    assert!(!one.is_empty() && one.len() < all.len());
    assert!(one.iter().all(|r| r["asset"] == "asset-003"));
    assert_eq!(one.len(), all.iter().filter(|r| r["asset"] == "asset-003").count());
    let line = get(addr, &format!("/api/v1/downtime?{YEAR}&line=line1")).await.json();
    assert!(line.as_array().unwrap().iter().all(|r| r["line"] == "line1"));

    let overview = get(addr, &format!("/api/v1/overview?{YEAR}")).await.json();
    let crew_a = get(addr, &format!("/api/v1/overview?{YEAR}&crew=A")).await.json();
    let (n, na) = (overview["summary"]["events"].as_u64().unwrap(), crew_a["summary"]["events"].as_u64().unwrap());
    assert!(na > 0 && na < n, "crew A has {na} of {n} events");
    let join_a = get(addr, &format!("/api/v1/join?{YEAR}&crew=A&limit=50")).await.json();
    assert_eq!(join_a["total_rows"].as_u64(), Some(na));
    assert!(join_a["rows"].as_array().unwrap().iter().all(|r| r["crew"] == "A"));

    let mttr = get(addr, &format!("/api/v1/mttr?{YEAR}&dim=crew&crew=B")).await.json();
    let groups: Vec<&str> = mttr["rows"].as_array().unwrap().iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["B"]);
    let q1 = get(addr, "/api/v1/overview?from=2025-01-01&to=2025-04-01").await.json();
    assert!(q1["summary"]["events"].as_u64().unwrap() < n);

    // The recertification horizon defaults to the config's (90 days); a shorter one lists fewer certificates.
    let recert = |q: &'static str| async move {
        let path = "/api/v1/recert";
        let r = get(addr, &format!("{path}?{YEAR}{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let body = r.json();
        check(path, &body);
        body
    };
    let certs = |v: &Value| v["total_rows"].as_u64().unwrap();
    let (default, d90, d30, d365) =
        (recert("").await, recert("&horizon=90d").await, recert("&horizon=30d").await, recert("&horizon=365d").await);
    assert_eq!(default["rows"], d90["rows"]);
    assert_eq!(recert("&horizon=").await["rows"], default["rows"], "an empty value is the default");
    let (n30, n90, n365) = (certs(&d30), certs(&d90), certs(&d365));
    assert!(n30 < n90 && n90 < n365, "certificates within 30, 90, 365 days: {n30}, {n90}, {n365}");
    assert!(d30["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with("horizon 30d:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_a_clear_400() {
    let (_dir, addr) = seeded("").await;
    for (path, needle) in [
        ("/api/v1/overview?from=yesterday", "invalid from \"yesterday\""),
        ("/api/v1/overview?from=2025-02-01&to=2025-01-01", "from must be before to"),
        ("/api/v1/mttr?dim=colour", "expected one of asset, skill, shift, crew"),
        ("/api/v1/coverage?format=xml", "unknown format \"xml\""),
        ("/api/v1/whatif", "whatif needs change="),
        ("/api/v1/whatif?change=p1:s1:9", "invalid level"),
        ("/api/v1/join?limit=-1", "invalid limit"),
        ("/api/v1/recert?horizon=soon", "invalid horizon \"soon\": expected a duration such as 30d"),
        ("/api/v1/recert?horizon=0d", "invalid horizon \"0d\""),
        ("/api/v1/recert?horizon=731d", "at most 730d"),
        ("/api/v1/recert?horizon=99999999999999999999d", "(a whole number and a unit: ms, s, m, h, d)"),
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let page = get(addr, "/mttr?dim=colour").await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("expected one of asset, skill, shift, crew"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics_report_the_store() {
    let (_dir, addr) = seeded("").await;
    let h = get(addr, "/healthz").await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let m = get(addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(m.body.contains("\nshiftlens_gateways_online 1\n"), "{}", m.body);
    assert!(m.body.contains("\nshiftlens_gateways_known 2\n"));
    let bytes: u64 = m.body.lines().find_map(|l| l.strip_prefix("shiftlens_store_bytes ")).unwrap().parse().unwrap();
    assert!(bytes > 100_000, "store is {bytes} bytes");
    let g = get(addr, "/api/v1/gateways").await.json();
    let rows = g["rows"].as_array().unwrap();
    assert_eq!(
        (rows[0]["gateway"].as_str(), rows[0]["online"].as_bool(), rows[0]["buffer_depth"].as_u64()),
        (Some("gw-1"), Some(true), Some(1234))
    );
    assert_eq!(rows[1]["online"].as_bool(), Some(false));
}

#[test]
fn config_refuses_a_network_bind_without_tokens_and_bad_hashes() {
    let load = |text: &str| Config::from_file(&ConfigFile::from_text("collector.toml", text.to_string()));
    let e = load("[http]\nbind = \"0.0.0.0:8080\"\n").unwrap_err().to_string();
    assert!(e.contains("collector.toml:2:8") && e.contains("not a loopback address"), "{e}");
    let ok = format!(
        "[http]\nbind = \"0.0.0.0:8080\"\n[[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        sha("x")
    );
    assert!(load(&ok).is_ok());
    let e = load("[[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"abc\"\n").unwrap_err().to_string();
    assert!(e.contains("collector.toml:4:10") && e.contains("64 hex digits"), "{e}");
    let e = load("[[http.tokens]]\nname = \"ops\"\nrole = \"boss\"\nsha256 = \"abc\"\n").unwrap_err().to_string();
    assert!(e.contains("collector.toml:3") && e.contains("boss"), "{e}");
    let e = load("[[http.tokens]]\nname = \"ops\"\nrole = \"admin\"\n").unwrap_err().to_string();
    assert!(e.contains("exactly one of sha256 or file"), "{e}");
}

#[test]
fn config_range_checks_the_http_limits_and_public_names_by_position() {
    let load = |text: &str| Config::from_file(&ConfigFile::from_text("collector.toml", text.to_string()));
    let c = load("[http]\n").unwrap();
    let l = c.http.limits;
    assert_eq!((l.header_timeout.as_secs(), l.request_timeout.as_secs(), l.max_connections), (10, 60, 256));
    assert_eq!((c.http.bounds.max_window_ms / 86_400_000, c.http.bounds.max_rows), (1096, 10_000));
    let e = load("[http]\nmax_rows = 0\nmax_connections = 0\nheader_timeout = \"0s\"\nrequest_timeout = \"2h\"\nmax_window = \"100000d\"\npublic_names = [\"https://x.example/\"]\n")
        .unwrap_err()
        .to_string();
    for needle in [
        "collector.toml:2:12: max_rows must be between 1 and 1000000",
        "collector.toml:3:19: max_connections must be between 1 and 65535",
        "collector.toml:4:18: header_timeout must be between 1s and 600s",
        "collector.toml:5:19: request_timeout must be between 1s and 3600s",
        "collector.toml:6:14: max_window must be between 1d and 73049d",
        "collector.toml:7:17: public name \"https://x.example/\" is not a host name",
    ] {
        assert!(e.contains(needle), "{needle}\n{e}");
    }
    let ok = load("[http]\npublic_names = [\"dashboard.plant.example\", \"10.0.0.5:8443\"]\nmax_window = \"30d\"\n")
        .unwrap();
    assert_eq!(ok.http.bounds.max_window_ms, 30 * 86_400_000);
}

fn tokens(dir: &std::path::Path) -> String {
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    format!(
        "[[http.tokens]]\nname = \"supervisors\"\nrole = \"viewer\"\nsha256 = \"{}\"\n[[http.tokens]]\nname = \"hr\"\nrole = \"admin\"\nfile = {:?}\n",
        sha(VIEWER),
        file.display().to_string()
    )
}

const BAD_SKILLS: &str = "id,name,domain,certificate\ns7-net,S7 networking,IT,no\nvfd,Drives,electrical,maybe\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, &tokens(dir.path()))).await;
    let path = format!("/api/v1/overview?{YEAR}");
    let bearer = |t: &str| format!("Bearer {t}");

    let r = get(addr, &path).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = request(addr, "GET", &path, &[("Authorization", &bearer("wrong"))], b"").await;
    assert_eq!(r.status, 401);
    let r = request(addr, "GET", &path, &[("Authorization", &bearer(VIEWER))], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/metrics").await.status, 401);

    let r =
        request(addr, "POST", "/api/v1/import/skills", &[("Authorization", &bearer(VIEWER))], BAD_SKILLS.as_bytes())
            .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(addr, "POST", "/api/v1/import/skills", &[("Authorization", &bearer(ADMIN))], BAD_SKILLS.as_bytes())
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let e = r.json();
    assert_eq!(e["errors"][0]["line"].as_u64(), Some(3), "{e}");
    assert_eq!(e["errors"][0]["column"].as_str(), Some("certificate"));
    let r = request(addr, "POST", "/api/v1/import/nonsense", &[("Authorization", &bearer(ADMIN))], b"x").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("expected one of people, skills"));

    // A good import is stored and the next answer shows it: the import drops the cached dataset.
    let scopes = |v: &Value| -> Vec<String> {
        let mut s: Vec<String> =
            v["rows"].as_array().unwrap().iter().map(|r| r["scope"].as_str().unwrap().to_string()).collect();
        s.dedup();
        s
    };
    let admin = [("Authorization", bearer(ADMIN))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gaps = request(addr, "GET", &format!("/api/v1/gaps?{YEAR}"), &admin, b"").await.json();
    assert_eq!(scopes(&gaps), ["now", "opcua-rollout"]);
    let csv = "id,name,go_live,needs\nvision-qa,Vision QA,2026-03-01,vision:3:2\n";
    let r = request(addr, "POST", "/api/v1/import/initiatives", &admin, csv.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["summary"].as_str().unwrap().starts_with("initiatives: 1 added"), "{}", r.body);
    let gaps = request(addr, "GET", &format!("/api/v1/gaps?{YEAR}"), &admin, b"").await.json();
    assert_eq!(scopes(&gaps), ["now", "vision-qa"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_need_the_login_form_same_origin_and_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, &tokens(dir.path()))).await;
    let origin = format!("http://{addr}");

    let r = get(addr, "/coverage?crew=A").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login?next=%2Fcoverage%3Fcrew%3DA")));
    let form = format!("token={ADMIN}&next=%2Fimport");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let r = request(addr, "POST", "/login", &[ct, ("Origin", "http://evil.example")], form.as_bytes()).await;
    assert_eq!(r.status, 403, "a cross-site login is refused");
    let r = request(addr, "POST", "/login", &[ct, ("Origin", &origin)], b"token=nope&next=%2F").await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("That token is not valid."));
    let r = request(addr, "POST", "/login", &[ct, ("Origin", &origin)], form.as_bytes()).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/import")));
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();

    let page = request(addr, "GET", "/import", &[("Cookie", &cookie)], b"").await;
    assert_eq!(page.status, 200);
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(page.headers.iter().any(|(k, v)| k == "content-security-policy" && v.contains("frame-ancestors 'none'")));

    let upload = |csrf: &str| {
        format!(
            "--XX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--XX\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nskills\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"skills.csv\"\r\nContent-Type: text/csv\r\n\r\n{BAD_SKILLS}\r\n--XX--\r\n"
        )
    };
    let mp = ("Content-Type", "multipart/form-data; boundary=XX");
    let r =
        request(addr, "POST", "/import", &[mp, ("Cookie", &cookie), ("Origin", &origin)], upload("forged").as_bytes())
            .await;
    assert_eq!(r.status, 403, "a wrong CSRF token is refused");
    let r = request(
        addr,
        "POST",
        "/import",
        &[mp, ("Cookie", &cookie), ("Origin", "http://evil.example")],
        upload(&csrf).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403, "a cross-site upload is refused");
    let r = request(addr, "POST", "/import", &[mp, ("Cookie", &cookie), ("Origin", &origin)], upload(&csrf).as_bytes())
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("skills.csv: 1 invalid row(s); nothing was imported"), "{}", r.body);
    assert!(r.body.contains("<td class=\"num\">3</td><td>certificate</td>"), "{}", r.body);

    // A viewer session may look but not import.
    let r = request(addr, "POST", "/login", &[ct, ("Origin", &origin)], format!("token={VIEWER}&next=%2F").as_bytes())
        .await;
    let viewer = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert_eq!(request(addr, "GET", &format!("/coverage?{YEAR}"), &[("Cookie", &viewer)], b"").await.status, 200);
    assert_eq!(request(addr, "GET", "/import", &[("Cookie", &viewer)], b"").await.status, 403);

    // Logging out ends the session.
    let r = request(
        addr,
        "POST",
        "/logout",
        &[ct, ("Cookie", &cookie), ("Origin", &origin)],
        format!("csrf={csrf}").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(request(addr, "GET", "/import", &[("Cookie", &cookie)], b"").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_stored_by_ingest_shows_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let plant = plant(SMALL);
    seed(&db, &plant);
    let (addr, _) = spawn(&config(&db, "")).await;
    let events =
        || async { get(addr, &format!("/api/v1/overview?{YEAR}")).await.json()["summary"]["events"].as_u64().unwrap() };
    let before = events().await;
    // Another connection (the store writer, in production) adds an event.
    let mut late = plant.downtime[0].clone();
    late.start_ms += 1;
    let conn = shiftlens_collector::store::open_writer(&db).unwrap();
    shiftlens_collector::store::events::upsert_downtime(&conn, &late).unwrap();
    // The server notices the change within seconds (it rechecks the store, then rebuilds in the background);
    // a loaded machine may take longer, and the wait ends as soon as it shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while events().await == before {
        assert!(std::time::Instant::now() < deadline, "the new downtime event never appeared");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(events().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_saves_the_join_snapshot_as_the_report_command_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let plant = plant(SMALL);
    seed(&db, &plant);
    let (addr, _) = spawn(&config(&db, "")).await;
    assert_eq!(get(addr, &format!("/downtime?{YEAR}")).await.status, 200);
    // The page's load joined the stored downtime and keeps each event's join as a snapshot, saved beside
    // the request (which does not wait for it); the wait ends as soon as it is there.
    let conn = shiftlens_collector::store::open_reader(&db).unwrap();
    let saved = || shiftlens_collector::store::people::latest_snapshots(&conn).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while saved() < plant.downtime.len() {
        assert!(std::time::Instant::now() < deadline, "the join snapshot was never saved");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(saved(), plant.downtime.len());
    let first = shiftlens_collector::join::event_key(&plant.downtime[0]);
    let r = shiftlens_collector::store::reads::Reader::open(&db).unwrap();
    assert_eq!(r.snapshots(&first).unwrap().len(), 1, "one revision of {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_command_and_the_api_show_the_same_rows_for_every_catalogue_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let toml = dir.path().join("collector.toml");
    let text = format!("[store]\npath = {:?}\n\n[people]\ntimezone = \"Europe/Berlin\"\n", db.display().to_string());
    std::fs::write(&toml, text).unwrap();
    let (addr, _) = spawn(&config(&db, "")).await;
    let (from, to) = ("2025-01-01", "2025-07-01");
    for e in &REPORTS {
        let name = e.path.trim_start_matches("/api/v1/");
        // The command's options where its defaults differ from the API's.
        let (cli, api): (Vec<&str>, &str) = match name {
            "coverage" => (vec!["--group", "crew"], ""),
            "whatif" => (vec!["--change", "p0001:opc-ua:4"], "&change=p0001:opc-ua:4"),
            "join" => (vec![], "&limit=10000"),
            _ => (vec![], ""),
        };
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
            .args(["report", name, "--format", "json", "--from", from, "--to", to, "--config"])
            .arg(&toml)
            .args(&cli)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let served = get(addr, &format!("{}?from={from}&to={to}{api}", e.path)).await.json();
        let columns: Vec<String> = serde_json::from_value(printed["columns"].clone()).unwrap();
        let rows: Vec<serde_json::Value> = printed["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::Value::Object(columns.iter().cloned().zip(r.as_array().unwrap().iter().cloned()).collect())
            })
            .collect();
        let served = served["rows"].as_array().unwrap_or_else(|| panic!("{name}: {served}"));
        assert!(!rows.is_empty(), "{name}: no rows to compare");
        assert_eq!(rows.len(), served.len(), "{name}: the command and the API differ in rows");
        for (i, (a, b)) in rows.iter().zip(served).enumerate() {
            assert_eq!(a, b, "{name}: row {i} differs between the command and the API");
        }
    }
}

#[test]
fn the_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.http.bind.to_string(), "127.0.0.1:8080");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_addresses_get_a_404_page_or_json_and_empty_windows_read_zero() {
    let (_dir, addr) = seeded("").await;
    let page = get(addr, "/no-such-page?x=1").await;
    assert_eq!(page.status, 404);
    assert!(page.header("content-type").unwrap().starts_with("text/html"), "{:?}", page.headers);
    assert!(page.body.contains("Page not found") && page.body.contains("no page at /no-such-page"), "{}", page.body);
    for path in ["/api/v1/no-such-report", "/api/v2/overview", "/api"] {
        let api = get(addr, path).await;
        assert_eq!(api.status, 404, "{path}");
        assert!(api.header("content-type").unwrap().starts_with("application/json"), "{path}");
        assert!(api.json()["error"].as_str().unwrap().contains("openapi.json"), "{path}: {}", api.body);
    }
    // A window with no events: zeros, never "-0.0", on the API and the page.
    let empty = "from=2030-01-01&to=2030-02-01";
    let r = get(addr, &format!("/api/v1/overview?{empty}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("-0.0") && !r.body.contains("-0,"), "{}", r.body);
    assert_eq!(r.json()["summary"]["downtime_h"], 0.0);
    let page = get(addr, &format!("/?{empty}")).await;
    assert!(!page.body.contains("-0.0"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_name_people_and_skills_unless_pseudonymized() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (named, _) = spawn(&config(&db, "")).await;
    let mut c = config(&db, "");
    c.people_settings.pseudonymize = true;
    let (pseudo, _) = spawn(&c).await;
    let path = format!("/priorities?{YEAR}&per_person=true");
    let page = get(named, &path).await;
    assert_eq!(page.status, 200);
    // The name is shown, the id is the cell's value and tooltip; the header is in words.
    assert!(page.body.contains(r#"data-col="person" class="words" data-value="p00"#), "{}", page.body);
    assert!(page.body.contains(">Person "), "no person name on the page");
    assert!(page.body.contains(">Avoidable hours / month<"), "headers in words");
    let api = get(named, &format!("/api/v1/priorities?{YEAR}&per_person=true")).await.json();
    assert!(api["rows"][0]["person"].as_str().unwrap().starts_with('p'), "the API keeps ids");
    assert!(api["rows"][0].get("avoidable_h_per_month").is_some(), "the API keeps its keys");
    let page = get(pseudo, &path).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(">Person "), "a name leaked past pseudonymization");
    assert!(page.body.contains(">P-"), "pseudonyms shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_what_if_page_offers_pseudonyms_when_configured_and_leaks_no_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let mut c = config(&db, "");
    c.people_settings.pseudonymize = true;
    let (addr, _) = spawn(&c).await;
    let form = get(addr, &format!("/whatif?{YEAR}")).await;
    assert_eq!(form.status, 200);
    assert!(!form.body.contains("p0001") && !form.body.contains("Person 1<"), "ids or names leaked");
    let settings = shiftlens_collector::people::Settings { pseudonymize: true, ..Default::default() };
    let pseudo =
        shiftlens_collector::report::privacy::show(&shiftlens_collector::people::Personnel::new(settings), "p0001");
    let page = get(addr, &format!("/whatif?{YEAR}&person={pseudo}&skill=vfd&level=4")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("p0001"), "the id leaked");
    let api = get(addr, &format!("/api/v1/whatif?{YEAR}&change=p0001:vfd:4")).await.json();
    let after = api["rows"][0]["after"].to_string();
    assert!(
        page.body.contains(&format!("data-col=\"after\" class=\"num\">{after}<")),
        "the page shows the API's figures"
    );
}
