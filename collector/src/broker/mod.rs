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
//!
//! Parts: [`config`] (`[broker]`), [`embedded`] (rumqttd and its in-process link), [`gate`] (the TLS front
//! and its proxy I/O), [`acl`] (the access policy, pure). This file holds the TLS setup and the client
//! options for an external broker.

pub mod acl;
pub mod config;
pub mod embedded;
pub mod gate;

pub use acl::SITE_URI;
pub use config::{BrokerConfig, GateLimits, Mode, RawBrokerConfig, TlsFiles, MAX_GATE_CONNECTIONS};
pub use embedded::{start_embedded, Embedded, GateTask, LocalLink};

use shiftlens_common::pem;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// Why the broker or a TLS setup could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Pem(#[from] shiftlens_common::pem::PemError),
    #[error("{}: bad CA: {source}", path.display())]
    Ca { path: PathBuf, source: rustls::Error },
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

fn roots(ca: &Path) -> Result<rustls::RootCertStore, BrokerError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certificates("CA file", ca)? {
        roots.add(c).map_err(|source| BrokerError::Ca { path: ca.to_path_buf(), source })?;
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
        .with_single_cert(pem::certificates("certificate", &files.cert)?, pem::private_key("key", &files.key)?)?)
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
        .with_client_auth_cert(pem::certificates("certificate", &files.cert)?, pem::private_key("key", &files.key)?)?)
}

/// The collector's MQTT client options for an external broker (with the embedded broker the collector
/// uses its [`LocalLink`] instead).
///
/// # Errors
/// Unreadable TLS files.
pub fn client_options(config: &BrokerConfig) -> Result<rumqttc::MqttOptions, BrokerError> {
    let mut opts = rumqttc::MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    opts.set_clean_session(false);
    if let Some(files) = &config.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(
            client_tls(files)?,
        ))));
    }
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(config.max_packet_bytes + 4096, config.max_packet_bytes + 4096);
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
