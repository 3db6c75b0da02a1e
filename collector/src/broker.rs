//! The MQTT broker: embedded (default) or external.
//!
//! **Embedded**: rumqttd runs on a dedicated std thread (its `Broker::start` blocks and has no shutdown),
//! listening in plaintext on a private loopback port. Gateways never reach that port: they connect to the
//! *gate*, a small TLS front on the configured `listen` address that
//! - requires a client certificate issued by the configured CA (no certificate or another CA: the TLS
//!   handshake fails),
//! - takes the gateway identity from the certificate's subject CN (a valid gateway id),
//! - requires the MQTT client id to equal that identity (so no gateway can take over another's session),
//! - lets a client publish only `shiftlens/v1/{site}/{identity}/events|status`, set only its own status
//!   topic as last will, and subscribe only to `shiftlens/v1/{site}/{identity}/ack`.
//!
//! The gate forwards the MQTT byte stream unchanged. Identities listed in `feed_readers` (central IT) may
//! only subscribe to the downtime feed. A violation closes the connection; a refused publish is
//! reported as a dead letter. rumqttd itself cannot tie a message to the certificate that sent it, which
//! is why the gate exists. Without `[broker.tls]` the gate listens in plaintext, which is allowed only on
//! a loopback address or with `insecure = true`; the identity is then the MQTT client id. MQTT 3.1.1 only.
//!
//! **External**: the collector connects to Mosquitto (or a cluster) with its own client certificate and
//! subscribes through the shared subscription group `$share/{share_group}/...`; the external broker must
//! enforce per-gateway topics itself (Mosquitto: `use_identity_as_username true` and
//! `pattern write shiftlens/v1/+/%u/#`), see docs/feed.md.

use crate::store::events::DeadLetter;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use serde::Deserialize;
use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, Spanned};
use shiftlens_common::topic::{ALL_EVENTS, ALL_STATUS};
use shiftlens_common::{GatewayId, SiteId, Topic};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

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
    /// Largest MQTT packet accepted (batches above the decode limit are dead-lettered, not dropped).
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
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
            max_packet: default_max_packet(),
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
        if GatewayId::parse(self.share_group.clone()).is_err() {
            errors.push(file.error_at(0..0, "share_group: allowed characters are a-z 0-9 _ -"));
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

/// The collector's own MQTT client options: the embedded broker's private port, or the external broker.
///
/// # Errors
/// Unreadable TLS files for an external broker.
pub fn client_options(
    config: &BrokerConfig,
    embedded: Option<SocketAddr>,
) -> Result<rumqttc::MqttOptions, BrokerError> {
    let mut opts = match embedded {
        Some(addr) => {
            let id = format!("shiftlens-collector-{}", rand::random::<u32>());
            rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port())
        }
        None => {
            let host = config.host.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default();
            let mut o = rumqttc::MqttOptions::new(config.client_id.clone(), host, config.port);
            o.set_clean_session(false);
            if let Some(files) = &config.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(
                    client_tls(files)?,
                ))));
            }
            o
        }
    };
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

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// Where gateways connect (the gate), with the port really bound.
    pub listen: SocketAddr,
    /// rumqttd's private loopback port, for the collector's own client.
    pub internal: SocketAddr,
}

/// Starts rumqttd on a private loopback port and the gate on `config.listen`.
///
/// # Errors
/// Bad TLS files, an address that cannot be bound, or rumqttd not coming up.
pub async fn start_embedded(
    config: &BrokerConfig,
    rejected: mpsc::Sender<DeadLetter>,
) -> Result<Embedded, BrokerError> {
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
    let internal = start_rumqttd(config.max_packet_bytes() + 4096).await?;
    let max = config.max_packet_bytes();
    let readers: Arc<Vec<String>> = Arc::new(config.feed_readers.clone());
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tls, rejected, readers) = (tls.clone(), rejected.clone(), readers.clone());
            tokio::spawn(async move {
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => match cert_identity(&s) {
                                Ok(id) => gate(s, Some(id), &readers, internal, max, &rejected).await,
                                Err(why) => Err(GateError::Refused(why)),
                            },
                            Ok(Err(e)) => Err(GateError::Refused(format!("TLS handshake failed: {e}"))),
                            Err(_) => Err(GateError::Refused("TLS handshake timed out".into())),
                        }
                    }
                    None => gate(stream, None, &readers, internal, max, &rejected).await,
                };
                match result {
                    Ok(()) => tracing::debug!(%peer, "gateway connection closed"),
                    Err(e) => tracing::warn!(%peer, error = %e, "gateway connection refused or closed"),
                }
            });
        }
    });
    tracing::info!(%listen, tls = config.tls.is_some(), "embedded MQTT broker listening");
    Ok(Embedded { listen, internal })
}

