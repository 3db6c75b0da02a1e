//! The MQTT broker: embedded (default) or external.
//!
//! **Embedded**: rumqttd runs on a dedicated std thread (its `Broker::start` blocks and has no shutdown),
//! listening in plaintext on a private loopback port that requires a per-start random username and
//! password known only to this process (the gate), so no other local user
//! can publish or read there. Gateways never reach that port: they connect to the *gate*, a small TLS front
//! on the configured `listen` address that
//! - has a connection budget of its own ([`GateLimits`], apart from HTTP's): at most `max_connections`
//!   clients, of which at most `max_handshakes` not yet authenticated, each with `handshake_timeout` for its
//!   TLS handshake and CONNECT; one more is closed at once, so half-open floods never cut connected gateways,
//! - requires a client certificate issued by the configured CA (no certificate or another CA: the TLS
//!   handshake fails),
//! - takes the gateway identity (site, gateway) from the certificate: the subject CN is the gateway id,
//!   the site is a SAN URI `urn:shiftlens:site:{site}` or else the subject OU (a certificate naming no
//!   site is refused, unless `legacy_site` says which site such certificates belong to),
//! - requires the MQTT client id to equal the CN, and connects to rumqttd as `{site}.{gateway}` with the
//!   secret login (so the same gateway id in two sites are two sessions, and no gateway can take over
//!   another's session),
//! - lets a client publish only `shiftlens/v1/{site}/{gateway}/events|status` of its own site and
//!   gateway, set only its own status topic as last will, and subscribe only to its own
//!   `shiftlens/v1/{site}/{gateway}/ack`.
//!
//! The collector itself does not use a socket to rumqttd: it subscribes and publishes acks and feed
//! records through rumqttd's in-process link ([`LocalLink`]). rumqttd 0.20 cannot set TCP_NODELAY on the
//! sockets it accepts, and a TCP subscriber that also publishes acks waits for Nagle's algorithm on
//! every message (about 40 ms, see PITFALLS.md); the gate sets TCP_NODELAY on all of its own sockets.
//!
//! The gate forwards the MQTT byte stream unchanged after the CONNECT. Identities listed in
//! `feed_readers` (central IT, by CN) may only subscribe to the downtime feed and need no site. A violation
//! closes the connection; a refused publish is reported as a dead letter. rumqttd itself cannot tie a
//! message to the certificate that sent it, which is why the gate exists. Without `[broker.tls]` the gate
//! listens in plaintext, which is allowed only on a loopback address or with `insecure = true`; the
//! identity is then the MQTT client id, `{site}.{gateway}` (that site only) or `{gateway}` (any site).
//! MQTT 3.1.1 only.
//!
//! **External**: the collector connects to Mosquitto (or a cluster) with its own client certificate and
//! subscribes through the shared subscription group `$share/{share_group}/...`; the external broker must
//! enforce per-gateway topics itself (Mosquitto: `use_identity_as_username true` and
//! `pattern write shiftlens/v1/+/%u/#`), see docs/feed.md.

use crate::fairness::LogLimiter;
use crate::store::events::DeadLetter;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use serde::Deserialize;
use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::topic::{ALL_EVENTS, ALL_STATUS};
use shiftlens_common::{GatewayId, SiteId, Topic};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::rustls;

/// The largest `[broker] max_connections`: each gate connection holds three descriptors (the client's, the
/// link to rumqttd and rumqttd's end of it), so this many fit under the shipped unit's `LimitNOFILE=65536`
/// with room for HTTP and the store.
pub const MAX_GATE_CONNECTIONS: usize = 20_000;

/// `[broker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
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

impl Default for BrokerConfig {
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

impl BrokerConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
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
    }

    /// The gate's connection budget (`max_handshakes` at most `max_connections`).
    pub fn gate_limits(&self) -> GateLimits {
        let max_connections = *self.max_connections.get_ref();
        GateLimits {
            max_connections,
            max_handshakes: (*self.max_handshakes.get_ref()).min(max_connections),
            handshake_timeout: self.handshake_timeout.get_ref().0,
        }
    }

    pub fn max_packet_bytes(&self) -> usize {
        usize::try_from(self.max_packet.0).unwrap_or(usize::MAX)
    }

    /// Topic filters the collector subscribes to.
    pub fn filters(&self) -> Vec<String> {
        match self.mode {
            Mode::Embedded => vec![ALL_EVENTS.to_string(), ALL_STATUS.to_string()],
            Mode::External if self.sites.is_empty() => {
                [ALL_EVENTS, ALL_STATUS].iter().map(|f| format!("$share/{}/{f}", self.share_group)).collect()
            }
            Mode::External => self
                .sites
                .iter()
                .flat_map(|site| {
                    ["events", "status"]
                        .map(|kind| format!("$share/{}/shiftlens/v1/{}/+/{kind}", self.share_group, site.get_ref()))
                })
                .collect(),
        }
    }
}

