//! MQTT uplink: outbox → batches → publish → collector acks → delete.
//!
//! The database, not the MQTT client, holds what is unsent: the uplink reads batches from the outbox in seq
//! order, keeps a bounded window of batches awaiting the collector's ack ([`window`]), deletes rows only when
//! an ack names them, and goes back to the oldest unconfirmed event after an ack timeout or a reconnect. The
//! broker's PubAck only paces publishing.
//!
//! Native batches are written in the dictionary form (batch version 3, `[uplink] encoding = "dictionary"`,
//! the default) or plain (version 2). The dictionary lives as long as the agent process (and until it is
//! full), across reconnects; a collector that does not know it (restarted, or the batch that carried some
//! entries was lost) answers with a "dictionary unknown" ack, and the uplink then starts another
//! dictionary and sends every unconfirmed event again. Nothing is deleted from the outbox but on an ack
//! naming its seqs.
//!
//! Security: `mqtts://` needs a CA and (unless `insecure = true`) a client certificate and key; plaintext
//! `mqtt://` is accepted only to a loopback host or with `insecure = true`. The password is never logged.

pub mod failure;
pub mod mqtt;
pub mod sparkplug;
pub mod window;

use serde::Deserialize;
use shiftlens_common::status::Status;
use shiftlens_common::Event;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[uplink]`, validated.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// `mqtts://host:8883` or `mqtt://host:1883`, as written.
    pub broker: String,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub client_id: Option<String>,
    pub keep_alive: Duration,
    pub batch_events: usize,
    pub batch_bytes: u64,
    pub inflight_batches: usize,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// `native` (the default) or `sparkplug`.
    pub protocol: sparkplug::Protocol,
    /// `[uplink.sparkplug]`, when given.
    pub sparkplug: Option<sparkplug::Sparkplug>,
    /// How native batches are written: `dictionary` (version 3, the default) or `plain` (version 2).
    pub encoding: Encoding,
}

/// `[uplink] encoding`: the form of native batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Batch version 3 ([`shiftlens_common::wire_dict`]): each distinct event content is sent once per
    /// dictionary and then referred to by index, with delta-coded seqs and times (a few bytes a change).
    /// Needs a collector that reads version 3.
    #[default]
    Dictionary,
    /// Batch version 2: every event carries its asset and body in full. For collectors that read only
    /// versions 1 and 2.
    Plain,
}

pub fn default_encoding() -> shiftlens_common::config::Spanned<Encoding> {
    shiftlens_common::config::Spanned::new(0..0, Encoding::Dictionary)
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
            broker: broker.to_string(),
            insecure: false,
            ca: None,
            cert: None,
            key: None,
            username: None,
            password: None,
            client_id: None,
            keep_alive: Duration::from_secs(30),
            batch_events: 1000,
            batch_bytes: 256 << 10,
            inflight_batches: 8,
            ack_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(30),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            protocol: sparkplug::Protocol::Native,
            sparkplug: None,
            encoding: Encoding::Dictionary,
        }
    }

    /// The parsed broker address (valid after validation passed).
    ///
    /// # Errors
    /// See [`Broker::parse`].
    pub fn broker(&self) -> Result<Broker, String> {
        Broker::parse(&self.broker)
    }
}

/// What the uplink needs of the store of unsent events, as blocking calls (run on the blocking pool).
/// `topology` hands the outbox in behind this; the uplink never imports the outbox itself.
/// Runs `f` on the outbox on the blocking pool (both uplink modes); a failure is logged and gives `None`.
pub(crate) async fn with_outbox<P: Pending, T: Send + 'static>(
    outbox: &std::sync::Arc<std::sync::Mutex<P>>,
    f: impl FnOnce(&mut P) -> Result<T, P::Error> + Send + 'static,
) -> Option<T> {
    let outbox = outbox.clone();
    let r =
        tokio::task::spawn_blocking(move || f(&mut outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
            .await;
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "outbox read failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "outbox task failed");
            None
        }
    }
}

pub trait Pending: Send + 'static {
    type Error: fmt::Display + Send;
    /// The store's epoch, named in every batch and ack.
    fn epoch(&self) -> u64;
    /// How many events wait.
    fn depth(&mut self) -> Result<u64, Self::Error>;
    /// The online status with the store's figures.
    fn status(
        &mut self,
        sources: Vec<shiftlens_common::status::SourceHealth>,
        now_ms: i64,
    ) -> Result<Status, Self::Error>;
    /// Up to `max_events` events (at most `max_bytes` stored bytes) after seq `after`, in seq order.
    fn read_after(&mut self, after: u64, max_events: usize, max_bytes: u64) -> Result<Vec<Event>, Self::Error>;
    /// Each asset's latest state event, at most `max_events`, sent ahead of a backlog.
    fn latest_states(&mut self, max_events: usize) -> Result<Vec<Event>, Self::Error>;
    /// Forgets the events the collector confirmed (inclusive seq ranges).
    fn delete(&mut self, ranges: &[(u64, u64)]) -> Result<(), Self::Error>;
    /// The Sparkplug bdSeq of the last session that reached the broker (kept for the Sparkplug uplink).
    fn sparkplug_bd_seq(&mut self) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }
    /// Records the Sparkplug bdSeq of a session that reached the broker.
    fn set_sparkplug_bd_seq(&mut self, bd_seq: u64) -> Result<(), Self::Error> {
        let _ = bd_seq;
        Ok(())
    }
}

/// Reconnect delays (doubling with jitter): the one backoff in `common`.
pub use shiftlens_common::clock::Backoff;

#[cfg(test)]
mod tests {
    use super::*;

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
}
