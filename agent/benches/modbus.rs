//! Agent CPU time and peak RSS while polling 1,000 and 10,000 Modbus points at 1 s from the simulated plant.
//!
//! The plant runs in a child process (this binary re-run with `--sim-child`), so the figures are the agent's
//! alone: CPU from /proc/self/task/*/schedstat (every thread, ns), peak RSS from /proc/self/status (VmHWM). Devices hold
//! 1,000 points each (u16 alarm points, coalesced to 8 requests), all behind one `ip:port` with unit ids 1..n.
//!
//! `cargo bench -p shiftlens-agent --bench modbus` (SHIFTLENS_BENCH_SECS sets the measuring time, default 10).
#![allow(clippy::unwrap_used)]

use shiftlens_agent::source::modbus::{task::run_line, ModbusDevice};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PER_DEVICE: usize = 1000;

fn main() {
    if std::env::args().any(|a| a == "--sim-child") {
        return sim_child();
    }
    let secs: u64 = std::env::var("SHIFTLENS_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut child =
        Command::new(std::env::current_exe().unwrap()).arg("--sim-child").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    println!("modbus poll bench: {secs} s per run, poll 1 s, {PER_DEVICE} points per device, one shared connection");
    for points in [1000, 10_000] {
        let (polled, cpu, wall) = rt.block_on(run(&addr, points, Duration::from_secs(secs)));
        let cpu_ms = cpu.as_secs_f64() * 1000.0;
        println!(
            "{points:>6} points: {:>8.0} points/s, CPU {:.2} ms per 1000 points polled, {:.2} % of one core, peak RSS {:.1} MB",
            polled as f64 / wall.as_secs_f64(),
            cpu_ms / (polled as f64 / 1000.0),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            peak_rss_kb() as f64 / 1024.0,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `points` points for `dur`; returns (points polled, CPU time used, wall time).
async fn run(addr: &str, points: usize, dur: Duration) -> (u64, Duration, Duration) {
    let devices: Vec<ModbusDevice> = (0..points / PER_DEVICE).map(|d| device(addr, d)).collect();
    let n_devices = devices.len();
    let line = shiftlens_agent::source::modbus::Line::Tcp(addr.parse().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let task = tokio::spawn(run_line(line, devices, tx, shiftlens_agent::health::Health::default()));
    // Let the first poll connect and report, then measure whole poll cycles.
    let mut first = 0;
    while first < n_devices {
        if let Some(o) = rx.recv().await {
            if matches!(o.body, shiftlens_common::EventBody::Source { connected: true, .. }) {
                first += 1;
            }
        }
    }
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(dur).await;
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    task.abort();
    drain.abort();
    let cycles = wall.as_secs_f64().floor() as u64;
    (cycles * points as u64, cpu, wall)
}

fn device(addr: &str, d: usize) -> ModbusDevice {
    let mut text =
        format!("id = \"dev{d}\"\naddress = \"{addr}\"\nunit = {}\npoll = \"1s\"\ntimeout = \"1s\"\n", d + 1);
    for k in 0..PER_DEVICE {
        let a = d * PER_DEVICE + k;
        text.push_str(&format!(
            "[[points]]\nname = \"p{a}\"\nasset = \"asset-{}\"\ntable = \"holding\"\naddress = {a}\ntype = \"u16\"\nmeaning = {{ alarm = {{ id = \"A{a}\" }} }}\n",
            a / 100
        ));
    }
    toml::from_str(&text).unwrap()
}

/// CPU time of every thread of this process, in nanoseconds from /proc/self/task/*/schedstat.
fn cpu_time() -> Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sim_child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let plant = shiftlens_sim::plant::Plant::new((0..100).map(|i| format!("asset-{i:03}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = shiftlens_sim::modbus::ModbusServer::start(plant, listener).unwrap();
        println!("{}", server.local_addr());
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}
