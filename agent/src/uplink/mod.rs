//! MQTT uplink: outbox → batches → publish → collector acks → delete.
//!
//! The database, not the MQTT client, holds what is unsent: the uplink reads batches from the outbox in seq
//! order, keeps a bounded window of batches awaiting the collector's ack ([`window`]), deletes rows only when
//! an ack names them, and goes back to the oldest unconfirmed event after an ack timeout or a reconnect. The
//! broker's PubAck only paces publishing.
//!
//! Security: `mqtts://` needs a CA and (unless `insecure = true`) a client certificate and key; plaintext
//! `mqtt://` is accepted only to a loopback host or with `insecure = true`. The password is never logged.

pub mod failure;
pub mod mqtt;
pub mod sparkplug;
pub mod window;

use serde::Deserialize;
use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, HumanDuration, Spanned};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[uplink]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `native` (ShiftLens batches, collector-confirmed delete; the default) or `sparkplug` (Sparkplug B v1.0).
    #[serde(default = "sparkplug::default_protocol")]
    pub protocol: Spanned<sparkplug::Protocol>,
    /// `[uplink.sparkplug]`: group id and primary host, for `protocol = "sparkplug"`.
    pub sparkplug: Option<Spanned<sparkplug::SparkplugConfig>>,
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

/// A password: shown as `***` in debug output and logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 in brackets).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("broker {url:?} must start with mqtts:// (TLS) or mqtt:// (plaintext)"));
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| format!("broker {url:?}: missing ']'"))?;
            (h, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(format!("broker {url:?}: expected scheme://host[:port] with nothing after the port"));
        }
        let port = match port {
            None => default_port,
            Some(p) => {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("broker {url:?}: bad port {p:?}"))?
            }
        };
        Ok(Self { tls, host: host.to_string(), port })
    }

    /// `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl UplinkConfig {
    /// A config for `broker` with the defaults otherwise (plaintext, so loopback only).
    pub fn plain(broker: &str) -> Self {
        Self {
            protocol: Spanned::new(0..0, sparkplug::Protocol::Native),
            sparkplug: None,
            broker: Spanned::new(0..0, broker.to_string()),
            insecure: false,
            ca: None,
            cert: None,
            key: None,
            username: None,
            password: None,
            client_id: None,
            keep_alive: d_keep_alive(),
            batch_events: d_batch_events(),
            batch_bytes: d_batch_bytes(),
            inflight_batches: d_inflight(),
            ack_timeout: d_ack_timeout(),
            heartbeat: d_heartbeat(),
            reconnect_min: d_reconnect_min(),
            reconnect_max: d_reconnect_max(),
        }
    }

    /// The parsed broker address (valid after [`Self::validate`] passed).
    ///
    /// # Errors
    /// See [`Broker::parse`].
    pub fn broker(&self) -> Result<Broker, String> {
        Broker::parse(self.broker.get_ref())
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
        sparkplug::validate(self, file, errors);
    }
}

/// Reconnect delays: doubling from `min` to `max`, each drawn uniformly from its upper half (jitter), so
/// gateways that lost the same broker do not return in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay, given a random fraction in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        #[derive(Deserialize)]
        struct T {
            uplink: UplinkConfig,
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
    fn broker_urls_parse() {
        let b = Broker::parse("mqtts://broker.plant:8884").unwrap();
        assert_eq!(b, Broker { tls: true, host: "broker.plant".into(), port: 8884 });
        assert_eq!(Broker::parse("mqtt://127.0.0.1").unwrap().port, 1883);
        assert!(Broker::parse("mqtt://[::1]:1884").unwrap().is_loopback());
        assert!(Broker::parse("mqtt://localhost").unwrap().is_loopback());
        assert!(!Broker::parse("mqtt://10.0.0.1").unwrap().is_loopback());
        for bad in ["tcp://x", "mqtt://", "mqtt://h:0", "mqtt://h:99999", "mqtt://h:1/path", "mqtts://[::1"] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
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
        let c: UplinkConfig = file.parse().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ds: Vec<u64> = (0..6).map(|_| b.next_delay(1.0).as_millis() as u64).collect();
        assert_eq!(ds, [1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.next_delay(0.0), Duration::from_secs(4));
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(750));
    }
}