/// Why the broker or a TLS setup could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("the embedded MQTT broker did not start: {0}")]
    Start(String),
    #[error("bad broker address: {0}")]
    Address(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BrokerError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |what: String| BrokerError::Pem { path: path.to_path_buf(), what };
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .collect();
    let certs = certs.map_err(|e| bad(format!("bad certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, BrokerError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path)
        .map_err(|e| BrokerError::Pem { path: path.to_path_buf(), what: format!("no usable private key: {e}") })
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, BrokerError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| BrokerError::Pem { path: ca.to_path_buf(), what: format!("bad CA: {e}") })?;
    }
    Ok(roots)
}

/// A TLS server config that requires a client certificate signed by `files.ca`.
///
/// # Errors
/// Unreadable or invalid PEM files.
pub fn server_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, BrokerError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider())
        .build()
        .map_err(|e| BrokerError::Verifier(e.to_string()))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?)?)
}

/// A TLS client config that trusts `ca` and presents `cert`/`key` (used for an external broker, and by
/// agents-in-tests).
///
/// # Errors
/// Unreadable or invalid PEM files.
pub fn client_tls(files: &TlsFiles) -> Result<rustls::ClientConfig, BrokerError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(read_certs(&files.cert)?, read_key(&files.key)?)?)
}

/// The collector's MQTT client options for an external broker (with the embedded broker the collector
/// uses its [`LocalLink`] instead).
///
/// # Errors
/// Unreadable TLS files.
pub fn client_options(config: &BrokerConfig) -> Result<rumqttc::MqttOptions, BrokerError> {
    let host = config.host.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default();
    let mut opts = rumqttc::MqttOptions::new(config.client_id.clone(), host, config.port);
    opts.set_clean_session(false);
    if let Some(files) = &config.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(
            client_tls(files)?,
        ))));
    }
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(config.max_packet_bytes() + 4096, config.max_packet_bytes() + 4096);
    opts.set_inflight(100);
    Ok(opts)
}

/// Network options for an MQTT event loop: TCP_NODELAY (without it a QoS 1 subscriber of rumqttd gets a
/// few thousand messages a second instead of a hundred thousand, see PITFALLS.md).
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net
}

/// The username of the embedded broker's private port; its password is random per start.
const INTERNAL_USER: &str = "shiftlens";

/// The collector's own connection to the embedded broker: rumqttd's in-process link (no socket). It
/// subscribes at QoS 0 (nothing is lost between two threads of one process) and publishes at QoS 0;
/// rumqttd delivers at the subscriber's QoS, so gateways still get their acks at QoS 1.
pub struct LocalLink {
    pub tx: rumqttd::local::LinkTx,
    pub rx: rumqttd::local::LinkRx,
}

/// A running embedded broker.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Where gateways connect (the gate), with the port really bound.
    pub listen: SocketAddr,
    /// The login to `internal` (for the Sparkplug host application's own client); not shown by `Debug`.
    secret: InternalSecret,
    /// rumqttd's private loopback port, for the gate (it requires a per-start random login known only to
    /// the gate).
    pub internal: SocketAddr,
}

#[derive(Clone)]
struct InternalSecret(Arc<str>);

impl std::fmt::Debug for InternalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Embedded {
    /// MQTT options for an in-process client of rumqttd's private port, logged in with the per-start secret
    /// (the Sparkplug host application, which needs a retained STATE and a last will).
    pub fn internal_client(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, self.internal.ip().to_string(), self.internal.port());
        o.set_credentials(INTERNAL_USER, self.secret.0.as_ref());
        o
    }
}

