//! OPC UA source: one task per endpoint, one subscription with a monitored item per point.
//!
//! Invariants:
//! - The server certificate is trusted only explicitly: it is in `{pki_dir}/trusted` (put there by
//!   `shiftlens-agent trust`) or its SHA-256 fingerprint is pinned in the config. An unknown certificate
//!   is saved to `{pki_dir}/rejected` and named in an error together with the command that trusts it.
//! - A half-open link is noticed within seconds: keep-alive reads every `keep_alive`, each bounded by
//!   `request_timeout`, and three failures close the session.
//! - Sessions retry forever. After every reconnect Publish is triggered at once (async-opcua 0.19
//!   otherwise stalls silently); on a new session the nodes are re-resolved (namespace URIs may map to
//!   other indexes after a server restart) and the subscription is created afresh, so each point reports
//!   its current value again.
//! - Values carry the server's source timestamp. A value with a bad status is not reported: the source
//!   is reported lost (`Sample::Link`, naming the point and status) until every point is good again,
//!   then every point's last good value is reported again.

use crate::detect::{Meaning, PointSpec, Sample, Value};
use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, DataChangeCallback, IdentityToken, MonitoredItem, Session, SessionConnectMode,
    SessionPollResult,
};
use opcua::crypto::{CertificateStore, SecurityPolicy, X509};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, DateTime, DeadbandType, EndpointDescription,
    ExtensionObject, MessageSecurityMode, MonitoredItemCreateRequest, NodeId, ReadValueId, StatusCode,
    TimestampsToReturn, VariableId, Variant,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::{AssetId, TS_RANGE_MS};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tracing::{error, info, warn};

/// One OPC UA endpoint (`[[opcua]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaEndpoint {
    /// Names the source in events, logs and `trust --endpoint`.
    pub id: Spanned<String>,
    /// `opc.tcp://host:port/path`; this host and port are used even when the server advertises others.
    pub endpoint: Spanned<String>,
    #[serde(default = "unspanned")]
    pub security_policy: Spanned<Policy>,
    #[serde(default = "unspanned")]
    pub security_mode: Spanned<Mode>,
    /// Required for `security_policy = "none"` to a host other than loopback.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default = "unspanned")]
    pub identity: Spanned<Identity>,
    /// Holds `own/` (the agent's key pair, created on first use), `trusted/` and `rejected/`.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// SHA-256 fingerprint of the server certificate (hex, colons allowed); trusted without `trust`.
    pub server_fingerprint: Option<Spanned<String>>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Spanned<HumanDuration>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Spanned<HumanDuration>,
    #[serde(default = "default_publishing_interval")]
    pub publishing_interval: Spanned<HumanDuration>,
    #[serde(default)]
    pub points: Vec<Spanned<OpcUaPoint>>,
    /// The config file this came from, for the `trust` hint in messages (set by `Config::from_file`).
    #[serde(skip)]
    pub config_file: PathBuf,
}

/// One monitored item (`[[opcua.points]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaPoint {
    /// `nsu=<namespace uri>;s=<id>` (resolved on every connect), `ns=2;s=<id>`, `i=2258`, ...
    pub node: Spanned<String>,
    /// The point's name in samples and `probe`; defaults to `node`.
    pub name: Option<String>,
    pub asset: AssetId,
    #[serde(default = "default_sampling")]
    pub sampling: HumanDuration,
    /// Absolute deadband for numeric values; 0 reports every change.
    #[serde(default = "unspanned")]
    pub deadband: Spanned<f64>,
    pub meaning: Spanned<Meaning>,
}

impl OpcUaPoint {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.node.get_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    None,
    #[default]
    Basic256sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    None,
    Sign,
    #[default]
    SignAndEncrypt,
}

/// How the agent identifies itself to the server.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Identity {
    #[default]
    Anonymous,
    /// `identity = { user = { name = "shiftlens", password_file = "/etc/shiftlens/opcua.pass" } }`
    User { name: String, password_file: Option<PathBuf>, password: Option<String> },
    /// `identity = { certificate = { cert = "user.der", key = "user.pem" } }`
    Certificate { cert: PathBuf, key: PathBuf },
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::User { name, password_file, .. } => {
                write!(f, "User {{ name: {name:?}, password_file: {password_file:?}, password: <hidden> }}")
            }
            Identity::Certificate { cert, key } => write!(f, "Certificate {{ cert: {cert:?}, key: {key:?} }}"),
        }
    }
}

/// A default value; its empty span makes errors point at the enclosing section instead.
fn unspanned<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

