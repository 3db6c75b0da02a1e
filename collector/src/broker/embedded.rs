//! The embedded broker: rumqttd on a dedicated std thread (its `Broker::start` blocks and has no
//! shutdown), listening in plaintext on a private loopback port that requires a per-start random username
//! and password known only to this process, so no other local user can publish or read there. Gateways
//! never reach that port: they connect to the gate ([`super::gate`]) on `[broker] listen`.
//!
//! The collector itself does not use a socket to rumqttd: it subscribes and publishes acks and feed
//! records through rumqttd's in-process link ([`LocalLink`]). rumqttd 0.20 cannot set TCP_NODELAY on the
//! sockets it accepts, and a TCP subscriber that also publishes acks waits for Nagle's algorithm on
//! every message (about 40 ms, see PITFALLS.md).

use super::{gate, server_tls, BrokerConfig, BrokerError};
use crate::store::events::DeadLetter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The username of the embedded broker's private port; its password is random per start.
pub(super) const INTERNAL_USER: &str = "shiftlens";

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
    /// rumqttd's private loopback port, for the gate (it requires a per-start random login known only to
    /// the gate).
    pub internal: SocketAddr,
}

/// The gate's accept loop, for [`crate::topology`] to spawn (it spawns one task per connection).
pub type GateTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Starts rumqttd on a private loopback port (its own thread) and binds the gate on `config.listen`;
/// the gate accepts once its [`GateTask`] is spawned.
///
/// # Errors
/// Bad TLS files, an address that cannot be bound, or rumqttd not coming up.
pub async fn start_embedded(
    config: &BrokerConfig,
    rejected: mpsc::Sender<DeadLetter>,
) -> Result<(Embedded, LocalLink, GateTask), BrokerError> {
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(files)?))),
        None => None,
    };
    let bind_error = |source| BrokerError::Listen { addr: config.listen.to_string(), source };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let listen = listener.local_addr().map_err(bind_error)?;
    let secret: Arc<str> = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()).into();
    let (internal, link) =
        start_rumqttd(config.max_packet_bytes + 4096, config.gate.max_connections + 64, &secret).await?;
    let gate = Arc::new(gate::Gate::new(
        config.feed_readers.clone(),
        config.legacy_site.clone(),
        internal,
        secret,
        config.max_packet_bytes,
        config.gate,
    ));
    tracing::info!(%listen, tls = config.tls.is_some(), "embedded MQTT broker listening");
    Ok((Embedded { listen, internal }, link, Box::pin(gate::accept(listener, tls, gate, rejected))))
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
