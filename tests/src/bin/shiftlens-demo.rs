//! `shiftlens-demo`: a whole ShiftLens installation in one process, to try it in a minute.
//!
//! Starts a simulated plant (eight assets: line 1 over Modbus TCP, lines 2 and 3 over OPC UA) playing
//! `config/demo/scenario.toml` on compressed time, the collector with its embedded broker over mutual TLS
//! (a CA and certificates made on the fly with `shiftlens_sim::pki`), the sample personnel data of
//! `config/samples/`, a few weeks of sample downtime history, two agents (`shiftlens_agent::run`, the same
//! code as the binary), and the dashboard. Ctrl-C stops the agents first (they commit and say goodbye), then
//! everything else.
//!
//! Every sample date (history, rotation anchors, roster, certificates, assessments, work orders,
//! initiatives) is moved by the same whole number of days, so that the history ends within the day before
//! the demo starts, certificates expire around today as the samples intend (one last month, others in 10,
//! 40 and 80 days, some in years) and initiatives go live in the coming months. Whole days in the site's
//! time zone keep the crews on the shifts the history was recorded with. With `--state-dir` the shift is
//! chosen once and kept (`sample-shift-days`), so a restart neither re-dates nor duplicates anything.
//!
//! The configs are the templates in `config/demo/`, compiled in, so the binary runs from anywhere.

use anyhow::Context;
use clap::Parser;
use shiftlens_collector::people::import::Kind;
use shiftlens_collector::pki::{self, Ca};
use shiftlens_collector::store::{self, events};
use shiftlens_collector::timeline::Downtime;
use shiftlens_collector::{feed, http, topology};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{GatewayId, SiteId};
use shiftlens_sim::{modbus, opcua, plant::Plant, scenario::Scenario};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const COLLECTOR: &str = include_str!("../../../config/demo/collector.toml");
const GW_LINE1: &str = include_str!("../../../config/demo/gw-line1.toml");
const GW_LINE2: &str = include_str!("../../../config/demo/gw-line2.toml");
const SCENARIO: &str = include_str!("../../../config/demo/scenario.toml");
const HISTORY: &str = include_str!("../../../config/samples/downtime.jsonl");
/// The sample personnel files, in the order their references need.
const SAMPLES: [(Kind, &str); 9] = [
    (Kind::Skills, include_str!("../../../config/samples/skills.csv")),
    (Kind::Rotation, include_str!("../../../config/samples/rotation.csv")),
    (Kind::People, include_str!("../../../config/samples/people.csv")),
    (Kind::PersonSkills, include_str!("../../../config/samples/person-skills.csv")),
    (Kind::Roster, include_str!("../../../config/samples/roster.csv")),
    (Kind::Assets, include_str!("../../../config/samples/assets.csv")),
    (Kind::AlarmClasses, include_str!("../../../config/samples/alarm-classes.csv")),
    (Kind::Initiatives, include_str!("../../../config/samples/initiatives.csv")),
    (Kind::WorkOrders, include_str!("../../../config/samples/work-orders.csv")),
];
/// The demo's site (`config/samples/assets.csv`).
const SITE: &str = "plant-a";
/// Central IT's feed reader: its certificate is issued and it is listed in `[broker] feed_readers`.
const FEED_READER: &str = "it-feed";
/// The time zone of the demo site (`config/demo/collector.toml`); sample dates are local to it.
const TZ: chrono_tz::Tz = chrono_tz::Europe::Berlin;