/// The span of a value, or of `outer` when the value was defaulted.
fn span_in<T>(v: &Spanned<T>, outer: std::ops::Range<usize>) -> std::ops::Range<usize> {
    if v.span() == (0..0) {
        outer
    } else {
        v.span()
    }
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("/var/lib/shiftlens/pki")
}
fn default_keep_alive() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(1)))
}
fn default_request_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(2)))
}
fn default_publishing_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_millis(250)))
}
fn default_sampling() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}

impl OpcUaEndpoint {
    pub fn id(&self) -> &str {
        self.id.get_ref()
    }

    /// The assets this endpoint feeds, each once.
    pub fn assets(&self) -> Vec<AssetId> {
        let mut seen = HashSet::new();
        self.points.iter().map(|p| p.get_ref().asset.clone()).filter(|a| seen.insert(a.clone())).collect()
    }

    /// The points as the detector sees them.
    pub fn point_specs(&self) -> Vec<PointSpec> {
        self.points
            .iter()
            .map(|p| {
                let p = p.get_ref();
                PointSpec {
                    source: self.id().to_string(),
                    point: p.name().to_string(),
                    asset: p.asset.clone(),
                    meaning: p.meaning.get_ref().clone(),
                }
            })
            .collect()
    }

    fn policy(&self) -> SecurityPolicy {
        match self.security_policy.get_ref() {
            Policy::None => SecurityPolicy::None,
            Policy::Basic256sha256 => SecurityPolicy::Basic256Sha256,
        }
    }

    fn mode(&self) -> MessageSecurityMode {
        match self.security_mode.get_ref() {
            Mode::None => MessageSecurityMode::None,
            Mode::Sign => MessageSecurityMode::Sign,
            Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        }
    }

    /// The command an operator runs to trust this endpoint's server certificate.
    pub fn trust_command(&self) -> String {
        let config = if self.config_file.as_os_str().is_empty() {
            Path::new("/etc/shiftlens/agent.toml")
        } else {
            &self.config_file
        };
        format!("shiftlens-agent trust --config {} --endpoint {}", config.display(), self.id())
    }
}

/// Validates every `[[opcua]]` section without I/O.
pub fn validate(endpoints: &[Spanned<OpcUaEndpoint>], file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    let mut ids = HashSet::new();
    for spanned in endpoints {
        let (ep, outer) = (spanned.get_ref(), spanned.span());
        let mut err = |span: std::ops::Range<usize>, msg: String| errors.push(file.error_at(span, msg));
        let id = ep.id.get_ref();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            err(ep.id.span(), format!("endpoint id {id:?} must be 1-64 characters of a-z A-Z 0-9 _ - ."));
        } else if !ids.insert(id.clone()) {
            err(ep.id.span(), format!("endpoint id {id:?} is used twice"));
        }
        match endpoint_host(ep.endpoint.get_ref()) {
            None => err(ep.endpoint.span(), "endpoint must look like opc.tcp://host:port/".into()),
            Some(host) => {
                let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if *ep.security_policy.get_ref() == Policy::None && !loopback && !ep.insecure {
                    err(
                        span_in(&ep.security_policy, outer.clone()),
                        format!(
                            "security_policy \"none\" sends plaintext to {host}; set `insecure = true` to allow it"
                        ),
                    );
                }
            }
        }
        let (policy, mode) = (*ep.security_policy.get_ref(), *ep.security_mode.get_ref());
        if (policy == Policy::None) != (mode == Mode::None) {
            err(
                span_in(&ep.security_mode, outer.clone()),
                "security_mode \"none\" goes with security_policy \"none\" and only with it".into(),
            );
        }
        if let Some(fp) = &ep.server_fingerprint {
            if parse_fingerprint(fp.get_ref()).is_none() {
                err(fp.span(), "server_fingerprint must be 64 hex digits (SHA-256), colons allowed".into());
            } else if policy == Policy::None {
                err(
                    fp.span(),
                    "server_fingerprint needs a secured endpoint (security_policy \"basic256sha256\")".into(),
                );
            }
        }
        match ep.identity.get_ref() {
            Identity::User { name, password_file, password } => {
                if name.is_empty() {
                    err(span_in(&ep.identity, outer.clone()), "user name must not be empty".into());
                }
                if password_file.is_some() == password.is_some() {
                    err(
                        span_in(&ep.identity, outer.clone()),
                        "give exactly one of `password_file` (preferred) or `password`".into(),
                    );
                }
            }
            Identity::Certificate { .. } if policy == Policy::None => {
                err(span_in(&ep.identity, outer.clone()), "a certificate identity needs a secured endpoint".into())
            }
            _ => {}
        }
        for d in [&ep.keep_alive, &ep.request_timeout, &ep.publishing_interval] {
            if d.get_ref().0 < Duration::from_millis(50) {
                err(span_in(d, outer.clone()), "must be at least 50ms".into());
            }
        }
        if ep.points.is_empty() {
            err(ep.id.span(), format!("endpoint {id:?} has no points: add [[opcua.points]]"));
        }
        let mut names = HashSet::new();
        for p in &ep.points {
            let pr = p.get_ref();
            if let Err(e) = parse_node(pr.node.get_ref()) {
                err(pr.node.span(), e);
            }
            if !names.insert(pr.name().to_string()) {
                err(p.span(), format!("point {:?} is defined twice in endpoint {id:?}", pr.name()));
            }
            let db = *pr.deadband.get_ref();
            if !(db.is_finite() && db >= 0.0) {
                err(span_in(&pr.deadband, p.span()), "deadband must be a finite number >= 0".into());
            }
            for m in pr.meaning.get_ref().check() {
                err(pr.meaning.span(), m);
            }
        }
    }
}

