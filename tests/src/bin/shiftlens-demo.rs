//! `shiftlens-demo`: a whole ShiftLens installation in one process, to try it in a minute.
//!
//! Starts a simulated plant (eight assets: line 1 over Modbus TCP, lines 2 and 3 over OPC UA) playing
//! `config/demo/scenario.toml` on compressed time, the collector with its embedded broker over mutual TLS
//! (a CA and certificates made on the fly with `shiftlens_sim::pki`), the sample personnel data of
//! `config/samples/`, a few weeks of sample downtime history (moved in whole rotation cycles so it ends
//! just before now), two agents (`shiftlens_agent::run`, the same code as the binary), and the dashboard.
//! Ctrl-C stops the agents first (they commit and say goodbye), then everything else.
//!
//! The configs are the templates in `config/demo/`, compiled in, so the binary runs from anywhere.

use anyhow::Context;
use clap::Parser;
use shiftlens_collector::people::import::Kind;
use shiftlens_collector::store::{self, events};
use shiftlens_collector::{feed, http, ingest};
use shiftlens_common::config::ConfigFile;
use shiftlens_sim::{modbus, opcua, pki::Pki, plant::Plant, scenario::Scenario};
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
/// The rotation cycle of the sample crews: history moves by whole cycles, so the same crews stay on shift.
const CYCLE_MS: i64 = 28 * 86_400_000;

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

    // Certificates: one CA, the broker's server certificate, one client certificate per gateway.
    let pki = Pki::create(&dir.join("pki"), "ShiftLens demo")?;
    pki.server("broker", &["localhost", "127.0.0.1"])?;
    for gw in ["gw-line1", "gw-line2"] {
        pki.client("plant-a", gw)?;
    }

    // Collector: config, personnel, history, then broker + ingest + dashboard.
    let port = cli.port.to_string();
    let collector_toml = dir.join("collector.toml");
    std::fs::write(&collector_toml, fill(COLLECTOR, &[("DIR", &d), ("BROKER_PORT", "0"), ("HTTP_PORT", &port)]))?;
    let config = shiftlens_collector::Config::load(&collector_toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let samples = dir.join("samples");
    std::fs::create_dir_all(&samples)?;
    for (kind, text) in SAMPLES {
        let file = samples.join(format!("{}.csv", kind.name()));
        std::fs::write(&file, text)?;
        shiftlens_collector::people::cli::import(kind, &file, &collector_toml, None)
            .with_context(|| format!("importing the sample {}", file.display()))?;
    }
    if !cli.no_history {
        seed_history(&config.store.path)?;
    }
    let collector = ingest::start(&config, feed::AssetLines::line_of(&config.store.path))
        .await
        .context("starting the collector")?;
    let broker = collector.broker.context("the demo's broker is embedded")?;
    let state = http::AppState::new(&config, Some(collector.metrics.clone())).context("HTTP setup")?;
    let bind = config.http.bind.get_ref().clone();
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

    println!(
        "\nShiftLens demo is running.\n\n  Dashboard:  http://{web}/\n  API:        http://{web}/api/v1/openapi.json\n\n\
         Plant: 8 assets of site plant-a, time x{} ({} plant minutes per real minute)\n  \
         line 1 (press-1, press-2, line1-filler, line1-capper)  Modbus TCP {mb_addr} -> agent gw-line1\n  \
         lines 2, 3 (line2-*, line3-*)                          OPC UA {ua_url} -> agent gw-line2\n  \
         agents -> collector broker mqtts://localhost:{broker_port} (mutual TLS, certificates in {}/pki)\n\n\
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

/// Stores the sample downtime history, moved by whole rotation cycles so that it ends before now.
fn seed_history(db: &Path) -> anyhow::Result<()> {
    let mut history: Vec<shiftlens_collector::timeline::Downtime> = HISTORY
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("downtime.jsonl:{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    let last = history.iter().map(|d| d.end_ms.unwrap_or(d.start_ms)).max().unwrap_or(0);
    let shift = (chrono::Utc::now().timestamp_millis() - 3_600_000 - last).div_euclid(CYCLE_MS) * CYCLE_MS;
    let mut conn = store::open_writer(db)?;
    let tx = conn.transaction()?;
    for d in &mut history {
        d.start_ms += shift;
        d.end_ms = d.end_ms.map(|e| e + shift);
        if let Some(f) = &mut d.first_out {
            f.ts_ms += shift;
        }
        events::upsert_downtime(&tx, d)?;
    }
    tx.commit()?;
    Ok(())
}

fn live_downtime(db: &Path, since_ms: i64) -> anyhow::Result<usize> {
    let conn = store::open_reader(db)?;
    let filter = events::DowntimeFilter { from_ms: Some(since_ms), ..Default::default() };
    Ok(events::query_downtime(&conn, &filter)?.len())
}
