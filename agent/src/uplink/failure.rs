//! Why the uplink cannot deliver, in plain words, and how often to say so.
//!
//! [`classify`] is pure: it maps a rumqttc [`ConnectionError`] (and the rustls error inside it, if any) to a
//! [`Failure`] whose [`Kind`] names the reason the way an engineer at the gateway needs it and the action to
//! take. [`FailureLog`] is the pure rate limiter behind the uplink's WARN: the first failure of an outage is
//! logged at once, a change of reason at once, and otherwise one line per interval with the count of failed
//! attempts since the last line.

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
use rustls::{AlertDescription, CertificateError};
use std::io;
use std::time::{Duration, Instant};

/// The reasons the uplink tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DNS (or /etc/hosts) does not know the broker's host name.
    NameNotResolved,
    /// Nothing listens on the broker's port (TCP RST).
    Refused,
    /// No route to the broker's network or host.
    Unreachable,
    /// No answer within the connect timeout.
    Timeout,
    /// The broker's certificate is not signed by the configured CA (rustls `UnknownIssuer`).
    TlsUnknownIssuer,
    /// The broker's certificate does not name the host in `broker`.
    TlsWrongName,
    /// The broker's certificate has expired or is not valid yet.
    TlsExpired,
    /// The broker refused this gateway's client certificate (a TLS alert).
    TlsClientCertRefused,
    /// Another TLS failure.
    Tls,
    /// CONNACK "identifier rejected", or the broker closed the connection at login: with the collector's
    /// embedded broker the client id must equal the certificate CN.
    ClientIdRefused,
    /// CONNACK "bad user name or password".
    BadCredentials,
    /// CONNACK "not authorised".
    NotAuthorised,
    /// CONNACK "server unavailable" or "unacceptable protocol version".
    BrokerUnavailable,
    /// The connection was up and then broke.
    Lost,
    /// Anything else.
    Other,
}

impl Kind {
    /// A stable snake_case name (logs, state file).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NameNotResolved => "name_not_resolved",
            Kind::Refused => "connection_refused",
            Kind::Unreachable => "unreachable",
            Kind::Timeout => "timeout",
            Kind::TlsUnknownIssuer => "tls_unknown_issuer",
            Kind::TlsWrongName => "tls_wrong_name",
            Kind::TlsExpired => "tls_expired",
            Kind::TlsClientCertRefused => "tls_client_cert_refused",
            Kind::Tls => "tls",
            Kind::ClientIdRefused => "client_id_refused",
            Kind::BadCredentials => "bad_credentials",
            Kind::NotAuthorised => "not_authorised",
            Kind::BrokerUnavailable => "broker_unavailable",
            Kind::Lost => "connection_lost",
            Kind::Other => "other",
        }
    }

    /// What the operator should do about it.
    pub fn action(self) -> &'static str {
        match self {
            Kind::NameNotResolved => "check the host name in [uplink] broker and the gateway's DNS settings",
            Kind::Refused => "check that the collector (or broker) runs and that the port in [uplink] broker is right",
            Kind::Unreachable => "check the gateway's network link, address and routes",
            Kind::Timeout => "check that the broker runs and that no firewall drops traffic to its port",
            Kind::TlsUnknownIssuer => "set [uplink] ca to the CA file that signed the broker's certificate",
            Kind::TlsWrongName => {
                "use a host name in [uplink] broker that the broker's certificate names (SAN), or reissue it"
            }
            Kind::TlsExpired => "renew the broker's certificate, or check the gateway's clock",
            Kind::TlsClientCertRefused => {
                "give [uplink] cert and key a client certificate signed by the CA the broker trusts"
            }
            Kind::Tls => "check [uplink] ca, cert and key",
            Kind::ClientIdRefused => {
                "set [uplink] client_id to the CN of the gateway's certificate (the gateway id), or remove it"
            }
            Kind::BadCredentials => "check [uplink] username and password against the broker's password file",
            Kind::NotAuthorised => "check [uplink] username, password and client_id against the broker's users and ACL",
            Kind::BrokerUnavailable => "check the broker's log; the agent keeps retrying",
            Kind::Lost => "the agent reconnects by itself; if this repeats, check the network and the broker's log",
            Kind::Other => "see the detail; the agent keeps retrying",
        }
    }
}

/// One failed connect (or lost connection), explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    /// The reason in plain words, naming the broker where that helps.
    pub reason: String,
    /// rumqttc's own text.
    pub detail: String,
}

impl Failure {
    pub fn action(&self) -> &'static str {
        self.kind.action()
    }
}

