//! `[outbox]`, `[uplink]` and `[health]` as written, with their validation without I/O; each `validated()`
//! makes the plain section type its component uses. Defaults come from the components' own `Default`s.

use crate::health::HealthConfig;
use crate::outbox::{OutboxConfig, Synchronous};
use crate::uplink::{Broker, Secret, UplinkConfig};
use serde::Deserialize;
use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, HumanDuration, Spanned};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[outbox]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutboxConfig {
    /// The database file.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Bound on stored events (bodies, asset ids and a small per-row overhead), e.g. "256MiB".
    #[serde(default = "default_max_bytes")]
    pub max_bytes: Spanned<ByteSize>,
    /// Events held in memory while the database cannot be written (disk full), e.g. "16MiB".
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: Spanned<ByteSize>,
    /// SQLite `synchronous`: `normal` (WAL default; survives process crashes, may lose the last commits on
    /// power loss) or `full` (fsync on every commit).
    #[serde(default)]
    pub synchronous: Synchronous,
}

fn default_path() -> PathBuf {
    OutboxConfig::default().path
}
fn default_max_bytes() -> Spanned<ByteSize> {
    Spanned::new(0..0, OutboxConfig::default().max_bytes)
}
fn default_memory_bytes() -> Spanned<ByteSize> {
    Spanned::new(0..0, OutboxConfig::default().memory_bytes)
}

impl Default for RawOutboxConfig {
    fn default() -> Self {
        Self {
            path: default_path(),
            max_bytes: default_max_bytes(),
            memory_bytes: default_memory_bytes(),
            synchronous: Synchronous::default(),
        }
    }
}

impl RawOutboxConfig {
    /// The validated section (after [`Self::validate`] passed).
    pub fn validated(self) -> OutboxConfig {
        OutboxConfig {
            path: self.path,
            max_bytes: self.max_bytes.into_inner(),
            memory_bytes: self.memory_bytes.into_inner(),
            synchronous: self.synchronous,
        }
    }

    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        if self.max_bytes.get_ref().0 < 1 << 20 {
            errors.push(file.error_at(self.max_bytes.span(), "outbox max_bytes must be at least 1MiB"));
        }
        if self.memory_bytes.get_ref().0 < 64 << 10 {
            errors.push(file.error_at(self.memory_bytes.span(), "outbox memory_bytes must be at least 64KiB"));
        }
    }
}

/// `[health]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthConfig {
    /// Local Prometheus endpoint (`GET /metrics`), e.g. `"127.0.0.1:9101"`; off when absent.
    pub listen: Option<Spanned<String>>,
    /// Allows `listen` on an address other than loopback.
    #[serde(default)]
    pub allow_remote: bool,
    /// The state file `status` reads; default next to the outbox ([`state::state_path`]).
    pub state_file: Option<PathBuf>,
    /// How often the state file (and the endpoint's figures) is refreshed.
    #[serde(default = "d_state_interval")]
    pub state_interval: Spanned<HumanDuration>,
    /// While the broker cannot be reached, at most one WARN per this interval (a new reason is logged at once).
    #[serde(default = "d_warn_every")]
    pub warn_every: HumanDuration,
    /// ERROR when the outbox holds more than this percentage of `[outbox] max_bytes` (1-100).
    #[serde(default = "d_alert_percent")]
    pub outbox_alert_percent: Spanned<u8>,
    /// ERROR when the oldest unsent event is older than this.
    #[serde(default = "d_alert_age")]
    pub outbox_alert_age: HumanDuration,
    /// While the backlog stays over a threshold, the ERROR is repeated at this interval.
    #[serde(default = "d_alert_every")]
    pub alert_every: HumanDuration,
}

fn d_state_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(HealthConfig::default().state_interval))
}
fn d_warn_every() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn d_alert_percent() -> Spanned<u8> {
    Spanned::new(0..0, 80)
}
fn d_alert_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn d_alert_every() -> HumanDuration {
    HumanDuration(Duration::from_secs(900))
}