fn endpoint_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("opc.tcp://")?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

/// A configured node: a namespace URI to resolve (or none) and the node id with its index.
#[derive(Debug, Clone, PartialEq)]
struct NodeRef {
    namespace_uri: Option<String>,
    node: NodeId,
}

fn parse_node(s: &str) -> Result<NodeRef, String> {
    let bad = || {
        format!("node {s:?} is not a node id: expected e.g. \"nsu=urn:vendor:plc;s=Line1.State\", \"ns=2;s=Line1.State\" or \"i=2258\"")
    };
    let (namespace_uri, rest) = match s.strip_prefix("nsu=") {
        Some(r) => {
            let (uri, rest) = r.split_once(';').ok_or_else(bad)?;
            if uri.is_empty() || rest.starts_with("ns=") {
                return Err(bad());
            }
            (Some(uri.to_string()), rest)
        }
        None => (None, s),
    };
    let node = NodeId::from_str(rest).map_err(|_| bad())?;
    Ok(NodeRef { namespace_uri, node })
}

/// Parses a SHA-256 fingerprint written as hex, with or without colons and a `sha256:` prefix.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:")).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// What the operator needs to know about a server certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub sha256: String,
    /// The file name the PKI store uses for it (`CN [sha1].der`).
    pub file_name: String,
}

/// Reads subject, fingerprint and store file name of a DER certificate.
///
/// # Errors
/// When the bytes are not an X.509 certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let cert = X509::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertInfo {
        subject: cert.subject_name(),
        sha256: fingerprint(der),
        file_name: CertificateStore::cert_file_name(&cert),
    })
}

/// Starts the endpoint's task. It runs until `tx` is closed, reconnecting by itself.
pub fn spawn(endpoint: &OpcUaEndpoint, tx: Sender<Sample>) -> tokio::task::JoinHandle<()> {
    let ep = Arc::new(endpoint.clone());
    tokio::spawn(async move { run(ep, tx).await })
}

async fn run(ep: Arc<OpcUaEndpoint>, tx: Sender<Sample>) {
    let tracker = Arc::new(Mutex::new(Tracker::new(&ep)));
    let build = {
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || build_client(&ep))
    };
    let built = match build.await {
        Ok(r) => r,
        Err(e) => Err(format!("client set-up task failed: {e}")),
    };
    let mut client = match built {
        Ok(c) => c,
        Err(e) => {
            error!(endpoint = %ep.id(), error = %e, "cannot set up the OPC UA client");
            emit(&tx, lock(&tracker).session(false, Some(e)));
            return;
        }
    };
    let mut delay = Duration::from_millis(500);
    loop {
        let result = tokio::select! {
            r = session_once(&ep, &mut client, &tracker, &tx) => r,
            _ = tx.closed() => return,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                warn!(endpoint = %ep.id(), error = %e, "OPC UA endpoint unavailable");
                emit(&tx, lock(&tracker).session(false, Some(e)));
            }
        }
        let jitter = Duration::from_millis(rand::random_range(0..=delay_ms(delay) / 4));
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = tx.closed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn delay_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn build_client(ep: &OpcUaEndpoint) -> Result<Client, String> {
    ClientBuilder::new()
        .application_name("ShiftLens agent")
        .application_uri("urn:shiftlens:agent")
        .product_uri("urn:shiftlens:agent")
        .create_sample_keypair(true)
        .pki_dir(&ep.pki_dir)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(500))
        .session_retry_max(Duration::from_secs(10))
        .keep_alive_interval(ep.keep_alive.get_ref().0)
        .request_timeout(ep.request_timeout.get_ref().0)
        .max_failed_keep_alive_count(3)
        .recreate_subscriptions(false)
        .session_name(format!("shiftlens {}", ep.id()))
        .client()
        .map_err(|e| format!("invalid client settings: {}", e.join("; ")))
}

