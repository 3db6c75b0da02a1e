//! `[broker]`: where the broker runs (embedded or external), TLS files, feed readers, the gate's connection
//! budget, and the topic filters the collector subscribes to (built by `common::topic`).
//!
//! Two steps: [`RawBrokerConfig`] is the section as written (serde, spans); [`RawBrokerConfig::validate`]
//! checks it without I/O, names every problem with file:line:col, and gives the plain [`BrokerConfig`]
//! that runtime code reads.

use serde::Deserialize;
use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::{topic, GatewayId, SiteId};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The largest `[broker] max_connections`: each gate connection holds three descriptors (the client's, the
/// link to rumqttd and rumqttd's end of it), so this many fit under the shipped unit's `LimitNOFILE=65536`
/// with room for HTTP and the store.
pub const MAX_GATE_CONNECTIONS: usize = 20_000;

/// `[broker]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBrokerConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Embedded: where gateways connect.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// External: the broker's host and port.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// External: the collector's MQTT client id (persistent session).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// External: shared subscription group; each batch goes to one member (a standby collector can take
    /// over; see docs/operations.md on running several).
    #[serde(default = "default_share_group")]
    pub share_group: String,
    /// External: the sites this collector serves (all when empty), so collectors can split a plant's
    /// load by site while each store still sees every event of its assets.
    #[serde(default)]
    pub sites: Vec<Spanned<String>>,
    /// Embedded: the gate's certificate and the CA that signs gateway certificates. External: the CA
    /// that signed the broker's certificate and the collector's own client certificate.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Allow plaintext on a non-loopback address.
    #[serde(default)]
    pub insecure: bool,
    /// Embedded: identities (certificate CN, or client id in plaintext) of feed consumers such as central
    /// IT: they may only subscribe to `shiftlens/v1/+/downtime` (or one site's), never publish.
    #[serde(default)]
    pub feed_readers: Vec<String>,
    /// Embedded with TLS: the site of gateway certificates that name none (no SAN URI
    /// `urn:shiftlens:site:...`, no OU), for plants whose certificates predate the site field. Unset:
    /// such certificates are refused.
    #[serde(default)]
    pub legacy_site: Option<Spanned<String>>,
    /// Largest MQTT packet accepted (batches above the decode limit are dead-lettered, not dropped).
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    /// Embedded: concurrent connections at the gate (those still in their handshake included); one more is
    /// closed at once. Separate from `[http] max_connections`, so the dashboard cannot starve ingest.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// Embedded: of those, how many may be unauthenticated at once (TLS handshake and CONNECT not yet
    /// done), so a flood of half-open connections cannot use up the places of real gateways; at most
    /// `max_connections` (a larger value counts as `max_connections`).
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: Spanned<usize>,
    /// Embedded: the time a client has from its TCP connect to a valid CONNECT (TLS handshake included).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Spanned<HumanDuration>,
}

/// The gate's connection budget (`[broker] max_connections`, `max_handshakes`, `handshake_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self { max_connections: 4096, max_handshakes: 256, handshake_timeout: Duration::from_secs(10) }
    }
}

/// Where the broker runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Embedded,
    External,
}

/// PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:1883".to_string())
}
fn default_port() -> u16 {
    8883
}
fn default_client_id() -> String {
    "shiftlens-collector".into()
}
fn default_share_group() -> String {
    "shiftlens".into()
}
fn default_max_packet() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, GateLimits::default().max_connections)
}
fn default_max_handshakes() -> Spanned<usize> {
    Spanned::new(0..0, GateLimits::default().max_handshakes)
}
fn default_handshake_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(GateLimits::default().handshake_timeout))
}