impl Default for RawHealthConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allow_remote: false,
            state_file: None,
            state_interval: d_state_interval(),
            warn_every: d_warn_every(),
            outbox_alert_percent: d_alert_percent(),
            outbox_alert_age: d_alert_age(),
            alert_every: d_alert_every(),
        }
    }
}

impl RawHealthConfig {
    /// The validated section (after [`Self::validate`] passed).
    pub fn validated(self) -> HealthConfig {
        HealthConfig {
            listen: self.listen.and_then(|l| l.get_ref().parse().ok()),
            state_file: self.state_file,
            state_interval: self.state_interval.into_inner().0,
            warn_every: self.warn_every.0,
            outbox_alert_percent: self.outbox_alert_percent.into_inner(),
            outbox_alert_age: self.outbox_alert_age.0,
            alert_every: self.alert_every.0,
        }
    }

    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        if let Some(l) = &self.listen {
            match l.get_ref().parse::<SocketAddr>() {
                Err(_) => errors.push(file.error_at(
                    l.span(),
                    format!("[health] listen {:?} must be ip:port, e.g. \"127.0.0.1:9101\"", l.get_ref()),
                )),
                Ok(a) if !a.ip().is_loopback() && !self.allow_remote => errors.push(file.error_at(
                    l.span(),
                    format!("[health] listen {a} is not a loopback address: set allow_remote = true to serve it there"),
                )),
                Ok(_) => {}
            }
        }
        let interval = self.state_interval.get_ref().0;
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval) {
            errors.push(
                file.error_at(self.state_interval.span(), "[health] state_interval must be between 100ms and 60s"),
            );
        }
        if !(1..=100).contains(self.outbox_alert_percent.get_ref()) {
            errors.push(
                file.error_at(
                    self.outbox_alert_percent.span(),
                    "[health] outbox_alert_percent must be between 1 and 100",
                ),
            );
        }
    }
}
/// `[uplink]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplinkConfig {
    /// `mqtts://host:8883` (TLS) or `mqtt://127.0.0.1:1883` (plaintext, loopback only unless `insecure`).
    pub broker: Spanned<String>,
    /// Allows plaintext to a non-loopback broker and TLS without a client certificate.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca: Option<PathBuf>,
    /// PEM file with this gateway's client certificate (chain).
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Spanned<Secret>>,
    /// MQTT client id; default `shiftlens-{site}-{gateway}`.
    pub client_id: Option<String>,
    #[serde(default = "d_keep_alive")]
    pub keep_alive: HumanDuration,
    /// Most events in one batch (1-10000).
    #[serde(default = "d_batch_events")]
    pub batch_events: Spanned<usize>,
    /// Most stored bytes in one batch (at most 512KiB).
    #[serde(default = "d_batch_bytes")]
    pub batch_bytes: Spanned<ByteSize>,
    /// Full batches' worth of events published and not yet confirmed by the collector (1-64): the window
    /// holds up to `inflight_batches × batch_events` unconfirmed events.
    #[serde(default = "d_inflight")]
    pub inflight_batches: Spanned<usize>,
    /// Unconfirmed events are sent again after this long.
    #[serde(default = "d_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// Interval of the retained status heartbeat.
    #[serde(default = "d_heartbeat")]
    pub heartbeat: HumanDuration,
    /// First reconnect delay; doubled on each failure up to `reconnect_max`, with jitter.
    #[serde(default = "d_reconnect_min")]
    pub reconnect_min: HumanDuration,
    #[serde(default = "d_reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// `native` (ShiftLens batches, collector-confirmed delete; the default) or `sparkplug` (Sparkplug B v1.0).
    #[serde(default = "crate::uplink::sparkplug::default_protocol")]
    pub protocol: Spanned<crate::uplink::sparkplug::Protocol>,
    /// `[uplink.sparkplug]`: group id and primary host, for `protocol = "sparkplug"`.
    pub sparkplug: Option<Spanned<crate::uplink::sparkplug::RawSparkplugConfig>>,
    /// `dictionary` (batch version 3, a few bytes a change; the default) or `plain` (version 2, for a
    /// collector that reads only versions 1 and 2). Native protocol only.
    #[serde(default = "crate::uplink::default_encoding")]
    pub encoding: Spanned<crate::uplink::Encoding>,
}