/// ShiftLens in one command: simulated plant, two agents, collector over mTLS and the dashboard.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Dashboard port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Keep the state (certificates, databases, configs) here instead of a temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Plant seconds per real second (the scenario's own is 30).
    #[arg(long)]
    time_scale: Option<f64>,
    /// Start without the sample downtime history.
    #[arg(long)]
    no_history: bool,
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| s.replace(&format!("@{k}@"), v))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,rumqttd=off,opcua=error,shiftlens_collector::broker=error")
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let temp = match &cli.state_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("shiftlens-demo-")
                .tempdir()
                .context("cannot make a temporary directory")?,
        ),
    };
    let dir: PathBuf = match (&cli.state_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => anyhow::bail!("no state directory"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let d = dir.to_string_lossy().into_owned();

    // Certificates (as `shiftlens-collector pki` makes them): one CA, the broker's server certificate, one
    // client certificate per gateway and one for central IT's feed reader. Kept in a --state-dir.
    let now = chrono::Utc::now().timestamp_millis();
    let ca = Ca::open_or_init(&dir.join("pki"), "ShiftLens demo CA", now)?;
    let site = SiteId::parse(SITE)?;
    let mut kinds = vec![
        pki::Kind::Server { name: "broker".into(), hosts: vec!["localhost".into(), "127.0.0.1".into()] },
        pki::Kind::FeedReader { id: FEED_READER.into() },
    ];
    for gw in ["gw-line1", "gw-line2"] {
        kinds.push(pki::Kind::Gateway { site: site.clone(), gateway: GatewayId::parse(gw)? });
    }
    for kind in &kinds {
        if !ca.files(kind).0.exists() {
            ca.issue(kind, 825, now)?;
        }
    }

    // Collector: config, personnel, history, then broker + ingest + dashboard.
    let port = cli.port.to_string();
    let collector_toml = dir.join("collector.toml");
    std::fs::write(&collector_toml, fill(COLLECTOR, &[("DIR", &d), ("BROKER_PORT", "0"), ("HTTP_PORT", &port)]))?;
    let config = shiftlens_collector::Config::load(&collector_toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let history = parse_history()?;
    let days = sample_shift_days(&dir, &history, chrono::Utc::now().timestamp_millis())?;
    let samples = dir.join("samples");
    std::fs::create_dir_all(&samples)?;
    for (kind, text) in SAMPLES {
        let file = samples.join(format!("{}.csv", kind.name()));
        std::fs::write(&file, shift_csv(text, days).with_context(|| format!("sample {}", kind.name()))?)?;
        shiftlens_collector::people::cli::import(kind, &file, &collector_toml, None)
            .with_context(|| format!("importing the sample {}", file.display()))?;
    }
    if !cli.no_history {
        seed_history(&config.store.path, history, days)?;
    }
    let collector = topology::start(&config, feed::AssetLines::line_of(&config.store.path))
        .await
        .context("starting the collector")?;
    let broker = collector.broker.context("the demo's broker is embedded")?;
    let state = http::AppState::new(&config, Some(collector.metrics.clone())).context("HTTP setup")?;
    let bind = config.http.bind.to_string();
    let web = http::serve(&bind, http::router(state))
        .await
        .with_context(|| format!("cannot listen on {bind}: is another program using port {port}? Try --port 8081"))?;

    // The plant: one Modbus TCP server and one OPC UA server over the same simulated assets.
    let mut scenario = Scenario::parse(&ConfigFile::from_text("config/demo/scenario.toml", SCENARIO))?;
    if let Some(s) = cli.time_scale.filter(|s| s.is_finite() && *s > 0.0) {
        scenario.time_scale = s;
    }
    let plant = Plant::new(scenario.assets.iter().cloned());
    let mb = modbus::ModbusServer::start(plant.clone(), tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let ua = opcua::serve(
        plant.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        &dir.join("sim-pki"),
        &Default::default(),
    )
    .await?;
    let restart = Arc::new(mb.restarter());
    let player = {
        let (scenario, plant) = (scenario.clone(), plant.clone());
        tokio::spawn(async move { shiftlens_sim::scenario::play(&scenario, plant, move |d| restart(d)).await })
    };

    // Two agents, each with its own outbox, certificate and PLC protocol.
    let broker_port = broker.port().to_string();
    let (mb_addr, ua_url) = (mb.local_addr().to_string(), ua.endpoint_url());
    let mut agents = Vec::new();
    for (gw, template, var, value) in
        [("gw-line1", GW_LINE1, "MODBUS", &mb_addr), ("gw-line2", GW_LINE2, "OPCUA", &ua_url)]
    {
        let path = dir.join(format!("{gw}.toml"));
        std::fs::write(&path, fill(template, &[("DIR", &d), ("BROKER_PORT", &broker_port), (var, value)]))?;
        let config = shiftlens_agent::Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        agents.push((gw, tokio::spawn(shiftlens_agent::run(config))));
    }

    let feed = feed_command(&dir.join("pki"), broker.port());
    println!(
        "\nShiftLens demo is running.\n\n  Dashboard:  http://{web}/\n  API:        http://{web}/api/v1/openapi.json\n\n\
         Plant: 8 assets of site plant-a, time x{} ({} plant minutes per real minute)\n  \
         line 1 (press-1, press-2, line1-filler, line1-capper)  Modbus TCP {mb_addr} -> agent gw-line1\n  \
         lines 2, 3 (line2-*, line3-*)                          OPC UA {ua_url} -> agent gw-line2\n  \
         agents -> collector broker mqtts://localhost:{broker_port} (mutual TLS, certificates in {}/pki)\n\n\
         Central IT's downtime feed (certificate {FEED_READER}, listed in feed_readers):\n  {feed}\n\n\
         Breakdowns start within seconds; the dashboard also shows {} of sample history.\n\
         State (configs, databases): {}{}\nPress Ctrl-C to stop.\n",
        scenario.time_scale,
        scenario.time_scale,
        d,
        if cli.no_history { "none" } else { "a few weeks" },
        d,
        if temp.is_some() { " (deleted on exit)" } else { "" },
    );

    let started = chrono::Utc::now().timestamp_millis();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("cannot wait for Ctrl-C")?; break; }
            _ = tick.tick() => {
                if let Some((gw, _)) = agents.iter().find(|(_, h)| h.is_finished()) {
                    eprintln!("agent {gw} stopped unexpectedly; stopping the demo");
                    break;
                }
                seconds += 1;
                if seconds % 15 == 0 {
                    if let Ok(n) = live_downtime(&config.store.path, started) {
                        println!("{n} downtime events recorded since the start: http://{web}/");
                    }
                }
            }
        }
    }
    println!("Stopping: the agents commit their outboxes and disconnect...");
    player.abort();
    for (gw, handle) in agents {
        match tokio::time::timeout(Duration::from_secs(10), handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("agent {gw}: {e:#}"),
            Ok(Err(e)) => eprintln!("agent {gw}: {e}"),
            Err(_) => eprintln!("agent {gw} did not stop within 10 s"),
        }
    }
    if let Err(e) = collector.shutdown(Duration::from_secs(10)).await {
        eprintln!("collector: {e}");
    }
    ua.stop().await;
    drop(mb);
    println!("Stopped.");
    Ok(())
}