fn identity(ep: &OpcUaEndpoint) -> Result<IdentityToken, String> {
    Ok(match ep.identity.get_ref() {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::User { name, password_file: Some(f), .. } => {
            let pw =
                std::fs::read_to_string(f).map_err(|e| format!("cannot read password_file {}: {e}", f.display()))?;
            IdentityToken::new_user_name(name.clone(), pw.trim_end_matches(['\r', '\n']).to_string())
        }
        Identity::User { name, password, .. } => {
            IdentityToken::new_user_name(name.clone(), password.clone().unwrap_or_default())
        }
        Identity::Certificate { cert, key } => IdentityToken::new_x509_path(cert, key)
            .map_err(|e| format!("cannot read identity certificate {} / key {}: {e}", cert.display(), key.display()))?,
    })
}

/// Fetches the server's endpoints, picks the configured one and checks its certificate is trusted.
async fn pick_endpoint(ep: &OpcUaEndpoint, client: &Client) -> Result<EndpointDescription, String> {
    let url = ep.endpoint.get_ref().as_str();
    let endpoints = tokio::time::timeout(ep.request_timeout.get_ref().0 * 3, client.get_server_endpoints_from_url(url))
        .await
        .map_err(|_| format!("no answer to GetEndpoints from {url}"))?
        .map_err(|e| format!("cannot get endpoints from {url}: {e}"))?;
    let (policy, mode) = (ep.policy(), ep.mode());
    let mut chosen = endpoints
        .iter()
        .find(|e| e.security_policy_uri.as_ref() == policy.to_uri() && e.security_mode == mode)
        .cloned()
        .ok_or_else(|| {
            let offered: Vec<String> = endpoints
                .iter()
                .map(|e| format!("{}/{:?}", SecurityPolicy::from_uri(e.security_policy_uri.as_ref()), e.security_mode))
                .collect();
            format!("{url} offers no endpoint with {policy}/{mode:?}; it offers {}", offered.join(", "))
        })?;
    // Connect to the configured host and port, not the ones the server advertises (NAT, proxies).
    chosen.endpoint_url = url.into();
    if policy != SecurityPolicy::None {
        check_trust(ep, client, chosen.server_certificate.as_ref())?;
    }
    Ok(chosen)
}

/// With a pin: a matching certificate is put into `trusted/`, any other is refused. Without: an
/// untrusted certificate is saved to `rejected/` and named with the command that trusts it.
fn check_trust(ep: &OpcUaEndpoint, client: &Client, der: &[u8]) -> Result<(), String> {
    let info = cert_info(der).map_err(|e| format!("server sent a bad certificate: {e}"))?;
    let store = client.certificate_store().read();
    let trusted = store.trusted_certs_dir().join(&info.file_name);
    let rejected = store.rejected_certs_dir().join(&info.file_name);
    if let Some(pin) = &ep.server_fingerprint {
        let want = parse_fingerprint(pin.get_ref());
        if want.map(|w| w.as_slice() == Sha256::digest(der).as_slice()) != Some(true) {
            return Err(format!(
                "server certificate {} has SHA-256 {}, which does not match the pinned server_fingerprint {}",
                info.subject,
                info.sha256,
                pin.get_ref()
            ));
        }
        if !trusted.exists() {
            std::fs::create_dir_all(store.trusted_certs_dir())
                .and_then(|()| std::fs::write(&trusted, der))
                .map_err(|e| format!("cannot store pinned certificate in {}: {e}", trusted.display()))?;
            let _ = std::fs::remove_file(&rejected);
            info!(endpoint = %ep.id(), subject = %info.subject, sha256 = %info.sha256, "trusted pinned server certificate");
        }
        return Ok(());
    }
    if trusted.exists() {
        return Ok(());
    }
    let _ = std::fs::create_dir_all(store.rejected_certs_dir()).and_then(|()| std::fs::write(&rejected, der));
    Err(format!(
        "server certificate is not trusted: subject {}, SHA-256 {}, saved as {}; trust it with `{}` \
         or pin it with server_fingerprint = \"{}\"",
        info.subject,
        info.sha256,
        rejected.display(),
        ep.trust_command(),
        info.sha256
    ))
}

