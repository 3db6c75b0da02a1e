//! Agent CPU time and peak RSS while polling 1,000 and 10,000 Modbus points at 1 s from the simulated plant.
//!
//! Every figure comes from a process of its own, so one measurement's memory never counts in the next:
//! - the plant runs in a child process (this binary re-run with `--sim-child`);
//! - "sources": the Modbus poller and detector alone, in a child (`--poll-child N ADDR`) that builds its
//!   device list and then measures itself: CPU from /proc/self/task/*/schedstat (every thread), peak RSS from
//!   /proc/self/status (VmHWM);
//! - "agent": the real `shiftlens-agent run` binary with a generated config (outbox, detector, uplink to a
//!   broker that is not there, so it buffers as a plant gateway does offline), measured from /proc/PID;
//! - "agent (CSV points)": the same with each device's points in a register map (`points_csv`);
//! - "delivering": the real agent binary delivering to a broker: rumqttd in this process with a subscriber
//!   that acks every batch (as the collector does), while the plant changes 300 points a second (each of
//!   its 100 assets once a second: state, alarm word and its byte-swapped copy), 10,000 points, CSV and
//!   TOML points. Besides CPU and RSS it prints the events delivered per second and the batches' payload bytes per change.
//!
//! Devices hold 1,000 points each (u16 alarm points, coalesced to 8 requests), all behind one `ip:port`
//! with unit ids 1..n.
//!
//! `cargo bench -p shiftlens-agent --bench modbus` (SHIFTLENS_BENCH_SECS sets the measuring time, default 10;
//! SHIFTLENS_BENCH_ONLY=delivery runs only the delivering rows, =offline only the others, =delivery-csv only the
//! delivering row with CSV points; SHIFTLENS_BENCH_AGENT=PATH runs another build of the agent binary;
//! SHIFTLENS_BENCH_SMAPS=DIR keeps each run's /proc/PID/smaps and smaps_rollup there). The agent binary is
//! evicted from the page cache before each run, so each maps its code as read from disk.
#![allow(clippy::unwrap_used)]

#[path = "../tests/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;

use shiftlens_agent::config::modbus::RawModbusDevice;
use shiftlens_agent::source::modbus::{task::run_line, ModbusDevice};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PER_DEVICE: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--sim-child") {
        return sim_child(args.iter().any(|a| a == "--churn"));
    }
    if let Some(i) = args.iter().position(|a| a == "--poll-child") {
        return poll_child(args[i + 1].parse().unwrap(), &args[i + 2], bench_secs());
    }
    let secs = bench_secs();
    let only = std::env::var("SHIFTLENS_BENCH_ONLY").unwrap_or_default();
    println!("modbus poll bench: {secs} s per run, poll 1 s, {PER_DEVICE} points per device, one shared connection");
    if !only.starts_with("delivery") {
        let mut sim = spawn_child(&["--sim-child"]);
        let addr = read_line(&mut sim);
        for points in [1000, 10_000] {
            let mut child = spawn_child(&["--poll-child", &points.to_string(), &addr]);
            println!("{points:>6} points, sources: {}", read_line(&mut child));
            child.wait().unwrap();
            println!("{points:>6} points, agent:   {}", whole_agent(&addr, points, secs, false, None));
            println!("{points:>6} points, agent (CSV points): {}", whole_agent(&addr, points, secs, true, None));
        }
        let _ = sim.kill();
        let _ = sim.wait();
    }
    if only != "offline" {
        let mut sim = spawn_child(&["--sim-child", "--churn"]);
        let addr = read_line(&mut sim);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _guard = rt.enter();
        let port = helpers::start_rumqttd();
        let points = 10_000;
        let rows: &[bool] = if only == "delivery-csv" { &[true] } else { &[true, false] };
        for &csv in rows {
            // A fresh subscriber per run: it checks that a seq never comes with two contents.
            let collector = helpers::Collector::start(port);
            rt.block_on(helpers::wait_for("subscribed", Duration::from_secs(10), || {
                collector.received.lock().unwrap().subscribed
            }));
            let t0 = Instant::now();
            let line = whole_agent(&addr, points, secs, csv, Some(port));
            let (delivered, bytes, versions) = {
                let r = collector.received.lock().unwrap();
                (r.deliveries, r.payload_bytes, r.versions.clone())
            };
            let what = if csv { "CSV points" } else { "TOML points" };
            println!(
                "{points:>6} points, agent delivering ({what}): {line}, {:.0} events/s delivered and acked, \
                 {:.1} payload B/change (batch versions {versions:?}, dictionary included, MQTT framing not)",
                delivered as f64 / t0.elapsed().as_secs_f64(),
                bytes as f64 / delivered.max(1) as f64
            );
            collector.stop();
        }
        let _ = sim.kill();
        let _ = sim.wait();
    }
}

