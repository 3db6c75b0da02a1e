//! The dashboard in headless Chromium (Debian's `chromium`, driven over the DevTools protocol): each page
//! loads against a collector whose store is seeded from the synthetic plant, shows the API's numbers, a
//! crew filter click changes them (and the URL), and an import with a bad row shows the row's error.
//! Screenshots go to `$ARTIFACTS_DIR` or `target/artifacts/browser/`.
//!
//! Skipped with a loud message only when Chromium is missing and `CI` is unset; in CI a missing Chromium fails.
#![allow(clippy::unwrap_used)]

mod http_support;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http_support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start, answer a DevTools call, or reach a page state. Waits end as soon
/// as it happens: generous for a slow, loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .flat_map(|d| candidates.iter().map(move |c| d.join(c)))
        .find(|p| p.is_file())
}

/// Chromium, or `None` after a loud message when it is missing outside CI.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: chromium is not installed, and CI must run the browser tests")
        }
        None => {
            eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! SKIPPED {test}: chromium is not installed (apt-get install chromium)");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
            None
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("ARTIFACTS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("artifacts")
    });
    let dir = dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One headless Chromium with one page, spoken to over the DevTools protocol.
struct Browser {
    child: tokio::process::Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(exe: &PathBuf) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(DEADLINE, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(u) = l.strip_prefix("DevTools listening on ") {
                    return u.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not start within {DEADLINE:?}"));
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let mut b = Self { child, ws, session: String::new(), next_id: 0, _profile: profile };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" })).await;
        let attached =
            b.call("Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true })).await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({})).await;
        // A tablet in landscape.
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        b
    }

    /// A desktop (1400 px) or tablet (800 px) wide window.
    async fn width(&mut self, width: u32) {
        let params = json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false });
        self.call("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Whether the page fits its width (only a table's own wrapper may scroll sideways).
    async fn fits(&mut self) -> bool {
        self.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await == json!(true)
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// A DevTools call; `Err` with the protocol error (e.g. the page's context went away in a navigation).
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no DevTools answer within {DEADLINE:?}"));
            let t = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{method}: DevTools connection failed: {e}"),
                None => panic!("{method}: DevTools connection closed (did Chromium exit?)"),
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"].as_u64() == Some(id) {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Evaluates `expr` in the page; `None` when there was no page context to run it in (a navigation
    /// replaced the document meanwhile). An exception thrown by `expr` fails the test.
    async fn try_eval(&mut self, expr: &str) -> Option<Value> {
        let params = json!({ "expression": expr, "returnByValue": true, "awaitPromise": true });
        let r = self.try_call("Runtime.evaluate", params).await.ok()?;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {}", r["exceptionDetails"]);
        Some(r["result"]["value"].clone())
    }

    async fn eval(&mut self, expr: &str) -> Value {
        match self.try_eval(expr).await {
            Some(v) => v,
            None => panic!("{expr}: no page context (a navigation under way?)"),
        }
    }

    /// Polls `expr` until it is `true`. Evaluations that meet a document being replaced count as not yet.
    async fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.try_eval(expr).await != Some(json!(true)) {
            assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {expr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `action` (a navigation or a click) and waits for the next document to finish loading. The
    /// action's own evaluation may meet the old document going away: the wait decides.
    async fn navigating(&mut self, action: &str) {
        self.eval("window.__old = true").await;
        self.try_eval(action).await;
        self.wait_for("!window.__old && document.readyState === 'complete'").await;
    }

    async fn goto(&mut self, url: &str) {
        self.navigating(&format!("location.href = {}", json!(url))).await;
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
    }

    /// The report table's first rows as {column: value}: the API's value where the page words it
    /// differently (`data-value`), else the text shown.
    async fn table(&mut self, n: usize) -> Vec<Value> {
        let v = self
            .eval(&format!(
                "[...document.querySelectorAll('table.report tbody tr')].slice(0, {n}).map(tr => Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.dataset.value ?? td.textContent])))"
            ))
            .await;
        v.as_array().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A cell as the page prints it.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn api(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

/// Every row the page shows equals the API's row at the same position.
fn assert_same_rows(page: &str, shown_rows: &[Value], api_rows: &[Value]) {
    assert!(!shown_rows.is_empty(), "{page}: the table is empty");
    for (i, (s, a)) in shown_rows.iter().zip(api_rows).enumerate() {
        for (col, v) in a.as_object().unwrap() {
            assert_eq!(s[col].as_str(), Some(shown(v).as_str()), "{page}: row {i} column {col}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_numbers_of_the_api() {
    let Some(exe) = chromium_or_skip("every_page_shows_the_numbers_of_the_api") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    let pages = [
        ("/", "/api/v1/overview", "overview"),
        ("/coverage", "/api/v1/coverage", "coverage"),
        ("/downtime", "/api/v1/join", "downtime"),
        ("/mttr", "/api/v1/mttr", "mttr"),
        ("/priorities", "/api/v1/priorities", "priorities"),
        ("/recert", "/api/v1/recert", "recert"),
        ("/pareto", "/api/v1/pareto", "pareto"),
        ("/gaps", "/api/v1/gaps", "gaps"),
        ("/alarm-load", "/api/v1/alarm-load", "alarm-load"),
        ("/repeats", "/api/v1/repeats", "repeats"),
        ("/training-effect", "/api/v1/training-effect", "training-effect"),
    ];
    for (page, endpoint, name) in pages {
        b.goto(&format!("http://{addr}{page}?{YEAR}")).await;
        b.screenshot(name).await;
        let title = b.eval("document.querySelector('h1').textContent").await;
        assert!(title.as_str().is_some_and(|t| !t.is_empty()), "{page}: no heading");
        let api_rows = api(addr, &format!("{endpoint}?{YEAR}&limit=20")).await["rows"].as_array().unwrap().clone();
        let rows = b.table(20).await;
        assert_same_rows(page, &rows, &api_rows);
    }

    // The overview's headline figures are the API's summary, and it draws its charts.
    b.goto(&format!("http://{addr}/?{YEAR}")).await;
    let summary = api(addr, &format!("/api/v1/overview?{YEAR}")).await["summary"].clone();
    let kpis = b.eval("Object.fromEntries([...document.querySelectorAll('.kpi')].map(k => [k.dataset.kpi, k.dataset.value ?? k.querySelector('.v').textContent]))").await;
    for (k, v) in summary.as_object().unwrap() {
        assert_eq!(kpis[k].as_str(), Some(shown(v).as_str()), "overview figure {k}");
    }
    assert_eq!(b.eval("document.querySelectorAll('figure.chart svg rect.bar').length > 40").await, json!(true));

    // The heatmap's cells are the coverage report's headcounts and statuses.
    b.goto(&format!("http://{addr}/coverage?{YEAR}")).await;
    let cov = api(addr, &format!("/api/v1/coverage?{YEAR}")).await;
    let cells = b
        .eval("[...document.querySelectorAll('table.heatmap tbody tr')].flatMap(tr => [...tr.querySelectorAll('td[data-group]')].map(td => [td.dataset.group, tr.querySelector('th').dataset.value, td.textContent, td.title.split(',')[0]]))")
        .await;
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), cov["rows"].as_array().unwrap().len());
    for row in cov["rows"].as_array().unwrap() {
        let want = json!([row["crew"], row["skill"], shown(&row["headcount"]), row["status"]]);
        assert!(cells.contains(&want), "heatmap lacks {want}");
    }

    // Gateways: one online with its backlog, one offline.
    b.goto(&format!("http://{addr}/gateways")).await;
    b.screenshot("gateways").await;
    let rows = b.table(5).await;
    assert_eq!(
        (rows[0]["gateway"].as_str(), rows[0]["online"].as_str(), rows[0]["buffer_depth"].as_str()),
        (Some("gw-1"), Some("true"), Some("1234"))
    );
    assert_eq!(rows[1]["online"].as_str(), Some("false"));

    // Readable on a phone-sized tablet in portrait: nothing wider than the screen but the scrolling tables.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 600, "height": 960, "deviceScaleFactor": 1, "mobile": true }),
    )
    .await;
    b.goto(&format!("http://{addr}/mttr?{YEAR}")).await;
    b.screenshot("mttr-portrait").await;
    assert_eq!(
        b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await,
        json!(true),
        "the page scrolls sideways"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crew_click_filters_the_numbers_and_keeps_them_in_the_url() {
    let Some(exe) = chromium_or_skip("a_crew_click_filters_the_numbers_and_keeps_them_in_the_url") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    let events = "document.querySelector('.kpi[data-kpi=\"events\"] .v').textContent";
    b.goto(&format!("http://{addr}/?{YEAR}")).await;
    let all = b.eval(events).await;
    b.navigating("document.querySelector('a.chip[data-crew=\"C\"]').click()").await;
    b.screenshot("overview-crew-c").await;
    let search = b.eval("location.search").await;
    assert!(search.as_str().unwrap().contains("crew=C"), "{search}");
    let crew_c = b.eval(events).await;
    assert_ne!(all, crew_c);
    let api_c = api(addr, &format!("/api/v1/overview?{YEAR}&crew=C")).await;
    assert_eq!(crew_c.as_str(), Some(shown(&api_c["summary"]["events"]).as_str()));

    // The filter follows the navigation, and the asset select narrows the downtime list.
    b.navigating("document.querySelector('nav a[href^=\"/downtime\"]').click()").await;
    assert!(b.eval("location.search").await.as_str().unwrap().contains("crew=C"));
    let crews =
        b.eval("[...document.querySelectorAll('td[data-col=\"crew\"]')].every(td => td.textContent === 'C')").await;
    assert_eq!(crews, json!(true));
    b.navigating("document.querySelector('select[name=\"asset\"]').value = 'asset-002'; document.querySelector('form.filters').submit()").await;
    b.screenshot("downtime-crew-c-asset-002").await;
    let rows = b.table(100).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["asset"] == "asset-002" && r["crew"] == "C"));
    let api_rows = api(addr, &format!("/api/v1/join?{YEAR}&crew=C&asset=asset-002&limit=100")).await;
    assert_same_rows("/downtime filtered", &rows, api_rows["rows"].as_array().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_bad_row_shows_the_row_error_after_login() {
    let Some(exe) = chromium_or_skip("an_import_with_a_bad_row_shows_the_row_error_after_login") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(b"admin-secret-token").iter().map(|b| format!("{b:02x}")).collect()
    };
    let tokens = format!("[[http.tokens]]\nname = \"hr\"\nrole = \"admin\"\nsha256 = \"{hash}\"\n");
    let (addr, _) = spawn(&config(&db, &tokens)).await;
    let mut b = Browser::launch(&exe).await;

    b.goto(&format!("http://{addr}/import")).await;
    assert!(b.eval("location.pathname").await == json!("/login"));
    b.screenshot("login").await;
    b.navigating("document.querySelector('input[name=token]').value = 'admin-secret-token'; document.querySelector('form').submit()").await;
    assert_eq!(b.eval("location.pathname").await, json!("/import"));

    let csv = "id,name,domain,certificate\nk9001,Kiln burners,mechanical,no\nk9002,Kiln controls,OT,maybe\n";
    let set_file = format!(
        "const dt = new DataTransfer(); dt.items.add(new File([{}], 'skills.csv', {{ type: 'text/csv' }})); \
         document.querySelector('input[type=file]').files = dt.files; document.querySelector('select[name=kind]').value = 'skills'; true",
        json!(csv)
    );
    b.eval(&set_file).await;
    b.navigating("document.querySelector('form.import').submit()").await;
    b.screenshot("import-bad-row").await;
    let problem = b.eval("document.querySelector('#import-problem').textContent").await;
    assert_eq!(problem.as_str(), Some("skills.csv: 1 invalid row(s); nothing was imported"));
    let err = b.eval("[...document.querySelectorAll('#import-errors tbody td')].map(td => td.textContent)").await;
    let err = err.as_array().unwrap();
    assert_eq!(
        (err[0].as_str(), err[1].as_str(), err[2].as_str()),
        (Some("skills.csv"), Some("3"), Some("certificate")),
        "{err:?}"
    );
    assert!(!err[3].as_str().unwrap().is_empty());

    // Nothing was stored.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 =
        conn.query_row("SELECT COUNT(*) FROM people_record WHERE body LIKE '%k9001%'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_page_lists_lapsed_and_expiring_certificates_within_the_chosen_horizon() {
    let Some(exe) =
        chromium_or_skip("the_certificates_page_lists_lapsed_and_expiring_certificates_within_the_chosen_horizon")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    for width in [1400, 800] {
        b.width(width).await;
        b.goto(&format!("http://{addr}/recert?{YEAR}")).await;
        b.screenshot(&format!("recert-{width}")).await;
        assert!(b.fits().await, "/recert at {width} px scrolls sideways");
        // The default horizon (90d, the config's) is marked; choosing 365d lists more, as the API does.
        assert_eq!(b.eval("document.querySelector('#horizon a.on').dataset.horizon").await, json!("90d"));
        let d90 = b.table(1000).await;
        b.navigating("document.querySelector('#horizon a[data-horizon=\"365d\"]').click()").await;
        b.screenshot(&format!("recert-365d-{width}")).await;
        assert!(b.eval("location.search").await.as_str().unwrap().contains("horizon=365d"));
        let d365 = b.table(1000).await;
        let api365 = api(addr, &format!("/api/v1/recert?{YEAR}&horizon=365d&limit=1000")).await;
        assert_same_rows("/recert?horizon=365d", &d365, api365["rows"].as_array().unwrap());
        assert_eq!(d365.len(), api365["rows"].as_array().unwrap().len());
        assert!(d90.len() < d365.len(), "90d: {}, 365d: {}", d90.len(), d365.len());
        // Lapsed certificates are listed, and say how long ago in words.
        let lapsed = b
            .eval("[...document.querySelectorAll('td[data-col=\"status\"].expired')].map(td => td.parentElement.querySelector('td[data-col=\"days_left\"]').textContent)")
            .await;
        let lapsed = lapsed.as_array().unwrap();
        assert!(!lapsed.is_empty(), "no lapsed certificate shown");
        assert!(lapsed.iter().all(|t| t.as_str().unwrap().starts_with("expired ")), "{lapsed:?}");
    }
    // A bad horizon is a clear error page, not the default.
    let r = get(addr, "/recert?horizon=soon").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid horizon"), "{}", r.body);
}

/// The report pages and their short names (for screenshots).
const PAGES: [(&str, &str); 11] = [
    ("/", "overview"),
    ("/coverage", "coverage"),
    ("/downtime", "downtime"),
    ("/mttr", "mttr"),
    ("/priorities", "priorities"),
    ("/recert", "recert"),
    ("/pareto", "pareto"),
    ("/gaps", "gaps"),
    ("/alarm-load", "alarm-load"),
    ("/repeats", "repeats"),
    ("/training-effect", "training-effect"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_1400_and_800_px_and_an_empty_window_says_why() {
    let Some(exe) = chromium_or_skip("every_page_fits_1400_and_800_px_and_an_empty_window_says_why") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    // The report table fits its box: nothing to scroll sideways to see covered and missing.
    let table_fits = "[...document.querySelectorAll('table.report')].every(t => t.parentElement.scrollWidth <= t.parentElement.clientWidth + 1)";
    for width in [1400, 800] {
        b.width(width).await;
        for (page, name) in PAGES {
            b.goto(&format!("http://{addr}{page}?{YEAR}")).await;
            b.screenshot(&format!("{name}-{width}")).await;
            assert!(b.fits().await, "{page} at {width} px scrolls sideways");
            if b.eval(table_fits).await != json!(true) {
                let widths = b
                    .eval("[...document.querySelectorAll('table.report th')].map(th => th.dataset.col + ' ' + Math.round(th.getBoundingClientRect().width)).join(', ')")
                    .await;
                panic!("{page} at {width} px: the table is wider than its box: {widths}");
            }
        }
        // The downtime page keeps whether an event was covered and what was missing in view.
        b.goto(&format!("http://{addr}/downtime?{YEAR}")).await;
        let visible = b
            .eval("['covered', 'missing'].every(c => { const th = document.querySelector(`th[data-col=${c}]`); const r = th.getBoundingClientRect(); return r.width > 0 && r.right <= window.innerWidth; })")
            .await;
        assert_eq!(visible, json!(true), "covered/missing off-screen at {width} px");
    }

    // An empty window: the tables say why, the charts say there was nothing, and no number reads -0.0.
    let empty = "from=2030-01-01&to=2030-02-01";
    b.width(1400).await;
    for (page, name) in PAGES {
        b.goto(&format!("http://{addr}{page}?{empty}")).await;
        let text = b.eval("document.body.innerText").await;
        assert!(!text.as_str().unwrap().contains("-0.0"), "{page}: {text}");
        if page == "/" {
            b.screenshot("overview-empty").await;
            let notes = b.eval("[...document.querySelectorAll('svg text.note')].map(t => t.textContent)").await;
            assert_eq!(notes, json!(["no downtime in this window", "no repair finished in this window"]));
        } else if page == "/downtime" || page == "/mttr" || page == "/pareto" || page == "/priorities" {
            b.screenshot(&format!("{name}-empty")).await;
            let why = b.eval("document.querySelector('#empty')?.textContent ?? ''").await;
            assert!(why.as_str().unwrap().starts_with("No "), "{page}: {why}");
        }
    }
    // Alarm load over a window whose shifts saw no alarm says why it is all zeros.
    b.goto(&format!("http://{addr}/alarm-load?{empty}")).await;
    b.screenshot("alarm-load-empty").await;
    let notes = b.eval("[...document.querySelectorAll('p.note')].map(p => p.textContent).join(' | ')").await;
    assert!(notes.as_str().unwrap().contains("all zeros: no alarm became active"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shift_report_shows_the_apis_figures_and_prints_without_the_menus() {
    let Some(exe) = chromium_or_skip("the_shift_report_shows_the_apis_figures_and_prints_without_the_menus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    // Without a choice: the last shift that has ended.
    let last = api(addr, "/api/v1/shift").await;
    let name = last["shift"].as_str().unwrap().to_string();
    let q = format!("date=2025-06-10&shift={name}");
    let want = api(addr, &format!("/api/v1/shift?{q}")).await;
    assert!(want["summary"]["stops"].as_u64().unwrap() > 0, "{want}");
    for width in [1400, 800] {
        b.width(width).await;
        b.goto(&format!("http://{addr}/shift?{q}")).await;
        b.screenshot(&format!("shift-{width}")).await;
        assert!(b.fits().await, "/shift at {width} px scrolls sideways");
        let kpis = b
            .eval(
                "Object.fromEntries([...document.querySelectorAll('.kpi')].map(k => [k.dataset.kpi, k.dataset.value]))",
            )
            .await;
        for (k, v) in kpis.as_object().unwrap() {
            assert_eq!(v.as_str(), Some(shown(&want["summary"][k]).as_str()), "shift figure {k}");
        }
        let rows = b.table(100).await;
        assert_same_rows("/shift", &rows, want["rows"].as_array().unwrap());
        assert_eq!(rows.len(), want["rows"].as_array().unwrap().len());
        let people = b.eval("[...document.querySelectorAll('#people li')].map(li => li.dataset.value)").await;
        assert_eq!(people, want["summary"]["on_shift"]);
        let names = b
            .eval("[...document.querySelectorAll('#people li')].every(li => li.textContent.startsWith('Person '))")
            .await;
        assert_eq!(names, json!(true), "people by name");
    }
    // The next-shift link moves on, and the form picks a date and shift.
    b.navigating("document.querySelector('#shift-nav a[rel=next]').click()").await;
    assert!(b.eval("location.search").await.as_str().unwrap().contains("date=2025-06-1"));
    b.navigating(&format!(
        "document.querySelector('input[name=date]').value = '2025-06-10'; document.querySelector('select[name=shift]').value = '{name}'; document.querySelector('form.filters').submit()"
    ))
    .await;
    assert_eq!(
        b.eval("document.querySelector('.kpi[data-kpi=stops]').dataset.value").await,
        json!(shown(&want["summary"]["stops"]))
    );
    // Printed: no menu, no form, the content whole.
    b.call("Emulation.setEmulatedMedia", json!({ "media": "print" })).await;
    b.screenshot("shift-print").await;
    let hidden = b
        .eval("['header.top', 'form.filters', '#shift-nav'].every(s => getComputedStyle(document.querySelector(s)).display === 'none')")
        .await;
    assert_eq!(hidden, json!(true));
    b.call("Emulation.setEmulatedMedia", json!({ "media": "" })).await;
    // A bad choice is a clear 400.
    let r = get(addr, "/api/v1/shift?date=2025-06-10&shift=lunch").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown shift \"lunch\": expected one of"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_what_if_page_compares_before_and_after_as_the_api_does() {
    let Some(exe) = chromium_or_skip("the_what_if_page_compares_before_and_after_as_the_api_does") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    let want = api(addr, &format!("/api/v1/whatif?{YEAR}&change=p0001:vfd:4")).await;
    for width in [1400, 800] {
        b.width(width).await;
        b.goto(&format!("http://{addr}/whatif?{YEAR}")).await;
        assert!(b.eval("document.querySelector('#empty').textContent").await.as_str().unwrap().starts_with("Choose"));
        // People by name in the form, their ids as values.
        let opt = b.eval("document.querySelector('select[name=person] option[value=p0001]').textContent").await;
        assert_eq!(opt, json!("Person 1"));
        b.navigating("document.querySelector('select[name=person]').value = 'p0001'; document.querySelector('select[name=skill]').value = 'vfd'; document.querySelector('select[name=level]').value = '4'; document.querySelector('form.filters').submit()").await;
        b.screenshot(&format!("whatif-{width}")).await;
        assert!(b.fits().await, "/whatif at {width} px scrolls sideways");
        let search = b.eval("location.search").await;
        assert!(search.as_str().unwrap().contains("person=p0001"), "{search}");
        let rows = b.table(100).await;
        assert_same_rows("/whatif", &rows, want["rows"].as_array().unwrap());
        assert_eq!(rows.len(), want["rows"].as_array().unwrap().len());
        let label = b.eval("document.querySelector('td[data-col=metric]').textContent").await;
        assert_eq!(label, json!("Covered stops"), "metrics in words");
    }
    // Taking a skill away is a choice too.
    let removed = api(addr, &format!("/api/v1/whatif?{YEAR}&change=p0001:vfd")).await;
    b.goto(&format!("http://{addr}/whatif?{YEAR}&person=p0001&skill=vfd&level=remove")).await;
    assert_same_rows("/whatif remove", &b.table(100).await, removed["rows"].as_array().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_incidents_and_training_effect_show_the_apis_figures() {
    let Some(exe) = chromium_or_skip("repeat_incidents_and_training_effect_show_the_apis_figures") else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    seed(&db, &plant(SMALL));
    let (addr, _) = spawn(&config(&db, "")).await;
    let mut b = Browser::launch(&exe).await;
    let repeats = api(addr, &format!("/api/v1/repeats?{YEAR}")).await;
    let training = api(addr, &format!("/api/v1/training-effect?{YEAR}")).await;
    for width in [1400, 800] {
        b.width(width).await;
        b.goto(&format!("http://{addr}/repeats?{YEAR}")).await;
        b.screenshot(&format!("repeats-{width}")).await;
        let kpis = b
            .eval(
                "Object.fromEntries([...document.querySelectorAll('.kpi')].map(k => [k.dataset.kpi, k.dataset.value]))",
            )
            .await;
        for (k, v) in repeats["summary"].as_object().unwrap() {
            assert_eq!(kpis[k].as_str(), Some(shown(v).as_str()), "repeats figure {k}");
        }
        assert_same_rows("/repeats", &b.table(100).await, repeats["rows"].as_array().unwrap());
        assert_eq!(b.eval("document.querySelectorAll('figure.chart svg rect.bar').length > 40").await, json!(true));
        b.goto(&format!("http://{addr}/training-effect?{YEAR}")).await;
        b.screenshot(&format!("training-effect-{width}")).await;
        let rows = b.table(100).await;
        assert_same_rows("/training-effect", &rows, training["rows"].as_array().unwrap());
        assert!(rows[0]["person"].as_str().unwrap().starts_with('p'), "the id is the value");
        let name = b.eval("document.querySelector('td[data-col=person]').textContent").await;
        assert!(name.as_str().unwrap().starts_with("Person "), "{name}");
    }
}
