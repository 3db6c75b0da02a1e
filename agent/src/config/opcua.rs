//! `[[opcua]]` as written ([`RawOpcUaEndpoint`]) and its validation without I/O; [`RawOpcUaEndpoint::validated`]
//! makes the plain [`OpcUaEndpoint`] the source uses.

use crate::detect::Meaning;
use crate::source::opcua::{
    parse_fingerprint, AlarmIdFrom, AlarmSource, AssetRule, Identity, Mode, NodeRef, OpcUaEndpoint, OpcUaPoint, Policy,
    PriorityBand,
};
use opcua::types::NodeId;
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::AssetId;
use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One OPC UA endpoint (`[[opcua]]`) as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpcUaEndpoint {
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
    pub points: Vec<Spanned<RawOpcUaPoint>>,
    /// OPC UA Alarms & Conditions sources.
    #[serde(default)]
    pub alarms: Vec<Spanned<RawAlarmSource>>,
    /// The config file this came from, for the `trust` hint in messages (set by `Config::from_file`).
    #[serde(skip)]
    pub config_file: PathBuf,
}

/// `[[opcua.alarms]]` as written: an event subscription on a notifier, its conditions mapped to assets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarmSource {
    pub name: Option<String>,
    /// Default `i=2253` (the Server object).
    pub notifier: Option<Spanned<String>>,
    #[serde(default)]
    pub event_types: Vec<Spanned<String>>,
    #[serde(default = "one")]
    pub min_severity: Spanned<u16>,
    #[serde(default)]
    pub alarm_id: AlarmIdFrom,
    #[serde(default)]
    pub assets: Vec<Spanned<RawAssetRule>>,
    #[serde(default)]
    pub classes: std::collections::BTreeMap<String, String>,
    pub priorities: Option<Spanned<Vec<PriorityBand>>>,
}

/// `[[opcua.alarms.assets]]`: `source = "Press1"` (exact SourceName or SourceNode) or `pattern = "Press1.*"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssetRule {
    pub source: Option<String>,
    pub pattern: Option<String>,
    pub asset: AssetId,
}

fn one() -> Spanned<u16> {
    Spanned::new(0..0, 1)
}

/// One monitored item (`[[opcua.points]]`) as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpcUaPoint {
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

impl RawOpcUaPoint {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.node.get_ref())
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

impl RawOpcUaEndpoint {
    pub fn id(&self) -> &str {
        self.id.get_ref()
    }

    /// The validated endpoint (after [`validate`] passed; a point whose node does not parse is left out).
    pub fn validated(self) -> OpcUaEndpoint {
        OpcUaEndpoint {
            id: self.id.into_inner(),
            endpoint: self.endpoint.into_inner(),
            security_policy: self.security_policy.into_inner(),
            security_mode: self.security_mode.into_inner(),
            identity: self.identity.into_inner(),
            pki_dir: self.pki_dir,
            server_fingerprint: self.server_fingerprint.map(Spanned::into_inner),
            keep_alive: self.keep_alive.into_inner().0,
            request_timeout: self.request_timeout.into_inner().0,
            publishing_interval: self.publishing_interval.into_inner().0,
            points: self
                .points
                .into_iter()
                .filter_map(|p| {
                    let p = p.into_inner();
                    Some(OpcUaPoint {
                        node: parse_node(p.node.get_ref()).ok()?,
                        name: p.name().to_string(),
                        asset: p.asset,
                        sampling: p.sampling.0,
                        deadband: p.deadband.into_inner(),
                        meaning: p.meaning.into_inner(),
                    })
                })
                .collect(),
            alarms: self.alarms.into_iter().filter_map(|a| a.into_inner().validated()).collect(),
            config_file: self.config_file,
        }
    }
}

