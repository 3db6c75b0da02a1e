//! `shiftlens-agent check` and config validation: every numeric option is range-checked with file:line:col
//! and the allowed range; `check` (through the real binary) also catches what `run` would fail on (missing
//! or unreadable files, a key that is not the certificate's, a client id or gateway the collector's broker
//! refuses, expired certificates) and reports every problem at once; the binary writes no colour codes into
//! a pipe.
#![allow(clippy::unwrap_used)]

use shiftlens_agent::config::ranges::{describe, RANGES};
use shiftlens_agent::Config;
use shiftlens_common::config::ConfigFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A config that sets every numeric option to a valid value, each written once.
const ALL_NUMBERS: &str = r#"site = "plant1"
gateway = "gw1"
[outbox]
max_bytes = "256MiB"
memory_bytes = "16MiB"
[uplink]
broker = "mqtt://127.0.0.1:1883"
keep_alive = "30s"
batch_events = 1000
batch_bytes = "256KiB"
inflight_batches = 8
ack_timeout = "30s"
heartbeat = "30s"
reconnect_min = "1s"
reconnect_max = "60s"
[[modbus]]
id = "rtu"
serial = "/dev/ttyUSB0"
baud = 9600
data_bits = 8
stop_bits = 1
unit = 5
[[modbus.points]]
name = "p"
asset = "a"
table = "coil"
address = 1
type = "bool"
meaning = "info"
[[modbus]]
id = "plc"
address = "127.0.0.1:502"
unit = 1
poll = "1s"
timeout = "1s"
backoff_max = "30s"
coalesce_gap = 0
meanings = { m = { alarm = { id = "M", severity = 500, debounce = "1s" } } }
[[modbus.points]]
name = "s"
asset = "a"
table = "holding"
address = 0
type = "bit"
bit = 3
meaning = { alarm = { id = "A", severity = 700, debounce = "200ms" } }
[[modbus.points]]
name = "t"
asset = "a"
table = "holding"
address = 1
type = "u16"
scale = 0.1
offset = 2.0
meaning = { threshold = { id = "T", above = 80.0, hysteresis = 2.0 } }
[[opcua]]
id = "ua"
endpoint = "opc.tcp://127.0.0.1:4840/"
security_policy = "none"
security_mode = "none"
keep_alive = "1s"
request_timeout = "2s"
publishing_interval = "250ms"
[[opcua.points]]
node = "ns=2;s=x"
asset = "a"
sampling = "250ms"
deadband = 0.5
meaning = { alarm_word = { bits = { 0 = { id = "W", severity = 100 } } } }
"#;