/// Explains `e` for a broker at `host:port`; `connected` is whether the connection had been up (a CONNACK
/// was received) before this error.
pub fn classify(e: &ConnectionError, host: &str, port: u16, connected: bool) -> Failure {
    let detail = e.to_string();
    let kind = if connected { lost_kind(e) } else { connect_kind(e) };
    let reason = match kind {
        Kind::NameNotResolved => format!("name not resolved: {host} is not known to DNS"),
        Kind::Refused => format!("connection refused: nothing listens on {host}:{port}"),
        Kind::Unreachable => format!("network unreachable: no route to {host}"),
        Kind::Timeout => format!("no answer from {host}:{port} in time"),
        Kind::TlsUnknownIssuer => {
            "TLS: the broker's certificate is not signed by the configured CA (UnknownIssuer)".into()
        }
        Kind::TlsWrongName => format!("TLS: the broker's certificate is not valid for the name {host}"),
        Kind::TlsExpired => "TLS: the broker's certificate has expired or is not valid yet".into(),
        Kind::TlsClientCertRefused => format!("TLS: the broker refused this gateway's client certificate ({detail})"),
        Kind::Tls => format!("TLS: {detail}"),
        Kind::ClientIdRefused => match e {
            ConnectionError::ConnectionRefused(_) => "client id refused: it must equal the certificate CN".into(),
            _ => "client id refused: the broker closed the connection at login; with the collector's embedded \
                  broker the client id must equal the certificate CN"
                .into(),
        },
        Kind::BadCredentials => "bad credentials: the broker refused the username or password".into(),
        Kind::NotAuthorised => "not authorised: the broker refused this client's login".into(),
        Kind::BrokerUnavailable => format!("the broker refused the connection as unavailable ({detail})"),
        Kind::Lost => format!("connection lost: {detail}"),
        Kind::Other => detail.clone(),
    };
    Failure { kind, reason, detail }
}

fn lost_kind(e: &ConnectionError) -> Kind {
    match rustls_error(e) {
        Some(t) => tls_kind(t),
        None => Kind::Lost,
    }
}

fn connect_kind(e: &ConnectionError) -> Kind {
    if let Some(t) = rustls_error(e) {
        return tls_kind(t);
    }
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadClientId => Kind::ClientIdRefused,
            ConnectReturnCode::BadUserNamePassword => Kind::BadCredentials,
            ConnectReturnCode::NotAuthorized => Kind::NotAuthorised,
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::RefusedProtocolVersion => {
                Kind::BrokerUnavailable
            }
            ConnectReturnCode::Success => Kind::Other,
        },
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => Kind::Timeout,
        // The socket (and TLS, if any) was up, the CONNECT sent, and the broker hung up without a CONNACK: what
        // the collector's embedded broker does with a client id that is not the certificate's CN.
        ConnectionError::MqttState(StateError::ConnectionAborted) => Kind::ClientIdRefused,
        ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)))
        | ConnectionError::Io(io) => io_kind(io, true),
        ConnectionError::Tls(rumqttc::TlsError::Io(io)) => match io_kind(io, false) {
            Kind::Other => Kind::Tls,
            k => k,
        },
        ConnectionError::Tls(_) => Kind::Tls,
        _ => Kind::Other,
    }
}

/// `after_socket`: the error came after the socket was open (reading the CONNACK), not while opening it.
fn io_kind(io: &io::Error, after_socket: bool) -> Kind {
    match io.kind() {
        io::ErrorKind::ConnectionRefused => Kind::Refused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => Kind::Unreachable,
        io::ErrorKind::TimedOut => Kind::Timeout,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            if after_socket =>
        {
            Kind::ClientIdRefused
        }
        _ if is_name_error(io) => Kind::NameNotResolved,
        _ => Kind::Other,
    }
}

/// The resolver's error (getaddrinfo) carries no kind of its own; its text is fixed by the standard library.
fn is_name_error(io: &io::Error) -> bool {
    let text = io.to_string();
    text.contains("failed to lookup address") || text.contains("could not resolve to any address")
}

