//! The gate: the embedded broker's front door, on `[broker] listen`. It terminates TLS (a client certificate
//! from the configured CA is required), takes the client's identity from the certificate (or, in plaintext,
//! its client id), checks the CONNECT, then forwards the MQTT byte stream to rumqttd's private port under
//! a namespaced client id with the per-start secret login, checking every PUBLISH and SUBSCRIBE against
//! the access policy ([`super::acl`]). A violation closes the connection; a refused publish is reported as
//! a dead letter.
//!
//! Its connection budget is its own ([`GateLimits`], apart from HTTP's): at most `max_connections` clients,
//! of which at most `max_handshakes` not yet authenticated, each with `handshake_timeout` for its TLS
//! handshake and CONNECT; one more is closed at once, so half-open floods never cut connected gateways.
//! The gate sets TCP_NODELAY on all of its sockets.

use super::acl::{self, cert_identity, client_id_identity, Identity, Request, Role, SITE_URI};
use super::config::GateLimits;
use super::embedded::INTERNAL_USER;
use crate::fairness::LogLimiter;
use crate::store::events::DeadLetter;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use shiftlens_common::SiteId;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One WARN per client address per this long for refused gate connections (with a count of those held back).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Client addresses the gate's log limiter tracks; beyond that they share one line.
const LOG_PEERS: usize = 1024;

/// Accepts gate connections within the budget: at most `max_connections` at once and, of those, at most
/// `max_handshakes` not yet authenticated, each of which has `handshake_timeout` to finish its TLS handshake
/// and send a valid CONNECT. A connection beyond either cap is closed at once, so a flood of half-open
/// connections costs a descriptor for a moment and never the place of a connected gateway.
pub async fn accept(
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

/// What every gate connection shares.
pub struct Gate {
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
    /// A gate towards rumqttd at `internal` (login with `secret`), for frames of at most `max` bytes.
    pub fn new(
        readers: Vec<String>,
        legacy_site: Option<SiteId>,
        internal: SocketAddr,
        secret: Arc<str>,
        max: usize,
        limits: GateLimits,
    ) -> Self {
        let logs = std::sync::Mutex::new(LogLimiter::new(LOG_EVERY, LOG_PEERS));
        Self { readers, legacy_site, internal, secret, max, limits, logs }
    }

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
        let role = if reader { Role::FeedReader } else { Role::Gateway };
        if tls && !reader && who.site.is_none() {
            return Err(GateError::Refused(format!(
                "the client certificate of gateway {} names no site: issue it with OU=<site> or a SAN URI \
                 {SITE_URI}<site> (docs/install.md), or set [broker] legacy_site",
                who.id
            )));
        }
        if let Some(w) = &connect.last_will {
            if !acl::allows(&who, role, Request::LastWill(&w.topic)) {
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
                    Ok(Packet::Publish(p)) if !acl::allows(&who, role, Request::Publish(&p.topic)) => {
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
                            if !acl::allows(&who, role, Request::Subscribe(&f.path)) {
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