fn bench_secs() -> u64 {
    std::env::var("SHIFTLENS_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

fn spawn_child(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap()).args(args).stdout(Stdio::piped()).spawn().unwrap()
}

fn read_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line.trim().to_string()
}

fn figures(points: usize, cpu: Duration, wall: Duration, proc: &str) -> String {
    let polled = (wall.as_secs_f64().floor() as usize * points) as f64;
    format!(
        "{:>8.0} points/s, CPU {:.2} ms per 1000 points polled, {:.2} % of one core, peak RSS {:.1} MB, RSS now {:.1} MB, {} threads, {} minor and {} major page faults",
        polled / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / (polled / 1000.0),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        status_value(proc, "VmHWM:") as f64 / 1024.0,
        status_value(proc, "VmRSS:") as f64 / 1024.0,
        status_value(proc, "Threads:"),
        page_faults(proc).0,
        page_faults(proc).1,
    )
}

/// Page faults of the whole process so far (`{proc}/stat`, fields 10 and 12): minor (the page was in memory)
/// and major (read from the file).
fn page_faults(proc: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("{proc}/stat")).unwrap();
    // After the command name in parentheses: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    // majflt.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    (rest[7].parse().unwrap(), rest[9].parse().unwrap())
}

/// Drops the agent binary's pages from the page cache, so every run maps its code as read from disk: a binary
/// just written by the build or `cp` is held in other page-cache folios than one read back, and its resident
/// code differed by up to 0.5 MB between otherwise equal runs.
#[allow(unsafe_code)]
fn evict_from_page_cache(path: &str) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: posix_fadvise only advises the kernel about the open file's cached pages.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// The poller and detector alone: polls `points` points for `secs` and prints one line of figures.
fn poll_child(points: usize, addr: &str, secs: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let line = rt.block_on(async {
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
        let (cpu0, t0) = (cpu_time("/proc/self"), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu, wall) = (cpu_time("/proc/self") - cpu0, t0.elapsed());
        task.abort();
        drain.abort();
        figures(points, cpu, wall, "/proc/self")
    });
    println!("{line}");
}

fn device_text(addr: &str, d: usize) -> String {
    let mut text =
        format!("id = \"dev{d}\"\naddress = \"{addr}\"\nunit = {}\npoll = \"1s\"\ntimeout = \"1s\"\n", d + 1);
    for k in 0..PER_DEVICE {
        let a = d * PER_DEVICE + k;
        text.push_str(&format!(
            "[[points]]\nname = \"p{a}\"\nasset = \"asset-{:03}\"\ntable = \"holding\"\naddress = {a}\ntype = \"u16\"\nmeaning = {{ alarm = {{ id = \"A{a}\" }} }}\n",
            a / 100
        ));
    }
    text
}

fn device(addr: &str, d: usize) -> ModbusDevice {
    let raw: RawModbusDevice = toml::from_str(&device_text(addr, d)).unwrap();
    raw.validated().unwrap()
}

/// The points of device `d` as a register map (`points_csv`).
fn device_csv(d: usize) -> String {
    let mut text = String::from("name,asset,table,address,type,meaning,alarm_id\n");
    for k in 0..PER_DEVICE {
        let a = d * PER_DEVICE + k;
        text.push_str(&format!("p{a},asset-{:03},holding,{a},u16,alarm,A{a}\n", a / 100));
    }
    text
}