fn validate(text: &str) -> Result<Config, Vec<String>> {
    Config::from_file(&ConfigFile::from_text("agent.toml", text))
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

#[test]
fn every_numeric_option_out_of_range_is_named_with_its_place_and_range() {
    validate(ALL_NUMBERS).unwrap();
    // (text in ALL_NUMBERS, its replacement, words the error at that line must contain)
    let cases: &[(&str, &str, &[&str])] = &[
        ("keep_alive = \"30s\"", "keep_alive = \"65536s\"", &["keep_alive \"65536s\" is out of range (1s-65535s)"]),
        ("keep_alive = \"30s\"", "keep_alive = \"0s\"", &["keep_alive \"0s\" is out of range (1s-65535s)"]),
        ("max_bytes = \"256MiB\"", "max_bytes = \"128GiB\"", &["max_bytes \"128GiB\" is out of range (1MiB-64GiB)"]),
        ("max_bytes = \"256MiB\"", "max_bytes = \"1KiB\"", &["max_bytes", "1MiB"]),
        (
            "memory_bytes = \"16MiB\"",
            "memory_bytes = \"2GiB\"",
            &["memory_bytes \"2GiB\" is out of range (64KiB-1GiB)"],
        ),
        ("batch_events = 1000", "batch_events = 0", &["batch_events", "10000"]),
        ("batch_events = 1000", "batch_events = 99999999999", &["batch_events", "10000"]),
        ("batch_bytes = \"256KiB\"", "batch_bytes = \"1MiB\"", &["batch_bytes", "512KiB"]),
        ("inflight_batches = 8", "inflight_batches = 65", &["inflight_batches", "64"]),
        ("inflight_batches = 8", "inflight_batches = -1", &["inflight_batches -1 is out of range (1-64)"]),
        ("ack_timeout = \"30s\"", "ack_timeout = \"2h\"", &["ack_timeout \"2h\" is out of range (100ms-1h)"]),
        ("heartbeat = \"30s\"", "heartbeat = \"50ms\"", &["heartbeat \"50ms\" is out of range (100ms-1h)"]),
        ("reconnect_min = \"1s\"", "reconnect_min = \"5ms\"", &["reconnect_min \"5ms\" is out of range (10ms-1h)"]),
        ("reconnect_max = \"60s\"", "reconnect_max = \"2d\"", &["reconnect_max \"2d\" is out of range (10ms-1h)"]),
        ("broker = \"mqtt://127.0.0.1:1883\"", "broker = \"mqtt://127.0.0.1:0\"", &["port"]),
        ("baud = 9600", "baud = 10", &["baud 10 is out of range (50-4000000)"]),
        ("baud = 9600", "baud = 5000000000", &["baud 5000000000 is out of range (50-4000000)"]),
        ("data_bits = 8", "data_bits = 9", &["data_bits 9 is out of range (5-8)"]),
        ("stop_bits = 1", "stop_bits = 3", &["stop_bits 3 is out of range (1-2)"]),
        ("unit = 1", "unit = 300", &["unit 300 is out of range (0-255)"]),
        ("unit = 5", "unit = 248", &["unit 248 is out of range for RTU (1-247)"]),
        ("poll = \"1s\"", "poll = \"2h\"", &["poll \"2h\" is out of range (1ms-1h)"]),
        ("timeout = \"1s\"", "timeout = \"10m\"", &["timeout \"10m\" is out of range (1ms-5m)"]),
        ("backoff_max = \"30s\"", "backoff_max = \"2h\"", &["backoff_max \"2h\" is out of range (10ms-1h)"]),
        ("coalesce_gap = 0", "coalesce_gap = 5000", &["coalesce_gap 5000 is out of range (0-1999)"]),
        ("address = 0", "address = -1", &["address -1 is out of range (0-65535)"]),
        ("address = 0", "address = 65536", &["address 65536 is out of range (0-65535"]),
        ("bit = 3", "bit = 16", &["bit 16 is out of range (0-15)"]),
        ("scale = 0.1", "scale = nan", &["scale NaN is not allowed (a finite number)"]),
        ("offset = 2.0", "offset = -inf", &["offset -inf is not allowed (a finite number)"]),
        ("address = \"127.0.0.1:502\"", "address = \"127.0.0.1:0\"", &["port 0 is out of range (1-65535)"]),
        ("opc.tcp://127.0.0.1:4840/", "opc.tcp://127.0.0.1:70000/", &["port 70000 is out of range (1-65535)"]),
        ("keep_alive = \"1s\"", "keep_alive = \"20m\"", &["keep_alive \"20m\" is out of range (50ms-10m)"]),
        ("request_timeout = \"2s\"", "request_timeout = \"10ms\"", &["50ms"]),
        ("publishing_interval = \"250ms\"", "publishing_interval = \"2h\"", &["(50ms-1h)"]),
        ("sampling = \"250ms\"", "sampling = \"2h\"", &["sampling \"2h\" is out of range (0ms-1h)"]),
        ("deadband = 0.5", "deadband = -1.0", &["deadband", ">= 0"]),
        ("severity = 500", "severity = 5000", &["severity 5000 is out of range (1-1000)"]),
        ("severity = 700", "severity = 0", &["severity 0 is out of range (1-1000)"]),
        ("severity = 100", "severity = 1001", &["severity 1001 is out of range (1-1000)"]),
        ("debounce = \"1s\"", "debounce = \"2h\"", &["debounce \"2h\" is out of range (0ms-1h)"]),
        ("debounce = \"200ms\"", "debounce = \"90m\"", &["debounce \"90m\" is out of range (0ms-1h)"]),
        ("above = 80.0", "above = inf", &["above inf is not allowed (a finite number)"]),
        ("hysteresis = 2.0", "hysteresis = -1.0", &["hysteresis -1 is not allowed (a finite number >= 0)"]),
    ];
    for (old, new, words) in cases {
        assert_eq!(ALL_NUMBERS.matches(old).count(), 1, "{old:?} must occur once in the template");
        let at = ALL_NUMBERS.find(old).unwrap();
        let line = ALL_NUMBERS[..at].matches('\n').count() + 1;
        let text = ALL_NUMBERS.replacen(old, new, 1);
        let errs = validate(&text).err().unwrap_or_else(|| panic!("{new:?} was accepted"));
        let prefix = format!("agent.toml:{line}:");
        assert!(
            errs.iter().any(|e| e.starts_with(&prefix) && words.iter().all(|w| e.contains(w))),
            "{new:?}: want an error at {prefix} with {words:?}, got {errs:#?}"
        );
    }
}

#[test]
fn an_out_of_range_number_is_reported_together_with_other_mistakes() {
    // A typo stops the typed parse; the range errors of the document are still all there.
    let text = ALL_NUMBERS
        .replacen("keep_alive = \"30s\"", "keep_alive = \"65536s\"", 1)
        .replacen("unit = 1", "unit = 300", 1)
        .replacen("coalesce_gap = 0", "coalesce_gapp = 0", 1);
    let errs = validate(&text).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("keep_alive \"65536s\" is out of range"), "{errs:#?}");
    assert!(errs[1].contains("unit 300 is out of range (0-255)"), "{errs:#?}");
    assert!(errs[2].contains("unknown field `coalesce_gapp`"), "{errs:#?}");
}

