//! `shiftlens-sim`: plays a scenario on a simulated plant and serves it over Modbus TCP and OPC UA.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shiftlens_common::config::ConfigFile;
use shiftlens_sim::{modbus, plant::Plant, scenario};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A simulated plant for tests, benchmarks and commissioning practice.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play a scenario and serve the plant until Ctrl-C.
    Run {
        /// Scenario file (see config/scenario.toml).
        #[arg(long)]
        scenario: PathBuf,
        /// Modbus TCP listen address.
        #[arg(long, default_value = "127.0.0.1:5020")]
        modbus: SocketAddr,
        /// OPC UA listen address (off unless given).
        #[arg(long)]
        opcua: Option<SocketAddr>,
        /// PKI directory of the OPC UA server.
        #[arg(long, default_value = "sim-pki")]
        pki: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Command::Run { scenario, modbus: modbus_addr, opcua, pki } = Cli::parse().command;
    let file = ConfigFile::read(&scenario)?;
    let scenario = scenario::Scenario::parse(&file)?;
    let plant = Plant::new(scenario.assets.iter().cloned());

    let listener =
        tokio::net::TcpListener::bind(modbus_addr).await.with_context(|| format!("cannot listen on {modbus_addr}"))?;
    let server = modbus::ModbusServer::start(plant.clone(), listener)?;
    println!(
        "Modbus TCP on {} (every unit id), register map per asset block of {}:",
        server.local_addr(),
        modbus::BLOCK
    );
    for (i, a) in plant.asset_ids().iter().enumerate() {
        let base = i * usize::from(modbus::BLOCK);
        println!(
            "  {a:<16} holding/input {base}: state, {}: reason, {}: alarm word, {}-{}: temperature f32; coils {base}-{}: alarm bits",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 15
        );
    }
    let restart = Arc::new(server.restarter());
    let _opcua = match opcua {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let s = shiftlens_sim::opcua::serve(plant.clone(), listener, &pki, &Default::default()).await?;
            println!("OPC UA on {}", s.endpoint_url());
            Some(s)
        }
        None => None,
    };
    let player = {
        let restart = restart.clone();
        let plant = plant.clone();
        tokio::spawn(async move { scenario::play(&scenario, plant, move |d: Duration| restart(d)).await })
    };
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    player.abort();
    Ok(())
}