/// One client session: connect, subscribe, and follow the event loop until it ends for good.
/// `Ok` only when `tx` closed.
async fn session_once(
    ep: &Arc<OpcUaEndpoint>,
    client: &mut Client,
    tracker: &Arc<Mutex<Tracker>>,
    tx: &Sender<Sample>,
) -> Result<(), String> {
    let endpoint = pick_endpoint(ep, client).await?;
    let identity = identity(ep)?;
    let (session, event_loop) =
        client.connect_to_endpoint_directly(endpoint, identity).map_err(|e| format!("cannot connect: {e}"))?;
    let events = event_loop.enter();
    tokio::pin!(events);
    let mut subscription: Option<u32> = None;
    let mut setup: Option<futures::future::BoxFuture<'static, Result<u32, String>>> = None;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Err(status)) => return Err(format!("session ended: {status}")),
                Some(Ok(SessionPollResult::Reconnected(mode))) => {
                    info!(endpoint = %ep.id(), ?mode, "OPC UA session connected");
                    emit(tx, lock(tracker).session(true, None));
                    if matches!(mode, SessionConnectMode::NewSession(_)) || subscription.is_none() {
                        let old = subscription.take();
                        setup = Some(Box::pin(subscribe(session.clone(), ep.clone(), tracker.clone(), tx.clone(), old)));
                    } else {
                        // The subscription survived, but async-opcua 0.19 sends no Publish after a reconnect.
                        session.trigger_publish_now();
                    }
                }
                Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                    warn!(endpoint = %ep.id(), %status, "OPC UA connection lost");
                    setup = None;
                    emit(tx, lock(tracker).session(false, Some(format!("connection lost: {status}"))));
                }
                Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                    let mut msg = format!("reconnect failed: {status}");
                    if matches!(status, StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed) {
                        // The certificate may have changed since we connected: name it, then start over.
                        if let Err(e) = pick_endpoint(ep, client).await {
                            msg = e;
                        }
                        error!(endpoint = %ep.id(), error = %msg, "OPC UA server certificate rejected");
                    }
                    emit(tx, lock(tracker).session(false, Some(msg)));
                }
                Some(Ok(_)) => {}
            },
            r = async { if let Some(f) = setup.as_mut() { f.await } else { std::future::pending().await } }, if setup.is_some() => {
                setup = None;
                match r {
                    Ok(id) => subscription = Some(id),
                    Err(e) => {
                        warn!(endpoint = %ep.id(), error = %e, "cannot create the OPC UA subscription");
                        let _ = session.disconnect().await;
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Resolves the points' nodes and creates a fresh subscription with one monitored item per point.
async fn subscribe(
    session: Arc<Session>,
    ep: Arc<OpcUaEndpoint>,
    tracker: Arc<Mutex<Tracker>>,
    tx: Sender<Sample>,
    old: Option<u32>,
) -> Result<u32, String> {
    if let Some(id) = old {
        let _ = session.delete_subscription(id).await;
    }
    let refs: Vec<NodeRef> = ep.points.iter().filter_map(|p| parse_node(p.get_ref().node.get_ref()).ok()).collect();
    let namespaces =
        if refs.iter().any(|r| r.namespace_uri.is_some()) { read_namespaces(&session).await? } else { Vec::new() };
    let callback = {
        let (tracker, tx) = (tracker.clone(), tx.clone());
        DataChangeCallback::new(move |dv: DataValue, item: &MonitoredItem| {
            let Some(i) = (item.client_handle() as usize).checked_sub(1) else { return };
            emit(&tx, lock(&tracker).data(i, &dv));
        })
    };
    let id = session
        .create_subscription(ep.publishing_interval.get_ref().0, 60, 10, 0, 0, true, callback)
        .await
        .map_err(|e| format!("CreateSubscription failed: {e}"))?;
    let mut items = Vec::new();
    for (i, (p, r)) in ep.points.iter().zip(&refs).enumerate() {
        let p = p.get_ref();
        let mut node = r.node.clone();
        if let Some(uri) = &r.namespace_uri {
            let Some(ns) = namespaces.iter().position(|n| n == uri) else {
                error!(endpoint = %ep.id(), point = %p.name(), namespace = %uri, "namespace not on the server; point skipped");
                continue;
            };
            node.namespace = u16::try_from(ns).unwrap_or(u16::MAX);
        }
        let mut req: MonitoredItemCreateRequest = node.into();
        req.requested_parameters.client_handle = u32::try_from(i + 1).unwrap_or(u32::MAX);
        req.requested_parameters.sampling_interval = p.sampling.0.as_secs_f64() * 1000.0;
        req.requested_parameters.queue_size = 10;
        req.requested_parameters.discard_oldest = true;
        // Always an explicit filter: without one async-opcua reports value changes only, not status changes.
        let deadband = *p.deadband.get_ref();
        req.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValue,
            deadband_type: if deadband > 0.0 { DeadbandType::Absolute } else { DeadbandType::None } as u32,
            deadband_value: deadband,
        });
        items.push(req);
    }
    let results = session
        .create_monitored_items(id, TimestampsToReturn::Both, items.clone())
        .await
        .map_err(|e| format!("CreateMonitoredItems failed: {e}"))?;
    for (req, res) in items.iter().zip(results) {
        if res.result.status_code.is_bad() {
            let i = req.requested_parameters.client_handle as usize - 1;
            let name = ep.points.get(i).map_or("?", |p| p.get_ref().name());
            error!(endpoint = %ep.id(), point = %name, node = %req.item_to_monitor.node_id, status = %res.result.status_code, "server refused the monitored item");
            let dv = DataValue { status: Some(res.result.status_code), ..Default::default() };
            emit(&tx, lock(&tracker).data(i, &dv));
        }
    }
    session.trigger_publish_now();
    info!(endpoint = %ep.id(), subscription = id, points = ep.points.len(), "OPC UA subscription created");
    Ok(id)
}

async fn read_namespaces(session: &Session) -> Result<Vec<String>, String> {
    let read = ReadValueId {
        node_id: VariableId::Server_NamespaceArray.into(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    };
    let values = session
        .read(&[read], TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| format!("cannot read the server's namespace array: {e}"))?;
    match values.into_iter().next().and_then(|v| v.value) {
        Some(Variant::Array(a)) => Ok(a
            .values
            .into_iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_string(),
                _ => String::new(),
            })
            .collect()),
        other => Err(format!("the server's namespace array is not a string array: {other:?}")),
    }
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands samples to the detector without blocking the OPC UA event loop.
fn emit(tx: &Sender<Sample>, samples: Vec<Sample>) {
    for s in samples {
        if let Err(e) = tx.try_send(s) {
            if matches!(e, tokio::sync::mpsc::error::TrySendError::Full(_)) {
                error!("detector queue full: OPC UA sample dropped");
            }
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()))
        .unwrap_or(i64::MAX)
}

/// Converts an OPC UA value to a detector value; `None` for types a point cannot hold.
fn to_value(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int((*x).into()),
        Variant::Byte(x) => Value::Int((*x).into()),
        Variant::Int16(x) => Value::Int((*x).into()),
        Variant::UInt16(x) => Value::Int((*x).into()),
        Variant::Int32(x) => Value::Int((*x).into()),
        Variant::UInt32(x) => Value::Int((*x).into()),
        Variant::Int64(x) => Value::Int(*x),
        Variant::UInt64(x) => Value::Int(i64::try_from(*x).ok()?),
        Variant::Float(x) => Value::Float((*x).into()),
        Variant::Double(x) => Value::Float(*x),
        _ => return None,
    })
}