#[test]
fn a_mistake_in_each_section_is_reported_at_once() {
    // Each of these stops the typed parse on its own; every one is reported, with the range errors.
    let text = ALL_NUMBERS
        .replacen("memory_bytes = \"16MiB\"", "memory_bytes = \"16MiB\"\nsynchronous = \"sometimes\"", 1)
        .replacen("heartbeat = \"30s\"", "heartbeat = 30", 1)
        .replacen("table = \"coil\"", "table = \"register\"", 1)
        .replacen("request_timeout = \"2s\"", "request_timeout = \"2s\"\nkeepalive = \"1s\"", 1)
        .replacen("keep_alive = \"30s\"", "keep_alive = \"65536s\"", 1)
        .replacen("coalesce_gap = 0", "coalesce_gap = 5000", 1);
    let errs = validate(&text).unwrap_err();
    for words in [
        "unknown variant `sometimes`",
        "duration",
        "unknown variant `register`",
        "unknown field `keepalive`",
        "keep_alive \"65536s\" is out of range",
        "coalesce_gap 5000 is out of range",
    ] {
        assert!(errs.iter().any(|e| e.contains(words)), "no error with {words:?}: {errs:#?}");
    }
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn the_config_reference_lists_every_range() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config-reference.md")).unwrap();
    for r in RANGES {
        let row = format!("| `{}` | {} |", r.path, describe(r.kind));
        assert!(docs.contains(&row), "docs/config-reference.md lacks the row {row}");
    }
}

#[test]
fn the_example_config_is_within_every_range() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    // The example's register map and password file do not exist here; only ranges matter.
    let errs = match validate(&text) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    };
    assert!(errs.iter().all(|e| !e.contains("out of range") && !e.contains("not allowed")), "{errs:#?}");
}

// ---- `check` through the real binary ----------------------------------------------------------------------

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shiftlens-agent")).args(["check", "--config"]).arg(config).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Test certificates: a CA and leaves it signs, valid from a year ago until `days` from now.
fn ca(dir: &Path) -> (PathBuf, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    (path, rcgen::Issuer::new(p, key))
}

/// Writes `{name}.pem` and `{name}.key` for a client certificate with `cn`; returns their paths.
fn leaf(dir: &Path, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str, cn: &str, days: i64) -> (PathBuf, PathBuf) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    use std::time::{Duration, SystemTime};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = rcgen::date_time_ymd(1970, 1, 1) + SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    p.not_before = now - Duration::from_secs(365 * 86_400);
    p.not_after = if days >= 0 {
        now + Duration::from_secs(days as u64 * 86_400)
    } else {
        now - Duration::from_secs(days.unsigned_abs() * 86_400)
    };
    let cert = p.signed_by(&key, issuer).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// An mTLS agent config with an OPC UA endpoint that logs in with a password file; `uplink` and `identity`