fn parse_history() -> anyhow::Result<Vec<Downtime>> {
    HISTORY
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("downtime.jsonl:{}", i + 1)))
        .collect()
}

/// The whole days every sample date moves by: kept in `{dir}/sample-shift-days` once chosen, else the
/// largest shift that still ends the history before `now_ms`.
fn sample_shift_days(dir: &Path, history: &[Downtime], now_ms: i64) -> anyhow::Result<i64> {
    let file = dir.join("sample-shift-days");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return text.trim().parse().with_context(|| format!("{}: expected a whole number of days", file.display()));
    }
    let last = history.iter().map(|d| d.end_ms.unwrap_or(d.start_ms)).max().unwrap_or(now_ms);
    let days = (now_ms - last).div_euclid(86_400_000);
    // A shift by whole local days can move a time by the hour of a daylight-saving change: stay before now.
    let days = if shift_ms(last, days) > now_ms { days - 1 } else { days };
    std::fs::write(&file, format!("{days}\n")).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(days)
}

/// `ms` moved by `days` whole days of the site's calendar (same local time of day).
fn shift_ms(ms: i64, days: i64) -> i64 {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(ms) else { return ms };
    let local = utc.with_timezone(&TZ).naive_local() + chrono::Duration::days(days);
    // The earliest instant of an ambiguous local time; a local time skipped by DST moves an hour on.
    local
        .and_local_timezone(TZ)
        .earliest()
        .or_else(|| (local + chrono::Duration::hours(1)).and_local_timezone(TZ).earliest())
        .map_or(ms, |t| t.timestamp_millis())
}

