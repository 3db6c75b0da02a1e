//! End-to-end test helpers: start the real programs (`shiftlens-sim`, `shiftlens-agent`,
//! `shiftlens-collector`) as separate processes with the config templates in `config/demo/`.
//!
//! Invariants: binaries are built once per test process with the test's own cargo profile (`cargo build`
//! of the three packages; a no-op when up to date) and found through cargo's JSON messages; every port
//! comes from the OS (programs bind port 0 and print the address they got); every process is killed when
//! its handle drops, and its output is printed then if the test failed or `TEST_LOG=1`.
#![allow(clippy::unwrap_used)]

use shiftlens_collector::pki::{Ca, Kind};
use shiftlens_common::{GatewayId, SiteId};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The site of the demo plant (`config/samples/assets.csv`).
pub const SITE: &str = "plant-a";
/// Personnel CSVs in the order their references need.
pub const SAMPLE_KINDS: [&str; 9] = [
    "skills",
    "rotation",
    "people",
    "person-skills",
    "roster",
    "assets",
    "alarm-classes",
    "initiatives",
    "work-orders",
];

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Paths of the three programs.
#[derive(Debug)]
pub struct Bins {
    pub sim: PathBuf,
    pub agent: PathBuf,
    pub collector: PathBuf,
}

/// Builds the three programs (once per test process) with this test's profile and returns their paths.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        // target/<profile>/deps/e2e-<hash>: the profile directory tells which profile built us.
        let exe = std::env::current_exe().unwrap();
        let profile =
            exe.parent().and_then(Path::parent).and_then(Path::file_name).unwrap().to_string_lossy().into_owned();
        let profile = if profile == "debug" { "dev".to_string() } else { profile };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Cargo gives a test its package's CARGO_PKG_*, CARGO_MANIFEST_DIR, ... Build scripts (ring's) rerun when
        // such variables change, so passing them on would rebuild dependencies on every run, here and in the
        // outer build. Drop them.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let per_package =
                ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_PRIMARY_"];
            if per_package.iter().any(|p| k.starts_with(p))
                || ["OUT_DIR", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"].contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let out = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--bins", "--message-format=json-render-diagnostics", "--profile", &profile])
            .args(["-p", "shiftlens-sim", "-p", "shiftlens-agent", "-p", "shiftlens-collector"])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo build of the programs failed");
        let mut found = std::collections::HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
                found.insert(name.to_string(), PathBuf::from(exe));
            }
        }
        let mut get = |n: &str| found.remove(n).unwrap_or_else(|| panic!("cargo built no executable {n}"));
        Bins { sim: get("shiftlens-sim"), agent: get("shiftlens-agent"), collector: get("shiftlens-collector") }
    })
}

/// Replaces each `@KEY@` of a template.
pub fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    assert!(!s.contains("@DIR@") && !s.contains("_PORT@"), "unfilled template variable in:\n{s}");
    s
}

/// Reads a template from `config/`, fills it and writes it to `to`.
pub fn write_config(template: &str, to: &Path, vars: &[(&str, &str)]) -> PathBuf {
    let text = std::fs::read_to_string(config_dir().join(template)).unwrap();
    std::fs::write(to, fill(&text, vars)).unwrap();
    to.to_path_buf()
}

/// How long to wait for something that must happen (a program's start, a TLS connection, data going
/// through the chain). Waits end as soon as it happens: generous for a slow, loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// Waits until `f` returns `Some`, polling every 100 ms; panics naming `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running program; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `bin` with `args`, capturing stdout and stderr line by line.
    pub fn spawn(name: &str, bin: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Self { name: name.to_string(), child, output }
    }

    /// Everything the program printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for an output line containing `needle` and returns the rest of the line after it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("{} to print {needle:?}", self.name);
        wait_until(timeout, &what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before printing {needle:?}:\n{}", self.name, self.output().join("\n"));
            }
            self.output().iter().find_map(|l| l.split_once(needle).map(|(_, rest)| rest.trim().to_string()))
        })
    }

    /// Whether the program is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("----- {} output -----\n{}", self.name, self.output().join("\n"));
        }
    }
}

/// The first `ip:port` in `s`.
fn addr_in(s: &str) -> SocketAddr {
    s.split(|c: char| c.is_whitespace() || c == '/')
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {s:?}"))
}