/// are TOML lines.
fn tls_config(dir: &Path, uplink: &str, identity: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    // A certificate identity needs a secured endpoint (the default); a password goes without.
    let security =
        if identity.contains("certificate") { "" } else { "security_policy = \"none\"\nsecurity_mode = \"none\"\n" };
    let text = format!(
        "site = \"plant-a\"\ngateway = \"gw-1\"\n[outbox]\npath = {db:?}\n[uplink]\nbroker = \"mqtts://collector:8883\"\n\
         {uplink}\n[[opcua]]\nid = \"ua\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n{security}\
         {identity}\n[[opcua.points]]\nnode = \"ns=2;s=x\"\nasset = \"a\"\nmeaning = \"info\"\n",
        db = dir.join("outbox.db").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[test]
fn check_reports_five_different_mistakes_at_once_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, issuer) = ca(dir.path());
    drop(ca); // `ca` below names a file that is not there
    let (cert, _) = leaf(dir.path(), &issuer, "gw-1", "gw-1", 10); // expires in 10 days: a warning
    let (_, other_key) = leaf(dir.path(), &issuer, "other", "gw-1", 365);
    let uplink = format!(
        "ca = {}\ncert = {}\nkey = {}\nkeep_alive = \"65536s\"",
        toml_path(&dir.path().join("missing-ca.pem")),
        toml_path(&cert),
        toml_path(&other_key),
    );
    let identity = format!(
        "identity = {{ user = {{ name = \"u\", password_file = {} }} }}",
        toml_path(&dir.path().join("missing.pass"))
    );
    let out = check(&tls_config(dir.path(), &uplink, &identity));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "five errors and a warning:\n{stderr}");
    for (i, words) in [
        "cannot read CA file",
        "client id \"shiftlens-plant-a-gw-1\" is not the certificate's CN \"gw-1\"",
        "does not belong to the certificate",
        "keep_alive \"65536s\" is out of range (1s-65535s)",
        "cannot read password_file",
        "warning: client certificate",
    ]
    .iter()
    .enumerate()
    {
        assert!(lines.iter().any(|l| l.contains(words)), "no line with {words:?} (#{i}):\n{stderr}");
    }
    assert!(lines.iter().all(|l| l.contains("agent.toml:")), "every line is located:\n{stderr}");
    assert!(lines.last().unwrap().contains("expires in"), "warnings come last:\n{stderr}");
}