/// Validates every `[[opcua]]` section without I/O.
pub fn validate(endpoints: &[Spanned<RawOpcUaEndpoint>], file: &ConfigFile, errors: &mut Vec<ConfigError>) {
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
        if ep.points.is_empty() && ep.alarms.is_empty() {
            err(ep.id.span(), format!("endpoint {id:?} has no points: add [[opcua.points]] or [[opcua.alarms]]"));
        }
        let mut alarm_names = HashSet::new();
        for a in &ep.alarms {
            for (span, msg) in a.get_ref().problems(a.span()) {
                err(span, msg);
            }
            let name = a.get_ref().name.clone().unwrap_or_else(|| "alarms".into());
            if !alarm_names.insert(name.clone()) {
                err(a.span(), format!("alarm source {name:?} is defined twice in endpoint {id:?}: give each a `name`"));
            }
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

impl RawAlarmSource {
    /// Every problem of this section, each at its span (or the section's).
    fn problems(&self, outer: std::ops::Range<usize>) -> Vec<(std::ops::Range<usize>, String)> {
        let mut out = Vec::new();
        let mut node = |s: &Spanned<String>| {
            if let Err(e) = parse_node(s.get_ref()) {
                out.push((s.span(), e));
            }
        };
        self.notifier.iter().for_each(&mut node);
        self.event_types.iter().for_each(&mut node);
        if !(1..=1000).contains(self.min_severity.get_ref()) {
            out.push((span_in(&self.min_severity, outer.clone()), "min_severity must be between 1 and 1000".into()));
        }
        if self.assets.is_empty() {
            out.push((
                outer.clone(),
                "an alarm source needs [[opcua.alarms.assets]] (source or pattern → asset); unmapped alarms are not stored"
                    .into(),
            ));
        }
        for r in &self.assets {
            let rule = r.get_ref();
            match (&rule.source, &rule.pattern) {
                (Some(s), None) | (None, Some(s)) if !s.is_empty() => {}
                _ => out.push((r.span(), "give exactly one of `source` (exact) or `pattern` (with * and ?)".into())),
            }
        }
        for id in self.classes.keys() {
            if let Err(e) = parse_node(id) {
                out.push((outer.clone(), format!("classes: {e}")));
            }
        }
        if let Some(p) = &self.priorities {
            let bands = p.get_ref();
            if bands.is_empty() || bands.iter().any(|b| b.name.is_empty() || !(1..=1000).contains(&b.min_severity)) {
                out.push((p.span(), "priorities need a name and a min_severity between 1 and 1000 each".into()));
            } else if !bands.iter().any(|b| b.min_severity == 1) {
                out.push((p.span(), "one priority band must start at min_severity = 1, so every alarm has one".into()));
            }
        }
        out
    }

    /// The validated source (`None` when a node id does not parse; validation reported that).
    fn validated(self) -> Option<AlarmSource> {
        let notifier = match &self.notifier {
            Some(n) => parse_node(n.get_ref()).ok()?,
            None => NodeRef { namespace_uri: None, node: NodeId::new(0, 2253u32) },
        };
        let mut priorities = self.priorities.map(Spanned::into_inner).unwrap_or_else(PriorityBand::defaults);
        priorities.sort_by_key(|b| std::cmp::Reverse(b.min_severity));
        Some(AlarmSource {
            name: self.name.unwrap_or_else(|| "alarms".into()),
            notifier,
            event_types: self.event_types.iter().map(|t| parse_node(t.get_ref())).collect::<Result<_, _>>().ok()?,
            min_severity: self.min_severity.into_inner(),
            alarm_id: self.alarm_id,
            assets: self
                .assets
                .into_iter()
                .map(|r| {
                    let r = r.into_inner();
                    AssetRule { source: r.source, pattern: r.pattern, asset: r.asset }
                })
                .collect(),
            classes: self.classes.into_iter().collect(),
            priorities,
        })
    }
}

/// Parses a configured node id, with an optional `nsu=` namespace URI in front.
///
/// # Errors
/// A message naming the node and the accepted forms.
pub fn parse_node(s: &str) -> Result<NodeRef, String> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::opcua::fingerprint;

    #[derive(Deserialize)]
    struct Section {
        opcua: Vec<Spanned<RawOpcUaEndpoint>>,
    }

    pub(crate) fn check(text: &str) -> Result<Vec<Spanned<RawOpcUaEndpoint>>, Vec<String>> {
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

    pub(crate) const POINT: &str = "[[opcua.points]]\nnode = \"ns=2;s=A.state\"\nasset = \"a1\"\nmeaning = \"info\"\n";

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
    fn alarm_sources_are_checked_with_line_and_column() {
        let base = "[[opcua]]\nid = \"p\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\nsecurity_policy = \"none\"\nsecurity_mode = \"none\"\n";
        let ok = format!("{base}[[opcua.alarms]]\n[[opcua.alarms.assets]]\nsource = \"Press1\"\nasset = \"press1\"\n");
        let eps = check(&ok).unwrap();
        let ep = eps[0].clone().into_inner().validated();
        assert_eq!(ep.alarms[0].priorities.iter().map(|b| b.min_severity).collect::<Vec<_>>(), [667, 334, 1]);
        assert_eq!(ep.assets().len(), 1, "an endpoint with alarms only feeds the mapped assets");
        let cases: &[(&str, &str)] = &[
            ("[[opcua.alarms]]\nmin_severity = 0\n[[opcua.alarms.assets]]\nsource = \"a\"\nasset = \"a\"\n", "agent.toml:7:16: min_severity must be between 1 and 1000"),
            ("[[opcua.alarms]]\nnotifier = \"Server\"\n[[opcua.alarms.assets]]\nsource = \"a\"\nasset = \"a\"\n", "agent.toml:7:12: node \"Server\" is not a node id"),
            ("[[opcua.alarms]]\nname = \"x\"\n", "agent.toml:6:1: an alarm source needs [[opcua.alarms.assets]]"),
            ("[[opcua.alarms]]\n[[opcua.alarms.assets]]\nasset = \"a\"\n", "agent.toml:7:1: give exactly one of `source` (exact) or `pattern`"),
            ("[[opcua.alarms]]\npriorities = [{ name = \"high\", min_severity = 500 }]\n[[opcua.alarms.assets]]\nsource = \"a\"\nasset = \"a\"\n", "agent.toml:7:14: one priority band must start at min_severity = 1"),
        ];
        for (extra, want) in cases {
            let errs = check(&format!("{base}{extra}")).err().unwrap_or_default();
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
}