/// Starts rumqttd on a private loopback port and the gate on `config.listen`.
///
/// # Errors
/// Bad TLS files, an address that cannot be bound, or rumqttd not coming up.
pub async fn start_embedded(
    config: &BrokerConfig,
    rejected: mpsc::Sender<DeadLetter>,
) -> Result<(Embedded, LocalLink), BrokerError> {
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(files)?))),
        None => None,
    };
    let listen_s = config.listen.get_ref().clone();
    let addr: SocketAddr = listen_s
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BrokerError::Address(listen_s.clone()))?;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| BrokerError::Listen { addr: listen_s.clone(), source })?;
    let listen = listener.local_addr().map_err(|source| BrokerError::Listen { addr: listen_s, source })?;
    let secret: Arc<str> = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()).into();
    let (internal, link) =
        start_rumqttd(config.max_packet_bytes() + 4096, config.gate_limits().max_connections + 64, &secret).await?;
    let gate = Arc::new(Gate {
        readers: config.feed_readers.clone(),
        legacy_site: config.legacy_site.as_ref().and_then(|s| SiteId::parse(s.get_ref().clone()).ok()),
        internal,
        secret: secret.clone(),
        max: config.max_packet_bytes(),
        limits: config.gate_limits(),
        logs: std::sync::Mutex::new(LogLimiter::new(LOG_EVERY, LOG_PEERS)),
    });
    tokio::spawn(accept(listener, tls, gate, rejected));
    tracing::info!(%listen, tls = config.tls.is_some(), "embedded MQTT broker listening");
    Ok((Embedded { listen, internal, secret: InternalSecret(secret) }, link))
}

/// One WARN per client address per this long for refused gate connections (with a count of those held back).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Client addresses the gate's log limiter tracks; beyond that they share one line.
const LOG_PEERS: usize = 1024;