impl Default for RawBrokerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Embedded,
            listen: default_listen(),
            host: None,
            port: default_port(),
            client_id: default_client_id(),
            share_group: default_share_group(),
            sites: Vec::new(),
            tls: None,
            insecure: false,
            feed_readers: Vec::new(),
            legacy_site: None,
            max_packet: default_max_packet(),
            max_connections: default_max_connections(),
            max_handshakes: default_max_handshakes(),
            handshake_timeout: default_handshake_timeout(),
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RawBrokerConfig {
    /// Checks the section, adding every problem to `errors`, and gives the validated config (its values
    /// where the section is wrong are not meant to be used: the caller refuses the file).
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> BrokerConfig {
        match self.mode {
            Mode::Embedded => match self.listen.get_ref().parse::<SocketAddr>() {
                Err(e) => errors.push(file.error_at(self.listen.span(), format!("listen: {e} (expected ip:port)"))),
                Ok(a) if self.tls.is_none() && !self.insecure && !a.ip().is_loopback() => errors.push(file.error_at(
                    self.listen.span(),
                    "plaintext MQTT on a non-loopback address: configure [broker.tls] or set insecure = true",
                )),
                Ok(_) => {}
            },
            Mode::External => match &self.host {
                None => errors.push(file.error_at(0..0, "[broker] mode = \"external\" needs host")),
                Some(h) if self.tls.is_none() && !self.insecure && !is_loopback_host(h.get_ref()) => {
                    errors.push(file.error_at(
                        h.span(),
                        "plaintext MQTT to a non-loopback broker: configure [broker.tls] or set insecure = true",
                    ))
                }
                Some(_) => {}
            },
        }
        for r in &self.feed_readers {
            if GatewayId::parse(r.clone()).is_err() {
                errors.push(file.error_at(0..0, format!("feed_readers: {r:?}: allowed characters are a-z 0-9 _ -")));
            }
        }
        for site in &self.sites {
            if SiteId::parse(site.get_ref().clone()).is_err() {
                errors.push(file.error_at(site.span(), "sites: allowed characters are a-z 0-9 _ -"));
            } else if self.mode == Mode::Embedded {
                errors.push(file.error_at(site.span(), "sites: only for mode = \"external\""));
            }
        }
        if let Some(site) = &self.legacy_site {
            if SiteId::parse(site.get_ref().clone()).is_err() {
                errors.push(file.error_at(site.span(), "legacy_site: allowed characters are a-z 0-9 _ -"));
            } else if self.mode == Mode::External || self.tls.is_none() {
                errors.push(file.error_at(site.span(), "legacy_site: only for mode = \"embedded\" with [broker.tls]"));
            }
        }
        if GatewayId::parse(self.share_group.clone()).is_err() {
            errors.push(file.error_at(0..0, "share_group: allowed characters are a-z 0-9 _ -"));
        }
        let (conns, handshakes) = (*self.max_connections.get_ref(), *self.max_handshakes.get_ref());
        if !(1..=MAX_GATE_CONNECTIONS).contains(&conns) {
            errors.push(file.error_at(
                self.max_connections.span(),
                format!("max_connections must be between 1 and {MAX_GATE_CONNECTIONS}"),
            ));
        }
        if !(1..=MAX_GATE_CONNECTIONS).contains(&handshakes) {
            errors.push(file.error_at(
                self.max_handshakes.span(),
                format!("max_handshakes must be between 1 and {MAX_GATE_CONNECTIONS}"),
            ));
        }
        let secs = self.handshake_timeout.get_ref().0.as_secs();
        if !(1..=300).contains(&secs) {
            errors.push(file.error_at(self.handshake_timeout.span(), "handshake_timeout must be between 1s and 300s"));
        }
        let max_connections = conns.clamp(1, MAX_GATE_CONNECTIONS);
        BrokerConfig {
            mode: self.mode,
            listen: self.listen.get_ref().parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1883))),
            host: self.host.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default(),
            port: self.port,
            client_id: self.client_id.clone(),
            share_group: self.share_group.clone(),
            sites: self.sites.iter().filter_map(|s| SiteId::parse(s.get_ref().clone()).ok()).collect(),
            tls: self.tls.clone(),
            feed_readers: self.feed_readers.clone(),
            legacy_site: self.legacy_site.as_ref().and_then(|s| SiteId::parse(s.get_ref().clone()).ok()),
            max_packet_bytes: usize::try_from(self.max_packet.0).unwrap_or(usize::MAX),
            gate: GateLimits {
                max_connections,
                max_handshakes: handshakes.clamp(1, MAX_GATE_CONNECTIONS).min(max_connections),
                handshake_timeout: self.handshake_timeout.get_ref().0,
            },
        }
    }
}