fn d_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn d_batch_events() -> Spanned<usize> {
    Spanned::new(0..0, 1000)
}
fn d_batch_bytes() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(256 << 10))
}
fn d_inflight() -> Spanned<usize> {
    Spanned::new(0..0, 8)
}
fn d_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn d_heartbeat() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn d_reconnect_min() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn d_reconnect_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl RawUplinkConfig {
    /// The parsed broker address.
    ///
    /// # Errors
    /// See [`Broker::parse`].
    pub fn broker(&self) -> Result<Broker, String> {
        Broker::parse(self.broker.get_ref())
    }

    /// The validated section (after [`Self::validate`] passed).
    pub fn validated(self) -> UplinkConfig {
        UplinkConfig {
            broker: self.broker.into_inner(),
            insecure: self.insecure,
            ca: self.ca,
            cert: self.cert,
            key: self.key,
            username: self.username,
            password: self.password.map(Spanned::into_inner),
            client_id: self.client_id,
            keep_alive: self.keep_alive.0,
            batch_events: self.batch_events.into_inner(),
            batch_bytes: self.batch_bytes.into_inner().0,
            inflight_batches: self.inflight_batches.into_inner(),
            ack_timeout: self.ack_timeout.0,
            heartbeat: self.heartbeat.0,
            reconnect_min: self.reconnect_min.0,
            reconnect_max: self.reconnect_max.0,
            protocol: self.protocol.into_inner(),
            sparkplug: self.sparkplug.map(|s| s.into_inner().validated()),
            encoding: self.encoding.into_inner(),
        }
    }

    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let at = |span, msg: String| file.error_at(span, msg);
        let span = self.broker.span();
        let insecure = self.insecure;
        match self.broker() {
            Err(e) => errors.push(at(span.clone(), e)),
            Ok(b) if !b.tls && !b.is_loopback() && !insecure => errors.push(at(
                span.clone(),
                format!(
                    "plaintext MQTT to {} is refused: use mqtts:// with ca, cert and key, or set insecure = true",
                    b.host
                ),
            )),
            Ok(b) if b.tls => {
                if self.ca.is_none() {
                    errors.push(at(span.clone(), "mqtts:// needs `ca` (PEM file of the broker's CA)".into()));
                }
                if self.cert.is_some() != self.key.is_some() {
                    errors.push(at(span.clone(), "`cert` and `key` must be given together".into()));
                } else if self.cert.is_none() && !insecure {
                    errors.push(at(
                        span.clone(),
                        "mqtts:// needs a client certificate (`cert` and `key`), or insecure = true".into(),
                    ));
                }
            }
            Ok(_) => {}
        }
        if let Some(p) = &self.password {
            if self.username.is_none() {
                errors.push(at(p.span(), "`password` needs `username`".into()));
            }
        }
        if !(1..=10_000).contains(self.batch_events.get_ref()) {
            errors.push(at(self.batch_events.span(), "batch_events must be between 1 and 10000".into()));
        }
        if !(1024..=512 << 10).contains(&self.batch_bytes.get_ref().0) {
            errors.push(at(self.batch_bytes.span(), "batch_bytes must be between 1KiB and 512KiB".into()));
        }
        if !(1..=64).contains(self.inflight_batches.get_ref()) {
            errors.push(at(self.inflight_batches.span(), "inflight_batches must be between 1 and 64".into()));
        }
        let encoding = &self.encoding;
        if *self.protocol.get_ref() == crate::uplink::sparkplug::Protocol::Sparkplug && encoding.span() != (0..0) {
            errors.push(at(
                encoding.span(),
                "encoding applies to protocol = \"native\" only (Sparkplug has its own)".into(),
            ));
        }
        crate::uplink::sparkplug::validate(self, file, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        #[derive(Deserialize)]
        struct T {
            uplink: RawUplinkConfig,
        }
        let file = ConfigFile::from_text("agent.toml", text);
        let t: T = file.parse().unwrap();
        let mut errors = Vec::new();
        t.uplink.validate(&file, &mut errors);
        let mut v: Vec<String> = errors.iter().map(ToString::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn plaintext_off_host_is_refused_with_its_location() {
        let e = check("[uplink]\nbroker = \"mqtt://10.1.2.3\"\n");
        assert_eq!(e, ["agent.toml:2:10: plaintext MQTT to 10.1.2.3 is refused: use mqtts:// with ca, cert and key, or set insecure = true"]);
        assert!(check("[uplink]\nbroker = \"mqtt://10.1.2.3\"\ninsecure = true\n").is_empty());
        assert!(check("[uplink]\nbroker = \"mqtt://127.0.0.1:1884\"\n").is_empty());
    }

    #[test]
    fn tls_needs_a_ca_and_a_client_certificate() {
        let e = check("[uplink]\nbroker = \"mqtts://b\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        let e = check("[uplink]\nbroker = \"mqtts://b\"\nca = \"ca.pem\"\ncert = \"c.pem\"\n");
        assert!(e[0].contains("`cert` and `key` must be given together"), "{e:?}");
        assert!(
            check("[uplink]\nbroker = \"mqtts://b\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n").is_empty()
        );
        assert!(check("[uplink]\nbroker = \"mqtts://b\"\nca = \"ca.pem\"\ninsecure = true\n").is_empty());
    }

    #[test]
    fn limits_and_password_are_checked_and_the_password_is_not_shown() {
        let e = check("[uplink]\nbroker = \"mqtt://localhost\"\nbatch_events = 0\npassword = \"hunter2\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("agent.toml:3:16: batch_events"), "{e:?}");
        assert!(e[1].starts_with("agent.toml:4:12: `password` needs `username`"), "{e:?}");
        let file = ConfigFile::from_text(
            "a.toml",
            "broker = \"mqtt://localhost\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        );
        let c: RawUplinkConfig = file.parse().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn encoding_is_dictionary_or_plain_and_native_only() {
        let parse = |text: &str| {
            let file = ConfigFile::from_text("agent.toml", text);
            file.parse::<RawUplinkConfig>().map(|c| c.validated().encoding).map_err(|e| e.to_string())
        };
        assert_eq!(parse("broker = \"mqtt://localhost\"\n"), Ok(crate::uplink::Encoding::Dictionary));
        assert_eq!(parse("broker = \"mqtt://localhost\"\nencoding = \"plain\"\n"), Ok(crate::uplink::Encoding::Plain));
        let e = parse("broker = \"mqtt://localhost\"\nencoding = \"zip\"\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:12") && e.contains("dictionary") && e.contains("plain"), "{e}");
        let e = check("[uplink]\nbroker = \"mqtt://localhost\"\nprotocol = \"sparkplug\"\nencoding = \"plain\"\n");
        assert_eq!(e, ["agent.toml:4:12: encoding applies to protocol = \"native\" only (Sparkplug has its own)"]);
    }

    #[test]
    fn health_config_is_checked_with_locations() {
        let check = |text: &str| {
            let file = ConfigFile::from_text("agent.toml", text);
            let c: RawHealthConfig = file.parse().unwrap_or_else(|e| panic!("{e}"));
            let mut errors = Vec::new();
            c.validate(&file, &mut errors);
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(check("").is_empty());
        assert!(check("listen = \"127.0.0.1:9101\"").is_empty());
        assert!(check("listen = \"[::1]:9101\"").is_empty());
        assert!(check("listen = \"0.0.0.0:9101\"\nallow_remote = true").is_empty());
        assert_eq!(
            check("listen = \"0.0.0.0:9101\""),
            ["agent.toml:1:10: [health] listen 0.0.0.0:9101 is not a loopback address: set allow_remote = true to serve it there"]
        );
        assert_eq!(check("listen = \"localhost\"").len(), 1);
        let e = check("state_interval = \"10ms\"\noutbox_alert_percent = 0");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("agent.toml:1:18: [health] state_interval"), "{e:?}");
        assert!(e[1].starts_with("agent.toml:2:24: [health] outbox_alert_percent"), "{e:?}");
        let d = HealthConfig::default();
        assert_eq!((d.listen_addr(), d.outbox_alert_percent), (None, 80));
    }
}