/// Accepts gate connections within the budget: at most `max_connections` at once and, of those, at most
/// `max_handshakes` not yet authenticated, each of which has `handshake_timeout` to finish its TLS handshake
/// and send a valid CONNECT. A connection beyond either cap is closed at once, so a flood of half-open
/// connections costs a descriptor for a moment and never the place of a connected gateway.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gate: Arc<Gate>,
    rejected: mpsc::Sender<DeadLetter>,
) {
    let limits = gate.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    let (mut refused, mut failed): (u64, u64) = (0, 0);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait a little, never spin, and log
                // at 1, 2, 4, 8, ... failures so that a long shortage does not flood the log.
                failed += 1;
                if failed.is_power_of_two() {
                    tracing::warn!(error = %e, failed, "MQTT gate accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permits = handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| "max_handshakes")
            .and_then(|h| slots.clone().try_acquire_owned().map(|s| (s, h)).map_err(|_| "max_connections"));
        let (slot, handshake) = match permits {
            Ok(p) => p,
            Err(cap) => {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        %peer,
                        refused,
                        max_connections = limits.max_connections,
                        max_handshakes = limits.max_handshakes,
                        "MQTT gate connection refused: too many connections ([broker] {cap})"
                    );
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, rejected, gate) = (tls.clone(), rejected.clone(), gate.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + limits.handshake_timeout;
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let der = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                        match der
                            .ok_or_else(|| "no client certificate".to_string())
                            .and_then(|der| cert_identity(der, gate.legacy_site.as_ref()))
                        {
                            Ok(id) => gate.run(s, Some(id), handshake, deadline, &rejected).await,
                            Err(why) => Err(GateError::Refused(why)),
                        }
                    }
                    Ok(Err(e)) => Err(GateError::Refused(format!("TLS handshake failed: {e}"))),
                    Err(_) => Err(GateError::Refused(format!(
                        "TLS handshake not done within {:?} ([broker] handshake_timeout)",
                        limits.handshake_timeout
                    ))),
                },
                None => gate.run(stream, None, handshake, deadline, &rejected).await,
            };
            match result {
                Ok(()) => tracing::debug!(%peer, "gateway connection closed"),
                Err(e) => {
                    let allowed = match gate.logs.lock() {
                        Ok(mut l) => l.check(peer.ip(), std::time::Instant::now()),
                        Err(_) => Some(0),
                    };
                    if let Some(suppressed) = allowed {
                        tracing::warn!(%peer, error = %e, suppressed, "gateway connection refused or closed");
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn start_rumqttd(
    max_payload: usize,
    max_connections: usize,
    secret: &str,
) -> Result<(SocketAddr, LocalLink), BrokerError> {
    use std::collections::HashMap;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BrokerError::Start(e.to_string()))?;
    let internal = probe.local_addr().map_err(|e| BrokerError::Start(e.to_string()))?;
    drop(probe);
    let server = rumqttd::ServerSettings {
        name: "internal".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 0,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 500,
            // Every connection must log in with the per-start secret: other local users cannot publish or
            // read on this port.
            auth: Some(HashMap::from([(INTERNAL_USER.to_string(), secret.to_string())])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections,
            max_outgoing_packet_count: 1000,
            max_segment_size: 64 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("internal".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let (link_tx, link_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            // The link is made before the listener starts: the collector is the broker's first client.
            let link = broker.link(&format!("collector:{}", rand::random::<u32>()));
            let _ = link_tx.send(link.map(|(tx, rx)| LocalLink { tx, rx }).map_err(|e| e.to_string()));
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let link = link_rx
        .await
        .map_err(|_| BrokerError::Start("rumqttd stopped before its in-process link was made".into()))?
        .map_err(|e| BrokerError::Start(format!("in-process link: {e}")))?;
    // rumqttd logs an ERROR for this probe (and for every connection that ends): the default log filter
    // turns its target off (main.rs), the gate logs what matters.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(internal).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(BrokerError::Start(format!("nothing listens on {internal}")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((internal, link))
}

/// Prefix of the SAN URI that names a gateway certificate's site.
pub const SITE_URI: &str = "urn:shiftlens:site:";

/// Who a client is: its gateway id (or feed reader name) and, when bound to one, its site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    id: GatewayId,
    site: Option<SiteId>,
}

impl Identity {
    /// The client id towards rumqttd, which keys sessions by it: one namespace per site, and none that a
    /// gateway, a feed reader or the collector could share (`:` and `.` are not allowed in ids).
    fn upstream_client_id(&self, reader: bool) -> String {
        match (&self.site, reader) {
            (_, true) => format!("feed:{}", self.id),
            (Some(site), false) => format!("{site}.{}", self.id),
            (None, false) => format!(".{}", self.id),
        }
    }

    fn owns(&self, site: &SiteId, gateway: &GatewayId) -> bool {
        &self.id == gateway && self.site.as_ref().is_none_or(|s| s == site)
    }
}

/// The identity a client certificate names: the subject CN is the gateway id; the site is a SAN URI
/// `urn:shiftlens:site:{site}` or else the (single) subject OU, or `legacy` when it names none.
fn cert_identity(der: &[u8], legacy: Option<&SiteId>) -> Result<Identity, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("client certificate has no subject CN")?;
    let id = GatewayId::parse(cn).map_err(|e| format!("client certificate CN is not a gateway id: {e}"))?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = name {
                uris.extend(u.strip_prefix(SITE_URI));
            }
        }
    }
    let ous: Vec<&str> = cert.subject().iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect();
    let named = match (uris.as_slice(), ous.as_slice()) {
        ([site], _) | ([], [site]) => Some(*site),
        ([], []) => None,
        ([], _) => {
            return Err(format!(
                "client certificate {cn} has several subject OUs: name its site with a SAN URI {SITE_URI}<site>"
            ))
        }
        _ => return Err(format!("client certificate {cn} has several SAN URIs {SITE_URI}...")),
    };
    let site = match named {
        Some(s) => {
            Some(SiteId::parse(s).map_err(|e| format!("client certificate {cn}: site {s:?} is not a site id: {e}"))?)
        }
        None => legacy.cloned(),
    };
    Ok(Identity { id, site })
}

/// How a plaintext client id names its identity: `{site}.{gateway}` or `{gateway}` (any site).
fn client_id_identity(client_id: &str) -> Result<Identity, String> {
    let err = |e: shiftlens_common::IdError| format!("client id {client_id:?}: {e}");
    match client_id.split_once('.') {
        Some((site, id)) => {
            Ok(Identity { id: GatewayId::parse(id).map_err(err)?, site: Some(SiteId::parse(site).map_err(err)?) })
        }
        None => Ok(Identity { id: GatewayId::parse(client_id).map_err(err)?, site: None }),
    }
}

#[derive(Debug, thiserror::Error)]
enum GateError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one whole MQTT frame (`None` at end of stream).
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, GateError> {
    loop {
        match rumqttc::mqttbytes::check(buf.iter(), max) {
            Ok(h) => return Ok(Some(buf.split_to(h.frame_length()))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(GateError::Refused(format!("bad MQTT frame: {e}"))),
        }
        if r.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn own_topic(topic: &str, who: &Identity, allow_events: bool) -> bool {
    match Topic::parse(topic) {
        Ok(Topic::Events { site, gateway }) => allow_events && who.owns(&site, &gateway),
        Ok(Topic::Status { site, gateway }) => who.owns(&site, &gateway),
        _ => crate::sparkplug::acl::edge_may_publish(topic, &who.id, who.site.as_ref()),
    }
}

/// What every gate connection shares.
struct Gate {
    readers: Vec<String>,
    legacy_site: Option<SiteId>,
    internal: SocketAddr,
    secret: Arc<str>,
    max: usize,
    limits: GateLimits,
    /// Refused connections: one WARN per client address per [`LOG_EVERY`].
    logs: std::sync::Mutex<LogLimiter<IpAddr>>,
}

impl Gate {
    /// Checks the CONNECT (due by `deadline`) against the identity, connects to rumqttd under the
    /// namespaced client id with the secret login, gives back the `handshake` place, then forwards frames
    /// both ways, checking every PUBLISH and SUBSCRIBE.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: S,
        cert: Option<Identity>,
        handshake: OwnedSemaphorePermit,
        deadline: Instant,
        rejected: &mpsc::Sender<DeadLetter>,
    ) -> Result<(), GateError> {
        let max = self.max;
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut buf = BytesMut::with_capacity(8192);
        let first = tokio::time::timeout_at(deadline, read_frame(&mut cr, &mut buf, max))
            .await
            .map_err(|_| {
                GateError::Refused(format!(
                    "no CONNECT within {:?} ([broker] handshake_timeout)",
                    self.limits.handshake_timeout
                ))
            })??
            .ok_or_else(|| GateError::Refused("closed before CONNECT".into()))?;
        let mut connect = match Packet::read(&mut first.clone(), max) {
            Ok(Packet::Connect(c)) => c,
            Ok(_) => return Err(GateError::Refused("first packet is not CONNECT".into())),
            Err(e) => return Err(GateError::Refused(format!("bad CONNECT: {e:?}"))),
        };
        let tls = cert.is_some();
        let who = match cert {
            Some(who) if who.id.as_str() == connect.client_id => who,
            Some(who) => {
                return Err(GateError::Refused(format!(
                    "client id {:?} is not the certificate's CN {}",
                    connect.client_id, who.id
                )))
            }
            None => client_id_identity(&connect.client_id).map_err(GateError::Refused)?,
        };
        let reader = self.readers.iter().any(|r| r == who.id.as_str());
        if tls && !reader && who.site.is_none() {
            return Err(GateError::Refused(format!(
                "the client certificate of gateway {} names no site: issue it with OU=<site> or a SAN URI \
                 {SITE_URI}<site> (docs/install.md), or set [broker] legacy_site",
                who.id
            )));
        }
        if let Some(w) = &connect.last_will {
            if reader || !own_topic(&w.topic, &who, false) {
                return Err(GateError::Refused(format!("gateway {} may not set a last will on {:?}", who.id, w.topic)));
            }
        }
        connect.client_id = who.upstream_client_id(reader);
        connect.login = Some(rumqttc::mqttbytes::v4::Login::new(INTERNAL_USER, self.secret.as_ref()));
        let mut login = BytesMut::new();
        connect.write(&mut login).map_err(|e| GateError::Refused(format!("bad CONNECT: {e:?}")))?;
        let upstream = TcpStream::connect(self.internal).await?;
        let _ = upstream.set_nodelay(true);
        let (mut ur, mut uw) = upstream.into_split();
        uw.write_all(&login).await?;
        drop(handshake);
        let id = &who.id;
        let down = async {
            let mut chunk = vec![0u8; 16 << 10];
            loop {
                let n = ur.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<(), GateError>(());
                }
                // rumqttd's sockets keep Nagle's algorithm on: its next small write (an ack after a PUBACK)
                // waits until this side ACKs what it sent, which a delayed ACK holds back for up to 40 ms.
                #[cfg(target_os = "linux")]
                let _ = ur.as_ref().set_quickack(true);
                cw.write_all(&chunk[..n]).await?;
                cw.flush().await?;
            }
        };
        let up = async {
            while let Some(frame) = read_frame(&mut cr, &mut buf, max).await? {
                match Packet::read(&mut frame.clone(), max) {
                    Ok(Packet::Publish(p)) if reader || !own_topic(&p.topic, &who, true) => {
                        let why = match &who.site {
                            Some(site) => format!("gateway {id} of site {site} may not publish on {:?}", p.topic),
                            None => format!("gateway {id} may not publish on {:?}", p.topic),
                        };
                        let now = chrono::Utc::now().timestamp_millis();
                        let _ = rejected.try_send(DeadLetter::new(&p.topic, now, "identity", why.clone(), &p.payload));
                        return Err(GateError::Refused(why));
                    }
                    Ok(Packet::Subscribe(s)) => {
                        for f in &s.filters {
                            let ok = match Topic::parse(&f.path) {
                                Ok(Topic::Ack { site, gateway }) => !reader && who.owns(&site, &gateway),
                                Ok(Topic::Downtime { .. }) => reader,
                                _ if reader => f.path == "shiftlens/v1/+/downtime",
                                _ => crate::sparkplug::acl::edge_may_subscribe(&f.path, &who.id, who.site.as_ref()),
                            };
                            if !ok {
                                return Err(GateError::Refused(format!(
                                    "gateway {id} may not subscribe to {:?}",
                                    f.path
                                )));
                            }
                        }
                    }
                    Ok(Packet::Connect(_)) => return Err(GateError::Refused("second CONNECT".into())),
                    Ok(_) => {}
                    Err(e) => return Err(GateError::Refused(format!("bad MQTT packet: {e:?}"))),
                }
                uw.write_all(&frame).await?;
            }
            Ok::<(), GateError>(())
        };
        tokio::select! {
            r = down => r,
            r = up => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, ous: &[&str], uris: &[&str]) -> Vec<u8> {
        let sans = uris.iter().map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap())).collect();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for ou in ous {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, *ou);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn who(id: &str, site: Option<&str>) -> Identity {
        Identity { id: GatewayId::parse(id).unwrap(), site: site.map(|s| SiteId::parse(s).unwrap()) }
    }

    #[test]
    fn a_certificate_names_its_site_by_san_uri_or_ou() {
        let legacy = SiteId::parse("old").unwrap();
        // (subject OUs, SAN URIs, legacy_site, the site or a part of the error)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a SiteId>, Result<Option<&'a str>, &'a str>);
        let cases: [Case; 7] = [
            (&["plant-a"], &[], None, Ok(Some("plant-a"))),
            (&[], &["urn:shiftlens:site:plant-b"], None, Ok(Some("plant-b"))),
            // The URI wins over an OU that is something else (a department).
            (&["Maintenance"], &["urn:shiftlens:site:plant-b"], None, Ok(Some("plant-b"))),
            (&[], &["https://example.com/x"], None, Ok(None)),
            (&[], &[], Some(&legacy), Ok(Some("old"))),
            (&["Plant A"], &[], None, Err("is not a site id")),
            (&[], &["urn:shiftlens:site:a", "urn:shiftlens:site:b"], None, Err("several SAN URIs")),
        ];
        for (ous, uris, legacy, want) in cases {
            let got = cert_identity(&cert("gw-1", ous, uris), legacy);
            match (got, want) {
                (Ok(i), Ok(site)) => assert_eq!(i, who("gw-1", site), "{ous:?} {uris:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{ous:?} {uris:?}: {e}"),
                (got, want) => panic!("{ous:?} {uris:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn legacy_site_is_checked_and_only_for_the_embedded_broker_with_tls() {
        let check = |text: &str| {
            let file = ConfigFile::from_text("c.toml", text.to_string());
            let config: crate::Config = file.parse().unwrap();
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
            let config: crate::Config = file.parse().unwrap();
            let mut errors = Vec::new();
            config.broker.validate(&file, &mut errors);
            (errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(), config.broker.gate_limits())
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

    #[test]
    fn topics_and_client_ids_belong_to_one_site_and_gateway() {
        let a = who("gw-1", Some("a"));
        assert!(own_topic("shiftlens/v1/a/gw-1/events", &a, true));
        assert!(!own_topic("shiftlens/v1/b/gw-1/events", &a, true));
        assert!(!own_topic("shiftlens/v1/a/gw-2/status", &a, true));
        assert!(!own_topic("shiftlens/v1/a/gw-1/events", &a, false));
        let any = who("gw-1", None);
        assert!(own_topic("shiftlens/v1/b/gw-1/status", &any, false));
        assert_eq!(client_id_identity("a.gw-1").unwrap(), a);
        assert_eq!(client_id_identity("gw-1").unwrap(), any);
        assert!(client_id_identity("a.b.gw-1").is_err());
        let ids = [a.upstream_client_id(false), who("gw-1", Some("b")).upstream_client_id(false)];
        assert_eq!(ids, ["a.gw-1", "b.gw-1"]);
        assert_ne!(any.upstream_client_id(false), any.upstream_client_id(true));
    }
}