/// The link state of one endpoint, as a pure state machine: session events and data changes in,
/// samples out. The source is "connected" while the session is up and no point has a bad status.
#[derive(Debug)]
pub struct Tracker {
    source: String,
    assets: Vec<AssetId>,
    points: Vec<(String, AssetId)>,
    session_up: bool,
    bad: BTreeMap<usize, String>,
    reported: Option<bool>,
    last: Vec<Option<(i64, Value)>>,
}

impl Tracker {
    pub fn new(ep: &OpcUaEndpoint) -> Self {
        let points: Vec<(String, AssetId)> =
            ep.points.iter().map(|p| (p.get_ref().name().to_string(), p.get_ref().asset.clone())).collect();
        Self {
            source: ep.id().to_string(),
            assets: ep.assets(),
            last: vec![None; points.len()],
            points,
            session_up: false,
            bad: BTreeMap::new(),
            reported: None,
        }
    }

    /// The session came up or went down.
    pub fn session(&mut self, up: bool, error: Option<String>) -> Vec<Sample> {
        self.session_up = up;
        self.bad.clear();
        self.last.iter_mut().for_each(|l| *l = None);
        self.link(error, now_ms())
    }

    /// A data change notification for point `i`.
    pub fn data(&mut self, i: usize, dv: &DataValue) -> Vec<Sample> {
        let Some((name, asset)) = self.points.get(i).cloned() else { return Vec::new() };
        // A missing or absurd source time (a PLC whose clock was never set sends 1601 or 1970) falls back to the
        // server's, then to ours: the collector refuses times outside TS_RANGE_MS, so it would never be acked.
        let sane = |t: &DateTime| Some(t.as_chrono().timestamp_millis()).filter(|ms| TS_RANGE_MS.contains(ms));
        let ts_ms = dv
            .source_timestamp
            .as_ref()
            .and_then(sane)
            .or_else(|| dv.server_timestamp.as_ref().and_then(sane))
            .unwrap_or_else(now_ms);
        let status = dv.status.unwrap_or(StatusCode::Good);
        if status.is_bad() {
            self.last[i] = None;
            self.bad.insert(i, format!("point {name}: {status}"));
            return self.link(self.bad.values().next().cloned(), ts_ms);
        }
        let Some(value) = dv.value.as_ref().and_then(to_value) else {
            warn!(source = %self.source, point = %name, value = ?dv.value, "OPC UA value of an unsupported type ignored");
            return Vec::new();
        };
        self.last[i] = Some((ts_ms, value));
        self.bad.remove(&i);
        let before = self.reported;
        let mut out = self.link(None, ts_ms);
        match (before, self.reported) {
            // Back from bad quality: the detector forgot the source's values, so report every one again.
            (Some(false), Some(true)) => {
                for ((n, a), l) in self.points.iter().zip(&self.last) {
                    if let Some((ts, v)) = l {
                        out.push(self.sample(n, a, *ts, *v));
                    }
                }
            }
            (_, Some(true)) => out.push(self.sample(&name, &asset, ts_ms, value)),
            _ => {}
        }
        out
    }

