//! The real `shiftlens-agent run`, at the default log level, against each way delivery fails: a broker name
//! that does not resolve, a port nobody listens on, a Mosquitto whose TLS certificate is not signed by the
//! configured CA, a Mosquitto that refuses the password, and one that refuses the client id. Each time the
//! agent's first failed connect gives a WARN naming the broker, the reason in plain words and the action.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Guard of every wait (it ends as soon as its line appears).
const LONG: Duration = Duration::from_secs(60);

const AGENT: &str = env!("CARGO_BIN_EXE_shiftlens-agent");

/// `shiftlens-agent run` with `uplink` as its `[uplink]` lines, stderr into `dir/agent.log`, and no
/// RUST_LOG: the default level.
struct Running {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Running {
    fn start(dir: &Path, uplink: &str) -> Self {
        let config = dir.join("agent.toml");
        let text = format!(
            "site = \"plant-a\"\ngateway = \"gw-1\"\n\n[outbox]\npath = {:?}\n\n[uplink]\n{uplink}\n\
             reconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\n",
            dir.join("outbox.db").display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("agent.log");
        let child = Command::new(AGENT)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log, started: Instant::now() }
    }

    /// The log so far, without terminal colour codes.
    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Waits for the first WARN line containing `want` and returns it.
    async fn warn_line(&mut self, want: &str) -> String {
        let found = |text: &str| text.lines().find(|l| l.contains("WARN") && l.contains(want)).map(String::from);
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(line) = found(&self.log()) {
                eprintln!("after {:?}: {line}", self.started.elapsed());
                return line;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "the agent ended:\n{}", self.log());
            assert!(Instant::now() < deadline, "no WARN with {want:?} within {LONG:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Removes `ESC [ ... m` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The WARN of the first failed connect names the broker, the reason and the action, and says it is the
/// first attempt (so it was not held back by the rate limit).
fn assert_first_warning(line: &str, broker: &str, reason: &str, action: &str) {
    assert!(line.contains("cannot connect to the broker"), "{line}");
    assert!(line.contains(broker), "broker {broker} not named: {line}");
    assert!(line.contains(reason), "reason {reason:?} not given: {line}");
    assert!(line.contains(action), "action {action:?} not given: {line}");
    assert!(line.contains("failed_attempts=1") && line.contains("outage_s=0"), "not the first attempt: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_name_that_does_not_resolve_is_warned_about_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let broker = "mqtt://no-such-broker.invalid:1883";
    let mut agent = Running::start(dir.path(), &format!("broker = {broker:?}\ninsecure = true"));
    let line = agent.warn_line("cannot connect to the broker").await;
    assert_first_warning(
        &line,
        broker,
        "name not resolved: no-such-broker.invalid is not known to DNS",
        "check the host name in [uplink] broker",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_warned_about_once_and_then_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    // Bound but never listening: connections are refused, and no other socket can take the port.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = refusing.local_addr().unwrap().port();
    let broker = format!("mqtt://127.0.0.1:{port}");
    let mut agent = Running::start(dir.path(), &format!("broker = {broker:?}"));
    let line = agent.warn_line("cannot connect to the broker").await;
    assert_first_warning(
        &line,
        &broker,
        &format!("connection refused: nothing listens on 127.0.0.1:{port}"),
        "check that the collector (or broker) runs",
    );
    // Reconnects every 50-300 ms: wait until the state file counts more failures, then the log still holds one
    // WARN for them (the next is due after warn_every, 1 minute).
    let state = dir.path().join("outbox.state.json");
    wait_for("five failed connects in the state file", LONG, || {
        std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["uplink"]["failures"].as_u64())
            .is_some_and(|n| n >= 5)
    })
    .await;
    let warns = agent.log().lines().filter(|l| l.contains("cannot connect to the broker")).count();
    assert_eq!(warns, 1, "one WARN per minute at most:\n{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_warned_about_as_unknown_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let mosquitto = Mosquitto::start_with_listener(dir.path(), |port| {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        )
    });
    let broker = format!("mqtts://127.0.0.1:{}", mosquitto.extra_port.unwrap());
    // The gateway trusts the impostor CA, so the real broker's certificate is from an unknown issuer.
    let uplink = format!(
        "broker = {broker:?}\nca = {:?}\ncert = {:?}\nkey = {:?}",
        pki.other_ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string()
    );
    let mut agent = Running::start(dir.path(), &uplink);
    let line = agent.warn_line("cannot connect to the broker").await;
    assert_first_warning(
        &line,
        &broker,
        "TLS: the broker's certificate is not signed by the configured CA (UnknownIssuer)",
        "set [uplink] ca to the CA file that signed the broker's certificate",
    );
}

/// A Mosquitto that checks passwords (user gw-1).
fn password_broker(dir: &Path, password: &str, extra: &str) -> Mosquitto {
    let passwd = dir.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwd)
        .arg("gw-1")
        .arg(password)
        .status()
        .expect("mosquitto_passwd must be installed (apt-get install mosquitto)");
    assert!(status.success());
    Mosquitto::start(dir, &format!("allow_anonymous false\npassword_file {}\n{extra}", passwd.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_warned_about_as_a_refused_login() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = password_broker(dir.path(), "right-password", "");
    let broker = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    let mut agent =
        Running::start(dir.path(), &format!("broker = {broker:?}\nusername = \"gw-1\"\npassword = \"wrong-password\""));
    let line = agent.warn_line("cannot connect to the broker").await;
    // Mosquitto answers a wrong password to an MQTT 3.1.1 client with CONNACK 5, "not authorised".
    assert_first_warning(
        &line,
        &broker,
        "not authorised: the broker refused this client's login",
        "check [uplink] username, password and client_id",
    );
    assert!(!agent.log().contains("wrong-password"), "the password is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_id_is_warned_about_as_a_refused_login() {
    let dir = tempfile::tempdir().unwrap();
    // The right password, but Mosquitto lets in only client ids starting with "gw-"; the agent's default is
    // shiftlens-plant-a-gw-1.
    let mosquitto = password_broker(dir.path(), "right-password", "clientid_prefixes gw-\n");
    let broker = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    let mut agent =
        Running::start(dir.path(), &format!("broker = {broker:?}\nusername = \"gw-1\"\npassword = \"right-password\""));
    let line = agent.warn_line("cannot connect to the broker").await;
    assert_first_warning(
        &line,
        &broker,
        "not authorised: the broker refused this client's login",
        "check [uplink] username, password and client_id",
    );
    // With the client id it accepts, the same agent gets in, and says so at INFO.
    drop(agent);
    let mut agent = Running::start(
        dir.path(),
        &format!("broker = {broker:?}\nusername = \"gw-1\"\npassword = \"right-password\"\nclient_id = \"gw-1\""),
    );
    let deadline = Instant::now() + LONG;
    while !agent.log().contains("connected to broker") {
        assert!(agent.child.try_wait().unwrap().is_none(), "the agent ended:\n{}", agent.log());
        assert!(Instant::now() < deadline, "never connected:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!agent.log().contains("cannot connect"), "{}", agent.log());
}