/// A sample CSV with every date (`2026-03-10`) and local date-time (`2026-03-10T06:00`) cell moved by `days`.
fn shift_csv(text: &str, days: i64) -> anyhow::Result<String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in reader.records() {
        let record = record?;
        let cells: Vec<String> = record.iter().map(|c| shift_cell(c, days)).collect();
        writer.write_record(&cells)?;
    }
    Ok(String::from_utf8(writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?)
}

fn shift_cell(cell: &str, days: i64) -> String {
    let by = chrono::Duration::days(days);
    if let Ok(d) = chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d") {
        return (d + by).format("%Y-%m-%d").to_string();
    }
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(cell, fmt) {
            return (t + by).format(fmt).to_string();
        }
    }
    cell.to_string()
}

/// Stores the sample downtime history moved by `days` (upserts: a restart with the same shift adds nothing).
fn seed_history(db: &Path, mut history: Vec<Downtime>, days: i64) -> anyhow::Result<()> {
    let mut conn = store::open_writer(db)?;
    let tx = conn.transaction()?;
    for d in &mut history {
        d.start_ms = shift_ms(d.start_ms, days);
        d.end_ms = d.end_ms.map(|e| shift_ms(e, days));
        if let Some(f) = &mut d.first_out {
            f.ts_ms = shift_ms(f.ts_ms, days);
        }
        events::upsert_downtime(&tx, d)?;
    }
    tx.commit()?;
    Ok(())
}

/// The `mosquitto_sub` command that reads the feed with the demo's feed-reader certificate.
fn feed_command(pki: &Path, port: u16) -> String {
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    format!(
        "mosquitto_sub -h localhost -p {port} --cafile {} --cert {} --key {} -i {FEED_READER} -q 1 -v -t 'shiftlens/v1/+/downtime'",
        p("ca.pem"),
        p(&format!("{FEED_READER}.pem")),
        p(&format!("{FEED_READER}.key")),
    )
}

fn live_downtime(db: &Path, since_ms: i64) -> anyhow::Result<usize> {
    let conn = store::open_reader(db)?;
    let filter = events::DowntimeFilter { from_ms: Some(since_ms), ..Default::default() };
    Ok(events::query_downtime(&conn, &filter)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_dates_move_by_whole_local_days_and_other_cells_stay() {
        let csv = "person,start,end,kind,shift\np09,2026-03-10T06:00,2026-03-10T18:00,absent,\nA,2026-01-05,NNNN---DDD,x,CERT-0001\n";
        let out = shift_csv(csv, 10).unwrap();
        assert_eq!(
            out,
            "person,start,end,kind,shift\np09,2026-03-20T06:00,2026-03-20T18:00,absent,\nA,2026-01-15,NNNN---DDD,x,CERT-0001\n"
        );
        // 2026-03-20 06:00 CET moved 10 days is 2026-03-30 06:00 CEST: the same local time, an hour less of UTC.
        let before = 1_773_982_800_000; // 2026-03-20T05:00:00Z
        assert_eq!(shift_ms(before, 10), before + 10 * 86_400_000 - 3_600_000);
    }

    #[test]
    fn the_history_ends_within_the_day_before_now_and_the_shift_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let history = parse_history().unwrap();
        let now = 1_796_000_000_000; // 2026-11-30
        let days = sample_shift_days(dir.path(), &history, now).unwrap();
        let last = history.iter().map(|d| shift_ms(d.end_ms.unwrap_or(d.start_ms), days)).max().unwrap();
        assert!(last <= now && now - last < 86_400_000 + 3_600_000, "{last} {now}");
        // A later start in the same state directory keeps the shift.
        assert_eq!(sample_shift_days(dir.path(), &history, now + 5 * 86_400_000).unwrap(), days);
    }
}