/// Runs the real agent binary on `points` points for `secs` after its first poll; one line of figures.
/// `csv`: each device's points come from a register map (`points_csv`) instead of `[[modbus.points]]`.
/// `broker`: deliver to this broker port (where something acks), else offline.
fn whole_agent(addr: &str, points: usize, secs: u64, csv: bool, broker: Option<u16>) -> String {
    let dir = tempfile::tempdir().unwrap();
    // Without a broker, a port nobody listens on: the agent buffers in its outbox and keeps retrying, as offline.
    let broker_addr = match broker {
        Some(port) => format!("127.0.0.1:{port}"),
        None => std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string(),
    };
    let mut text = format!(
        "site = \"plant-a\"\ngateway = \"gw-bench\"\n\n[outbox]\npath = {:?}\n\n[uplink]\nbroker = \"mqtt://{broker_addr}\"\n",
        dir.path().join("outbox.db").display().to_string()
    );
    for d in 0..points / PER_DEVICE {
        if csv {
            let name = format!("dev{d}.csv");
            std::fs::write(dir.path().join(&name), device_csv(d)).unwrap();
            let keys = device_text(addr, d);
            let keys = &keys[..keys.find("[[points]]").unwrap()];
            text.push_str(&format!("\n[[modbus]]\n{keys}points_csv = {name:?}\n"));
        } else {
            // Each device's keys and points become a `[[modbus]]` table with `[[modbus.points]]`.
            let dev = device_text(addr, d).replace("[[points]]", "[[modbus.points]]");
            text.push_str(&format!("\n[[modbus]]\n{dev}"));
        }
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text).unwrap();
    // SHIFTLENS_BENCH_AGENT: another build of the binary (e.g. one built with other profile settings).
    let bin = std::env::var("SHIFTLENS_BENCH_AGENT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shiftlens-agent").into());
    evict_from_page_cache(&bin);
    let mut agent = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = format!("/proc/{}", agent.id());
    // Start-up (config, outbox, first connect and poll) is left out of the CPU figure but not out of the peak.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, t0) = (cpu_time(&proc), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (cpu, wall) = (cpu_time(&proc) - cpu0, t0.elapsed());
    let line = figures(points, cpu, wall, &proc);
    // SHIFTLENS_BENCH_SMAPS=DIR: keep the agent's smaps and smaps_rollup of each run there, to see what is resident.
    if let Ok(out) = std::env::var("SHIFTLENS_BENCH_SMAPS") {
        for f in ["smaps", "smaps_rollup"] {
            let _ = std::fs::copy(format!("{proc}/{f}"), format!("{out}/{}-{f}", if csv { "csv" } else { "toml" }));
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    line
}

/// CPU time of every thread of a process, from `{proc}/task/*/schedstat` (nanoseconds).
fn cpu_time(proc: &str) -> Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("{proc}/task")).unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// The number on a line of `{proc}/status`, e.g. `VmHWM:` (peak RSS, kB), `VmRSS:` or `Threads:`.
fn status_value(proc: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The plant as a Modbus server; with `churn`, one asset in turn every 10 ms toggles its state (0/1) and
/// alarm word (0/1), so each of the 100 assets changes once a second: 3 points of its block (offsets 0, 2
/// and 14) change, 300 changes a second over the 10,000 points.
fn sim_child(churn: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let ids: Vec<String> = (0..100).map(|i| format!("asset-{i:03}")).collect();
        let plant = shiftlens_sim::plant::Plant::new(ids.clone());
        if churn {
            let plant = plant.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for id in ids.iter().cycle() {
                    tick.tick().await;
                    plant.update(id, |p| {
                        p.state ^= 1;
                        p.alarms ^= 1;
                    });
                }
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = shiftlens_sim::modbus::ModbusServer::start(plant, listener).unwrap();
        println!("{}", server.local_addr());
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}