/// The rustls error inside `e`, wherever rumqttc put it.
fn rustls_error(e: &ConnectionError) -> Option<&rustls::Error> {
    let io = match e {
        ConnectionError::Tls(rumqttc::TlsError::TLS(t)) => return Some(t),
        ConnectionError::Tls(rumqttc::TlsError::Io(io))
        | ConnectionError::Io(io)
        | ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => io,
        _ => return None,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn tls_kind(t: &rustls::Error) -> Kind {
    match t {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => Kind::TlsUnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => Kind::TlsWrongName,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Kind::TlsExpired,
            _ => Kind::Tls,
        },
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => Kind::TlsClientCertRefused,
        _ => Kind::Tls,
    }
}

/// Rate limiter for the delivery WARN (pure: the caller passes the time).
#[derive(Debug, Clone)]
pub struct FailureLog {
    every: Duration,
    /// When and for what the last line of this outage was logged.
    last: Option<(Instant, Kind)>,
    /// Failures since the last line.
    since_last: u64,
    /// Failures in this outage.
    in_outage: u64,
    outage_start: Option<Instant>,
}

/// What [`FailureLog::failed`] asks the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warn {
    /// Failed attempts since the previous line (this one included).
    pub failures: u64,
    /// Failed attempts since the connection was last up.
    pub in_outage: u64,
    /// Time since the first failure of this outage.
    pub outage: Duration,
}