async fn start_rumqttd(max_payload: usize) -> Result<SocketAddr, BrokerError> {
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
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
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
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(internal).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(BrokerError::Start(format!("nothing listens on {internal}")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(internal)
}

fn cert_identity(s: &tokio_rustls::server::TlsStream<TcpStream>) -> Result<GatewayId, String> {
    let der = s.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no client certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("client certificate has no subject CN")?;
    GatewayId::parse(cn).map_err(|e| format!("client certificate CN is not a gateway id: {e}"))
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

fn own_topic(topic: &str, id: &GatewayId, allow_events: bool) -> bool {
    match Topic::parse(topic) {
        Ok(Topic::Events { gateway, .. }) => allow_events && &gateway == id,
        Ok(Topic::Status { gateway, .. }) => &gateway == id,
        _ => false,
    }
}

async fn gate<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    cert_id: Option<GatewayId>,
    readers: &[String],
    internal: SocketAddr,
    max: usize,
    rejected: &mpsc::Sender<DeadLetter>,
) -> Result<(), GateError> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut buf = BytesMut::with_capacity(8192);
    let first = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut cr, &mut buf, max))
        .await
        .map_err(|_| GateError::Refused("no CONNECT within 10 s".into()))??
        .ok_or_else(|| GateError::Refused("closed before CONNECT".into()))?;
    let id = match Packet::read(&mut first.clone(), max) {
        Ok(Packet::Connect(c)) => {
            let id = match cert_id {
                Some(id) if id.as_str() == c.client_id => id,
                Some(id) => {
                    return Err(GateError::Refused(format!(
                        "client id {:?} is not the certificate's CN {id}",
                        c.client_id
                    )))
                }
                None => GatewayId::parse(c.client_id.clone()).map_err(|e| GateError::Refused(e.to_string()))?,
            };
            if let Some(w) = &c.last_will {
                if !own_topic(&w.topic, &id, false) {
                    return Err(GateError::Refused(format!("gateway {id} may not set a last will on {:?}", w.topic)));
                }
            }
            id
        }
        Ok(_) => return Err(GateError::Refused("first packet is not CONNECT".into())),
        Err(e) => return Err(GateError::Refused(format!("bad CONNECT: {e:?}"))),
    };
    let reader = readers.iter().any(|r| r == id.as_str());
    let upstream = TcpStream::connect(internal).await?;
    let _ = upstream.set_nodelay(true);
    let (mut ur, mut uw) = upstream.into_split();
    uw.write_all(&first).await?;
    let down = async {
        tokio::io::copy(&mut ur, &mut cw).await?;
        Ok::<(), GateError>(())
    };
    let up = async {
        while let Some(frame) = read_frame(&mut cr, &mut buf, max).await? {
            match Packet::read(&mut frame.clone(), max) {
                Ok(Packet::Publish(p)) if reader || !own_topic(&p.topic, &id, true) => {
                    let why = format!("gateway {id} may not publish on {:?}", p.topic);
                    let now = chrono::Utc::now().timestamp_millis();
                    let _ = rejected.try_send(DeadLetter::new(&p.topic, now, "identity", why.clone(), &p.payload));
                    return Err(GateError::Refused(why));
                }
                Ok(Packet::Subscribe(s)) => {
                    for f in &s.filters {
                        let ok = match Topic::parse(&f.path) {
                            Ok(Topic::Ack { gateway, .. }) => !reader && gateway == id,
                            Ok(Topic::Downtime { .. }) => reader,
                            _ => reader && f.path == "shiftlens/v1/+/downtime",
                        };
                        if !ok {
                            return Err(GateError::Refused(format!("gateway {id} may not subscribe to {:?}", f.path)));
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