    fn sample(&self, point: &str, asset: &AssetId, ts_ms: i64, value: Value) -> Sample {
        Sample::Value { source: self.source.clone(), point: point.to_string(), asset: asset.clone(), ts_ms, value }
    }

    fn link(&mut self, error: Option<String>, ts_ms: i64) -> Vec<Sample> {
        let connected = self.session_up && self.bad.is_empty();
        if self.reported == Some(connected) {
            return Vec::new();
        }
        self.reported = Some(connected);
        vec![Sample::Link {
            source: self.source.clone(),
            assets: self.assets.clone(),
            ts_ms,
            connected,
            error: if connected { None } else { error },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Section {
        opcua: Vec<Spanned<OpcUaEndpoint>>,
    }

    fn check(text: &str) -> Result<Vec<Spanned<OpcUaEndpoint>>, Vec<String>> {
        let file = ConfigFile::from_text("agent.toml", text);
        let section: Section = file.parse().map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        validate(&section.opcua, &file, &mut errors);
        if errors.is_empty() {
            Ok(section.opcua)
        } else {
            Err(errors.iter().map(ToString::to_string).collect())
        }
    }

    const POINT: &str = "[[opcua.points]]\nnode = \"ns=2;s=A.state\"\nasset = \"a1\"\nmeaning = \"info\"\n";

    #[test]
    fn the_documented_example_section_is_valid() {
        let text = include_str!("../../../config/agent.example.toml");
        let start = text.find("\n[[opcua]]\n").unwrap();
        let end = text.find("# END opcua examples").unwrap();
        let eps = check(&text[start..end]).unwrap();
        assert_eq!(eps[0].get_ref().points.len(), 5);
        let secret = Identity::User { name: "u".into(), password_file: None, password: Some("hunter2".into()) };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn bad_settings_are_reported_with_line_and_column() {
        let cases: &[(&str, &str)] = &[
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"http://x\"\nsecurity_policy = \"none\"\nsecurity_mode = \"none\"\n",
                "agent.toml:3:12: endpoint must look like opc.tcp://",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://10.0.0.5:4840/\"\nsecurity_policy = \"none\"\nsecurity_mode = \"none\"\n",
                "agent.toml:4:19: security_policy \"none\" sends plaintext to 10.0.0.5",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\nsecurity_mode = \"none\"\n",
                "agent.toml:4:17: security_mode \"none\" goes with security_policy \"none\"",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://h:4840/\"\nserver_fingerprint = \"abc\"\n",
                "agent.toml:4:22: server_fingerprint must be 64 hex digits",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://h:4840/\"\nidentity = { user = { name = \"u\" } }\n",
                "agent.toml:4:12: give exactly one of `password_file` (preferred) or `password`",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://h:4840/\"\n[[opcua.points]]\nnode = \"s=\"\nasset = \"a\"\nmeaning = \"info\"\n",
                "agent.toml:5:8: node \"s=\" is not a node id",
            ),
            (
                "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://h:4840/\"\n[[opcua.points]]\nnode = \"i=1\"\nasset = \"a\"\ndeadband = -1.0\nmeaning = \"info\"\n",
                "agent.toml:7:12: deadband must be a finite number >= 0",
            ),
            ("[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://h:4840/\"\n", "agent.toml:2:6: endpoint \"p\" has no points"),
        ];
        for (text, want) in cases {
            let text = if text.contains("[[opcua.points]]") || want.contains("no points") {
                text.to_string()
            } else {
                format!("{text}{POINT}")
            };
            let errs = check(&text).err().unwrap_or_default();
            assert!(errs.iter().any(|e| e.starts_with(want)), "want {want:?}, got {errs:#?}");
        }
    }

    #[test]
    fn node_ids_parse_with_namespace_uri_or_index() {
        let r = parse_node("nsu=urn:x:y;s=Line1.State").unwrap();
        assert_eq!(r.namespace_uri.as_deref(), Some("urn:x:y"));
        assert_eq!(r.node, NodeId::new(0, "Line1.State"));
        assert_eq!(parse_node("ns=3;i=17").unwrap().node, NodeId::new(3, 17u32));
        assert!(parse_node("nsu=urn:x;ns=2;s=a").is_err());
        assert!(parse_node("Line1.State").is_err());
    }

    #[test]
    fn fingerprints_parse_in_the_printed_form_and_plain_hex() {
        let printed = fingerprint(b"cert");
        assert_eq!(printed.len(), 32 * 3 - 1);
        let plain = printed.replace(':', "").to_lowercase();
        assert_eq!(parse_fingerprint(&printed), parse_fingerprint(&plain));
        assert!(parse_fingerprint(&format!("sha256:{plain}")).is_some());
        assert!(parse_fingerprint(&plain[2..]).is_none());
    }

    fn endpoint() -> OpcUaEndpoint {
        let text = format!(
            "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n{POINT}[[opcua.points]]\nnode = \"i=2\"\nname = \"b\"\nasset = \"a2\"\nmeaning = \"info\"\n"
        );
        check(&text).unwrap().remove(0).into_inner()
    }

    fn dv(v: u16, status: StatusCode) -> DataValue {
        DataValue { value: Some(Variant::UInt16(v)), status: Some(status), ..Default::default() }
    }

    fn links(out: &[Sample]) -> Vec<bool> {
        out.iter()
            .filter_map(|s| if let Sample::Link { connected, .. } = s { Some(*connected) } else { None })
            .collect()
    }

    #[test]
    fn a_bad_status_reports_the_source_lost_then_every_value_again() {
        let mut t = Tracker::new(&endpoint());
        assert_eq!(links(&t.session(true, None)), [true]);
        assert_eq!(t.data(0, &dv(1, StatusCode::Good)).len(), 1);
        assert_eq!(t.data(1, &dv(5, StatusCode::Good)).len(), 1);
        let out = t.data(0, &dv(1, StatusCode::BadDeviceFailure));
        let [Sample::Link { connected: false, error: Some(e), assets, .. }] = out.as_slice() else { panic!("{out:?}") };
        assert!(e.contains("BadDeviceFailure") && e.contains("ns=2;s=A.state"), "{e}");
        assert_eq!(assets.len(), 2);
        // Another bad point, or a good value of a good point, while lost: nothing reported.
        assert!(t.data(1, &dv(6, StatusCode::BadDeviceFailure)).is_empty());
        assert!(t.data(1, &dv(7, StatusCode::Good)).is_empty());
        // The last bad point recovers: link up, then both points' current values.
        let out = t.data(0, &dv(2, StatusCode::Good));
        assert_eq!(links(&out), [true]);
        assert_eq!(out.len(), 3, "{out:?}");
        // A lost session resets everything; it is reported once.
        assert_eq!(links(&t.session(false, Some("gone".into()))), [false]);
        assert!(t.session(false, Some("still gone".into())).is_empty());
    }

    #[test]
    fn an_absurd_source_time_falls_back_to_the_server_time_then_ours() {
        let sample_ts = |out: Vec<Sample>| match out.as_slice() {
            [Sample::Value { ts_ms, .. }] => *ts_ms,
            other => panic!("{other:?}"),
        };
        let mut t = Tracker::new(&endpoint());
        t.session(true, None);
        let server = DateTime::ymd_hms(2026, 11, 30, 6, 0, 0);
        // A PLC clock never set: OPC UA's null time (1601) or 1970.
        let never_set = DataValue {
            source_timestamp: Some(DateTime::null()),
            server_timestamp: Some(server),
            ..dv(1, StatusCode::Good)
        };
        assert_eq!(sample_ts(t.data(0, &never_set)), server.as_chrono().timestamp_millis());
        let before = now_ms();
        let both_bad = DataValue {
            source_timestamp: Some(DateTime::ymd(1970, 1, 1)),
            server_timestamp: Some(DateTime::null()),
            ..dv(2, StatusCode::Good)
        };
        let ts = sample_ts(t.data(0, &both_bad));
        assert!(ts >= before && TS_RANGE_MS.contains(&ts), "{ts}");
    }
}