impl FailureLog {
    /// At most one line per `every` while the reason stays the same.
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, since_last: 0, in_outage: 0, outage_start: None }
    }

    /// Records a failure at `now`; `Some` when a line is due.
    pub fn failed(&mut self, now: Instant, kind: Kind) -> Option<Warn> {
        let start = *self.outage_start.get_or_insert(now);
        self.since_last += 1;
        self.in_outage += 1;
        let due = match self.last {
            None => true,
            Some((at, k)) => k != kind || now.saturating_duration_since(at) >= self.every,
        };
        if !due {
            return None;
        }
        let warn =
            Warn { failures: self.since_last, in_outage: self.in_outage, outage: now.saturating_duration_since(start) };
        self.last = Some((now, kind));
        self.since_last = 0;
        Some(warn)
    }

    /// Records that the connection is up at `now`; `Some((failed attempts, outage length))` when there had
    /// been failures.
    pub fn connected(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let out = self.outage_start.take().map(|s| (self.in_outage, now.saturating_duration_since(s)));
        *self = Self::new(self.every);
        out.filter(|(n, _)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind, text: &str) -> io::Error {
        io::Error::new(kind, text.to_string())
    }

    fn tls_io(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn name_error() -> io::Error {
        // What the standard library's resolver gives (kind Uncategorized, not nameable here).
        std::net::ToSocketAddrs::to_socket_addrs("no-such-host.invalid:1883").expect_err("must not resolve")
    }

    #[test]
    fn connection_errors_map_to_plain_reasons() {
        use ConnectionError as E;
        let cases: Vec<(&str, E, bool, Kind, &str)> = vec![
            ("dns", E::Io(name_error()), false, Kind::NameNotResolved, "name not resolved: broker.plant is not known"),
            (
                "refused",
                E::Io(io(io::ErrorKind::ConnectionRefused, "x")),
                false,
                Kind::Refused,
                "connection refused: nothing listens on broker.plant:8883",
            ),
            (
                "no route",
                E::Io(io(io::ErrorKind::HostUnreachable, "x")),
                false,
                Kind::Unreachable,
                "no route to broker.plant",
            ),
            ("connect timeout", E::NetworkTimeout, false, Kind::Timeout, "no answer"),
            ("tcp timeout", E::Io(io(io::ErrorKind::TimedOut, "x")), false, Kind::Timeout, "no answer"),
            (
                "untrusted broker",
                E::Tls(rumqttc::TlsError::Io(tls_io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )))),
                false,
                Kind::TlsUnknownIssuer,
                "TLS: the broker's certificate is not signed by the configured CA (UnknownIssuer)",
            ),
            (
                "untrusted broker, direct",
                E::Tls(rumqttc::TlsError::TLS(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))),
                false,
                Kind::TlsUnknownIssuer,
                "(UnknownIssuer)",
            ),
            (
                "wrong name",
                E::Tls(rumqttc::TlsError::Io(tls_io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                )))),
                false,
                Kind::TlsWrongName,
                "not valid for the name broker.plant",
            ),
            (
                "expired",
                E::Tls(rumqttc::TlsError::Io(tls_io(rustls::Error::InvalidCertificate(CertificateError::Expired)))),
                false,
                Kind::TlsExpired,
                "has expired",
            ),
            (
                "client certificate refused (alert after the handshake)",
                E::Io(tls_io(rustls::Error::AlertReceived(AlertDescription::UnknownCA))),
                false,
                Kind::TlsClientCertRefused,
                "refused this gateway's client certificate",
            ),
            (
                "client certificate missing",
                E::MqttState(StateError::Io(tls_io(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired,
                )))),
                false,
                Kind::TlsClientCertRefused,
                "client certificate",
            ),
            (
                "other TLS",
                E::Tls(rumqttc::TlsError::Io(tls_io(rustls::Error::DecryptError))),
                false,
                Kind::Tls,
                "TLS: ",
            ),
            (
                "CONNACK bad client id",
                E::ConnectionRefused(ConnectReturnCode::BadClientId),
                false,
                Kind::ClientIdRefused,
                "client id refused: it must equal the certificate CN",
            ),
            (
                "closed at login",
                E::MqttState(StateError::ConnectionAborted),
                false,
                Kind::ClientIdRefused,
                "client id must equal the certificate CN",
            ),
            (
                "TLS stream closed at login (the embedded broker's refusal)",
                E::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )))),
                false,
                Kind::ClientIdRefused,
                "with the collector's embedded broker the client id must equal the certificate CN",
            ),
            (
                "client certificate refused, read while decoding",
                E::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(tls_io(
                    rustls::Error::AlertReceived(AlertDescription::BadCertificate),
                )))),
                false,
                Kind::TlsClientCertRefused,
                "client certificate",
            ),
            (
                "TLS handshake closed",
                E::Tls(rumqttc::TlsError::Io(io(io::ErrorKind::UnexpectedEof, "eof"))),
                false,
                Kind::Tls,
                "TLS: ",
            ),
            (
                "reset at login",
                E::Io(io(io::ErrorKind::ConnectionReset, "x")),
                false,
                Kind::ClientIdRefused,
                "client id refused",
            ),
            (
                "CONNACK bad password",
                E::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
                false,
                Kind::BadCredentials,
                "bad credentials",
            ),
            (
                "CONNACK not authorised",
                E::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                false,
                Kind::NotAuthorised,
                "not authorised",
            ),
            (
                "CONNACK unavailable",
                E::ConnectionRefused(ConnectReturnCode::ServiceUnavailable),
                false,
                Kind::BrokerUnavailable,
                "unavailable",
            ),
            ("lost after connect", E::MqttState(StateError::ConnectionAborted), true, Kind::Lost, "connection lost"),
            ("lost: reset", E::Io(io(io::ErrorKind::ConnectionReset, "reset")), true, Kind::Lost, "connection lost"),
            ("other", E::RequestsDone, false, Kind::Other, "Requests done"),
        ];
        for (name, e, connected, kind, text) in cases {
            let f = classify(&e, "broker.plant", 8883, connected);
            assert_eq!(f.kind, kind, "{name}: {f:?}");
            assert!(f.reason.contains(text), "{name}: {:?} lacks {text:?}", f.reason);
            assert!(!f.action().is_empty(), "{name}");
        }
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let kinds = [
            Kind::NameNotResolved,
            Kind::Refused,
            Kind::Unreachable,
            Kind::Timeout,
            Kind::TlsUnknownIssuer,
            Kind::TlsWrongName,
            Kind::TlsExpired,
            Kind::TlsClientCertRefused,
            Kind::Tls,
            Kind::ClientIdRefused,
            Kind::BadCredentials,
            Kind::NotAuthorised,
            Kind::BrokerUnavailable,
            Kind::Lost,
            Kind::Other,
        ];
        let names: std::collections::BTreeSet<_> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), kinds.len());
    }

    #[test]
    fn failure_log_warns_first_then_once_per_interval_and_on_a_new_reason() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = FailureLog::new(s(60));
        // (seconds after t0, kind, expected (failures, in_outage, outage seconds))
        type Row = (u64, Kind, Option<(u64, u64, u64)>);
        let rows: &[Row] = &[
            (0, Kind::Refused, Some((1, 1, 0))),
            (1, Kind::Refused, None),
            (30, Kind::Refused, None),
            (59, Kind::Refused, None),
            (60, Kind::Refused, Some((4, 5, 60))),
            (61, Kind::TlsUnknownIssuer, Some((1, 6, 61))),
            (62, Kind::TlsUnknownIssuer, None),
            (121, Kind::TlsUnknownIssuer, Some((2, 8, 121))),
        ];
        for (i, &(at, kind, want)) in rows.iter().enumerate() {
            let got = log.failed(t0 + s(at), kind).map(|w| (w.failures, w.in_outage, w.outage.as_secs()));
            assert_eq!(got, want, "row {i}");
        }
        assert_eq!(log.connected(t0 + s(130)), Some((8, s(130))));
        assert_eq!(log.connected(t0 + s(131)), None, "no outage, nothing to report");
        // A new outage starts over: its first failure is logged at once.
        assert_eq!(log.failed(t0 + s(140), Kind::Refused).map(|w| w.failures), Some(1));
    }
}