/// A test installation in one directory: the CA, the broker's and each gateway's certificates (in
/// `{dir}/pki`, as the templates expect: `broker.pem`, `{site}.{gateway}.pem`), the gateways all of `site`,
/// made by the collector's `pki` module as `shiftlens-collector pki` makes them.
pub fn make_pki(dir: &Path, site: &str, gateways: &[&str]) -> Ca {
    let now = chrono::Utc::now().timestamp_millis();
    let ca = Ca::init(&dir.join("pki"), "e2e CA", 30, now).unwrap();
    let server = Kind::Server { name: "broker".into(), hosts: vec!["localhost".into(), "127.0.0.1".into()] };
    ca.issue(&server, 30, now).unwrap();
    for g in gateways {
        let kind = Kind::Gateway { site: SiteId::parse(site).unwrap(), gateway: GatewayId::parse(*g).unwrap() };
        ca.issue(&kind, 30, now).unwrap();
    }
    ca
}

/// A running collector: where gateways connect and where its HTTP API listens.
pub struct Collector {
    pub proc: Proc,
    pub config: PathBuf,
    pub broker: SocketAddr,
    pub http: SocketAddr,
}

/// Writes `{dir}/collector.toml` from `config/demo/collector.toml`, imports the sample personnel data
/// (`config/samples/`) with `shiftlens-collector import`, and starts `shiftlens-collector run`.
pub fn spawn_collector(dir: &Path) -> Collector {
    let d = dir.to_string_lossy();
    let config = write_config(
        "demo/collector.toml",
        &dir.join("collector.toml"),
        &[("DIR", &d), ("BROKER_PORT", "0"), ("HTTP_PORT", "0")],
    );
    let c = config.to_string_lossy().into_owned();
    for kind in SAMPLE_KINDS {
        let file = config_dir().join("samples").join(format!("{kind}.csv"));
        let out = Command::new(&bins().collector)
            .args(["import", kind, &file.to_string_lossy(), "--config", &c])
            .output()
            .unwrap();
        assert!(out.status.success(), "import {kind}: {}", String::from_utf8_lossy(&out.stderr));
    }
    run_collector(&config)
}

/// Starts `shiftlens-collector run` with `config` (e.g. again, after a [`spawn_collector`] was killed: the same
/// store, new ports).
pub fn run_collector(config: &Path) -> Collector {
    let c = config.to_string_lossy().into_owned();
    let mut proc = Proc::spawn("collector", &bins().collector, &["run", "--config", &c]);
    let broker = addr_in(&proc.wait_for("broker listening on", WAIT));
    let http = addr_in(&proc.wait_for("http listening on", WAIT));
    Collector { proc, config: config.to_path_buf(), broker, http }
}

/// A running simulated plant.
pub struct Plant {
    pub proc: Proc,
    pub modbus: SocketAddr,
    /// `opc.tcp://ip:port/`
    pub opcua: String,
}

/// Starts `shiftlens-sim run` with a scenario from `config/`, Modbus and OPC UA on free ports.
pub fn spawn_plant(dir: &Path, scenario: &str) -> Plant {
    let scenario = config_dir().join(scenario);
    let pki = dir.join("sim-pki");
    let args = [
        "run",
        "--scenario",
        &scenario.to_string_lossy(),
        "--modbus",
        "127.0.0.1:0",
        "--opcua",
        "127.0.0.1:0",
        "--pki",
        &pki.to_string_lossy(),
    ]
    .map(|s| s.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::spawn("plant", &bins().sim, &args);
    let modbus = addr_in(&proc.wait_for("Modbus TCP on", WAIT));
    let opcua = format!("opc.tcp://{}/", addr_in(&proc.wait_for("OPC UA on", WAIT)));
    Plant { proc, modbus, opcua }
}

/// Writes `{dir}/{gateway}.toml` from `config/demo/{gateway}.toml` (the collector's broker port and
/// `vars`) and starts `shiftlens-agent run`.
pub fn spawn_agent(dir: &Path, gateway: &str, collector: &Collector, vars: &[(&str, &str)]) -> Proc {
    let d = dir.to_string_lossy();
    let port = collector.broker.port().to_string();
    let mut all = vec![("DIR", d.as_ref()), ("BROKER_PORT", port.as_str())];
    all.extend_from_slice(vars);
    let config = write_config(&format!("demo/{gateway}.toml"), &dir.join(format!("{gateway}.toml")), &all);
    Proc::spawn(gateway, &bins().agent, &["run", "--config", &config.to_string_lossy()])
}

/// A plain HTTP/1.0 GET (so the answer is never chunked); returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// GET returning JSON; panics on a status other than 200.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// GET returning JSON, or `None` when the request failed or did not answer 200 (for polling in
/// [`wait_until`], where a slow or busy moment of the server is not yet an answer).
pub fn try_get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        Ok((status, body)) => {
            eprintln!("GET {path}: {status} {body}");
            None
        }
        Err(e) => {
            eprintln!("GET {path}: {e}");
            None
        }
    }
}
