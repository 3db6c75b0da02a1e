//! OPC UA source: the validated `[[opcua]]` types here (written form and validation in
//! [`crate::config::opcua`]); [`trust`] (server certificates),
//! [`session`] (the task per endpoint: connect, subscribe, follow the event loop) and [`tracker`] (pure: data
//! changes and session events → samples).
//!
//! Invariants:
//! - The server certificate is trusted only explicitly (see [`trust`]).
//! - A half-open link is noticed within seconds: keep-alive reads every `keep_alive`, each bounded by
//!   `request_timeout`, and three failures close the session.
//! - Sessions retry forever and re-subscribe on every new session (see [`session`]).
//! - A bad status marks the source lost until every point is good again (see [`tracker`]).

pub mod conditions;
pub mod session;
pub mod tracker;
pub mod trust;

pub use session::{spawn, spawn_restored};
pub use tracker::Tracker;
pub use trust::{cert_info, fingerprint, parse_fingerprint, CertInfo};

use crate::detect::{Meaning, PointSpec};
use opcua::crypto::SecurityPolicy;
use opcua::types::{MessageSecurityMode, NodeId};
use serde::Deserialize;
use shiftlens_common::AssetId;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A validated OPC UA endpoint, as the session task, `probe` and `trust` use it.
#[derive(Debug, Clone)]
pub struct OpcUaEndpoint {
    pub id: String,
    /// `opc.tcp://host:port/path`; this host and port are used even when the server advertises others.
    pub endpoint: String,
    pub security_policy: Policy,
    pub security_mode: Mode,
    pub identity: Identity,
    pub pki_dir: PathBuf,
    /// The pinned SHA-256 fingerprint of the server certificate, as written.
    pub server_fingerprint: Option<String>,
    pub keep_alive: Duration,
    pub request_timeout: Duration,
    pub publishing_interval: Duration,
    pub points: Vec<OpcUaPoint>,
    /// Alarms & Conditions sources (`[[opcua.alarms]]`).
    pub alarms: Vec<AlarmSource>,
    /// The config file this came from, for the `trust` hint in messages.
    pub config_file: PathBuf,
}

/// A validated `[[opcua.alarms]]`: one event monitored item on `notifier`, its conditions mapped to assets.
#[derive(Debug, Clone)]
pub struct AlarmSource {
    /// Names the source in logs and `probe` (default `alarms`).
    pub name: String,
    /// The object whose events are subscribed (default the Server object, `i=2253`).
    pub notifier: NodeRef,
    /// Only events of these types (and subtypes); empty = every condition.
    pub event_types: Vec<NodeRef>,
    /// Only events with at least this severity (1-1000).
    pub min_severity: u16,
    pub alarm_id: AlarmIdFrom,
    /// SourceName / SourceNode → asset, first match wins.
    pub assets: Vec<AssetRule>,
    /// ConditionClassId (as written, `i=11164`) → alarm class.
    pub classes: Vec<(String, String)>,
    /// Severity → priority band, from the highest minimum down.
    pub priorities: Vec<PriorityBand>,
}

/// Where an A&C alarm's id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmIdFrom {
    /// The ConditionId node id (`ns=2;s=Press1.Overtemp`): unique per server.
    #[default]
    ConditionId,
    /// The ConditionName (`Overtemp`): short, unique per source at best.
    ConditionName,
}

/// One asset mapping: an exact SourceName / SourceNode, or a pattern with `*` and `?`.
#[derive(Debug, Clone)]
pub struct AssetRule {
    pub source: Option<String>,
    pub pattern: Option<String>,
    pub asset: AssetId,
}

impl AssetRule {
    pub fn matches(&self, text: &str) -> bool {
        self.source.as_deref() == Some(text) || self.pattern.as_deref().is_some_and(|p| conditions::glob(p, text))
    }
}

/// A priority band: severities from `min_severity` up (to the next band) are `name`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityBand {
    pub name: String,
    pub min_severity: u16,
}

impl PriorityBand {
    /// ISA-18.2 style: high 667-1000, medium 334-666, low 1-333.
    pub fn defaults() -> Vec<Self> {
        [("high", 667), ("medium", 334), ("low", 1)]
            .into_iter()
            .map(|(name, min_severity)| Self { name: name.into(), min_severity })
            .collect()
    }
}

/// A validated monitored item.
#[derive(Debug, Clone)]
pub struct OpcUaPoint {
    pub node: NodeRef,
    /// The point's name in samples and `probe` (the node as written unless named).
    pub name: String,
    pub asset: AssetId,
    pub sampling: Duration,
    /// Absolute deadband for numeric values; 0 reports every change.
    pub deadband: f64,
    pub meaning: Meaning,
}

impl OpcUaEndpoint {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The assets this endpoint feeds (points, then alarm mappings), each once.
    pub fn assets(&self) -> Vec<AssetId> {
        let mut seen = HashSet::new();
        let alarms = self.alarms.iter().flat_map(|a| a.assets.iter().map(|r| r.asset.clone()));
        self.points.iter().map(|p| p.asset.clone()).chain(alarms).filter(|a| seen.insert(a.clone())).collect()
    }

    /// The points as the detector sees them.
    pub fn point_specs(&self) -> Vec<PointSpec> {
        self.points
            .iter()
            .map(|p| PointSpec {
                source: self.id.clone(),
                point: p.name.clone(),
                asset: p.asset.clone(),
                meaning: p.meaning.clone(),
            })
            .collect()
    }

    pub(crate) fn policy(&self) -> SecurityPolicy {
        match self.security_policy {
            Policy::None => SecurityPolicy::None,
            Policy::Basic256sha256 => SecurityPolicy::Basic256Sha256,
        }
    }

    pub(crate) fn mode(&self) -> MessageSecurityMode {
        match self.security_mode {
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

/// A configured node: a namespace URI to resolve on every connect (or none) and the node id with its index.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRef {
    pub namespace_uri: Option<String>,
    pub node: NodeId,
}