/// `[broker]`, validated: what the broker, ingest and topology read.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub mode: Mode,
    /// Embedded: where the gate listens.
    pub listen: SocketAddr,
    /// External: the broker's host (empty with the embedded broker) and port.
    pub host: String,
    pub port: u16,
    /// External: the collector's MQTT client id and shared subscription group.
    pub client_id: String,
    pub share_group: String,
    /// External: the sites this collector serves (all when empty).
    pub sites: Vec<SiteId>,
    pub tls: Option<TlsFiles>,
    /// Embedded: identities that may only read the downtime feed.
    pub feed_readers: Vec<String>,
    /// Embedded with TLS: the site of gateway certificates that name none.
    pub legacy_site: Option<SiteId>,
    /// Largest MQTT packet accepted.
    pub max_packet_bytes: usize,
    /// Embedded: the gate's connection budget (`max_handshakes` at most `max_connections`).
    pub gate: GateLimits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        RawBrokerConfig::default().validate(&ConfigFile::from_text("default", String::new()), &mut Vec::new())
    }
}

impl BrokerConfig {
    /// Topic filters the collector subscribes to.
    pub fn filters(&self) -> Vec<String> {
        match self.mode {
            Mode::Embedded => vec![topic::ALL_EVENTS.to_string(), topic::ALL_STATUS.to_string()],
            Mode::External if self.sites.is_empty() => {
                [topic::ALL_EVENTS, topic::ALL_STATUS].iter().map(|f| topic::shared(&self.share_group, f)).collect()
            }
            Mode::External => self
                .sites
                .iter()
                .flat_map(|site| [topic::site_events(site), topic::site_status(site)])
                .map(|f| topic::shared(&self.share_group, &f))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_site_is_checked_and_only_for_the_embedded_broker_with_tls() {
        let check = |text: &str| {
            let file = ConfigFile::from_text("c.toml", text.to_string());
            let config: crate::config::RawConfig = file.parse().unwrap();
            let mut errors = Vec::new();
            config.broker.validate(&file, &mut errors);
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        };
        let tls = "[broker.tls]\nca = \"ca.pem\"\ncert = \"b.pem\"\nkey = \"b.key\"\n";
        assert!(check(&format!("[broker]\nlegacy_site = \"plant-a\"\n{tls}")).is_empty());
        let bad = check(&format!("[broker]\nlegacy_site = \"Plant A\"\n{tls}"));
        assert_eq!(bad, ["c.toml:2:15: legacy_site: allowed characters are a-z 0-9 _ -"]);
        let plain = check("[broker]\nlegacy_site = \"plant-a\"\n");
        assert_eq!(plain, ["c.toml:2:15: legacy_site: only for mode = \"embedded\" with [broker.tls]"]);
    }

    #[test]
    fn the_gate_budget_is_range_checked_with_file_line_col() {
        let check = |text: &str| {
            let file = ConfigFile::from_text("c.toml", text.to_string());
            let config: crate::config::RawConfig = file.parse().unwrap();
            let mut errors = Vec::new();
            let broker = config.broker.validate(&file, &mut errors);
            (errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(), broker.gate)
        };
        let (errors, limits) = check("[broker]\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(limits, GateLimits::default());
        let (errors, limits) =
            check("[broker]\nmax_connections = 100\nmax_handshakes = 10\nhandshake_timeout = \"3s\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            limits,
            GateLimits { max_connections: 100, max_handshakes: 10, handshake_timeout: Duration::from_secs(3) }
        );
        let (errors, _) = check("[broker]\nmax_connections = 0\nmax_handshakes = 0\nhandshake_timeout = \"0s\"\n");
        assert_eq!(
            errors,
            [
                "c.toml:2:19: max_connections must be between 1 and 20000",
                "c.toml:3:18: max_handshakes must be between 1 and 20000",
                "c.toml:4:21: handshake_timeout must be between 1s and 300s",
            ]
        );
        let (errors, _) =
            check("[broker]\nmax_connections = 100000\nmax_handshakes = 200\nhandshake_timeout = \"1h\"\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("c.toml:2:19: max_connections must be between 1 and 20000"), "{errors:?}");
        assert!(errors[1].starts_with("c.toml:4:21: handshake_timeout"), "{errors:?}");
        // A max_handshakes above max_connections (the default 256 with a small max_connections) is capped.
        let (errors, limits) = check("[broker]\nmax_connections = 10\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((limits.max_connections, limits.max_handshakes), (10, 10));
    }
}