#[test]
fn check_catches_each_case_run_would_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, issuer) = ca(d);
    let (cert, key) = leaf(d, &issuer, "gw-1", "gw-1", 365);
    let (other_cert, other_key) = leaf(d, &issuer, "gw-2", "gw-2", 365);
    let (expired_cert, expired_key) = leaf(d, &issuer, "old", "gw-1", -1);
    let pass = d.join("ua.pass");
    std::fs::write(&pass, "secret\n").unwrap();
    let empty_pass = d.join("empty.pass");
    std::fs::write(&empty_pass, "\n").unwrap();
    let tls = |ca: &Path, cert: &Path, key: &Path, extra: &str| {
        format!("ca = {}\ncert = {}\nkey = {}\n{extra}", toml_path(ca), toml_path(cert), toml_path(key))
    };
    let user = |f: &Path| format!("identity = {{ user = {{ name = \"u\", password_file = {} }} }}", toml_path(f));
    let good = tls(&ca, &cert, &key, "client_id = \"gw-1\"");
    let missing = d.join("missing.pem");
    // (uplink lines, identity line, words of the one expected error; empty: no error)
    let cases: Vec<(String, String, &str)> = vec![
        (good.clone(), user(&pass), ""),
        (tls(&missing, &cert, &key, "client_id = \"gw-1\""), user(&pass), "cannot read CA file"),
        (tls(&ca, &missing, &key, "client_id = \"gw-1\""), user(&pass), "cannot read client certificate"),
        (tls(&ca, &cert, &missing, "client_id = \"gw-1\""), user(&pass), "cannot read client key"),
        (tls(&ca, &pass, &key, "client_id = \"gw-1\""), user(&pass), "holds no PEM certificate"),
        (tls(&ca, &cert, &pass, "client_id = \"gw-1\""), user(&pass), "is not a PEM private key"),
        (tls(&ca, &cert, &other_key, "client_id = \"gw-1\""), user(&pass), "does not belong to the certificate"),
        (tls(&ca, &cert, &key, ""), user(&pass), "client id \"shiftlens-plant-a-gw-1\" is not the certificate's CN"),
        (tls(&ca, &cert, &key, "client_id = \"gw-2\""), user(&pass), "set client_id = \"gw-1\""),
        (
            tls(&ca, &other_cert, &other_key, "client_id = \"gw-2\""),
            user(&pass),
            "gateway \"gw-1\" is not the certificate's CN \"gw-2\"",
        ),
        (tls(&ca, &expired_cert, &expired_key, "client_id = \"gw-1\""), user(&pass), "expired on"),
        (good.clone(), user(&missing), "cannot read password_file"),
        (good.clone(), user(&empty_pass), "is empty"),
        (
            good.clone(),
            format!("identity = {{ certificate = {{ cert = {}, key = {} }} }}", toml_path(&missing), toml_path(&key)),
            "cannot read identity certificate",
        ),
        (format!("{good}\nkeep_alive = \"65536s\""), user(&pass), "out of range (1s-65535s)"),
    ];
    for (uplink, identity, words) in &cases {
        let config = tls_config(d, uplink, identity);
        let out = check(&config);
        let stderr = text(&out.stderr);
        if words.is_empty() {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(stderr.is_empty(), "{stderr}");
            assert!(text(&out.stdout).ends_with(": ok\n"));
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{words}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{words}: one error, got\n{stderr}");
        assert!(
            lines[0].starts_with(&format!("{}:", config.display())) && lines[0].contains(words),
            "{words}: {stderr}"
        );
    }

    // A missing outbox directory is a warning: the systemd unit makes the default one at the first start.
    let text_of = std::fs::read_to_string(tls_config(d, &good, &user(&pass))).unwrap();
    let broken = text_of.replace(&d.join("outbox.db").display().to_string(), "/nonexistent/dir/outbox.db");
    let config = d.join("agent.toml");
    std::fs::write(&config, broken).unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning: the outbox's directory /nonexistent/dir does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_with_warnings_only_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, issuer) = ca(d);
    let (cert, key) = leaf(d, &issuer, "gw-1", "gw-1", 5);
    let pass = d.join("ua.pass");
    std::fs::write(&pass, "secret\n").unwrap();
    let uplink = format!(
        "ca = {}\ncert = {}\nkey = {}\nclient_id = \"gw-1\"",
        toml_path(&ca),
        toml_path(&cert),
        toml_path(&key)
    );
    let identity = format!("identity = {{ user = {{ name = \"u\", password_file = {} }} }}", toml_path(&pass));
    let out = check(&tls_config(d, &uplink, &identity));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("agent.toml:")
            && stderr.contains("warning: client certificate")
            && stderr.contains("expires in")
    );
    assert!(text(&out.stdout).ends_with(": ok, 1 warning(s)\n"), "{}", text(&out.stdout));
}

/// Logs into a pipe (the journal, a file) carry no colour codes.
#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    // A plaintext broker on a port nobody listens on: the agent starts, logs, and keeps trying.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            "site = \"plant-a\"\ngateway = \"gw-1\"\n[outbox]\npath = {}\n[uplink]\nbroker = \"mqtt://127.0.0.1:{port}\"\n",
            toml_path(&dir.path().join("outbox.db"))
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    // Read until an INFO line, which a terminal would colour.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let info = line.contains("INFO");
        seen.push(line);
        if info && seen.len() >= 2 {
            break;
        }
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    seen.extend(lines.map_while(Result::ok));
    child.wait().unwrap();
    let all = seen.join("\n");
    assert!(all.contains("INFO"), "{all}");
    assert!(!all.contains('\x1b'), "colour codes in piped logs:\n{all}");
}
