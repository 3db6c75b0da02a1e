//! OPC UA Alarms & Conditions (Part 9), the pure half: the event filter the agent asks for, and a
//! [`Conditions`] tracker that turns condition events into alarm samples (no I/O).
//!
//! Invariants:
//! - Conditions are keyed by ConditionId + BranchId. Only the main branch (no BranchId) makes alarm samples;
//!   branches (previous states still waiting for an acknowledgement) are counted, never reported as alarms.
//! - A sample is made only when what the wire carries changes: active, acked, shelved, suppressed, severity or
//!   text. A condition seen for the first time inactive makes none, unless the outbox says it was last reported
//!   active (restored at start), in which case its clear is reported.
//! - Between RefreshStart and RefreshEnd (ConditionRefresh, on every new subscription) the server re-sends
//!   every retained condition; at RefreshEnd each condition last reported active that the refresh did not
//!   mention is cleared (stamped with the RefreshEnd time): it cleared while the link was down.
//! - A condition whose source maps to no asset is counted; the first one of each source name is reported
//!   (`Sample::Unmapped`, logged at WARN once), the rest only counted.

use super::{AlarmIdFrom, AlarmSource};
use crate::detect::Sample;
use opcua::types::{
    AttributeId, ContentFilter, ContentFilterBuilder, DateTime, EventFilter, NodeId, ObjectTypeId, Operand,
    SimpleAttributeOperand, Variant,
};
use shiftlens_common::clock::now_ms;
use shiftlens_common::{Alarm, AssetId, TS_RANGE_MS};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The fields the agent selects, in this order: (declaring type, browse path; empty = the node itself).
pub const SELECT: [(ObjectTypeId, &str); 19] = [
    (ObjectTypeId::BaseEventType, "EventId"),
    (ObjectTypeId::BaseEventType, "EventType"),
    (ObjectTypeId::BaseEventType, "SourceNode"),
    (ObjectTypeId::BaseEventType, "SourceName"),
    (ObjectTypeId::BaseEventType, "Time"),
    (ObjectTypeId::BaseEventType, "ReceiveTime"),
    (ObjectTypeId::BaseEventType, "Severity"),
    (ObjectTypeId::BaseEventType, "Message"),
    (ObjectTypeId::ConditionType, ""),
    (ObjectTypeId::ConditionType, "ConditionName"),
    (ObjectTypeId::BaseEventType, "ConditionClassId"),
    (ObjectTypeId::ConditionType, "BranchId"),
    (ObjectTypeId::ConditionType, "Retain"),
    (ObjectTypeId::ConditionType, "EnabledState/Id"),
    (ObjectTypeId::AlarmConditionType, "ActiveState/Id"),
    (ObjectTypeId::AcknowledgeableConditionType, "AckedState/Id"),
    (ObjectTypeId::AcknowledgeableConditionType, "ConfirmedState/Id"),
    (ObjectTypeId::AlarmConditionType, "ShelvingState/CurrentState"),
    (ObjectTypeId::AlarmConditionType, "SuppressedOrShelved"),
];

/// The select clauses of [`SELECT`]: `Value` of each property, `NodeId` of the condition itself (ConditionId).
pub fn select_clauses() -> Vec<SimpleAttributeOperand> {
    SELECT
        .iter()
        .map(|(ty, path)| {
            if path.is_empty() {
                SimpleAttributeOperand {
                    type_definition_id: (*ty).into(),
                    browse_path: Some(Vec::new()),
                    attribute_id: AttributeId::NodeId as u32,
                    index_range: Default::default(),
                }
            } else {
                SimpleAttributeOperand::new_value(*ty, path)
            }
        })
        .collect()
}

/// The where clause: RefreshStart and RefreshEnd always; otherwise events of the configured types (default
/// every condition) with at least the configured severity.
///
/// Elements: 0 = OR(1, 2); 1 = OfType(RefreshStart); 2 = OR(3, 4); 3 = OfType(RefreshEnd); 4 = AND(5, 6);
/// 5 = Severity >= min; 6.. = the types, as OR(k+1, k+2), OfType(t) pairs ending in one OfType.
pub fn where_clause(event_types: &[NodeId], min_severity: u16) -> ContentFilter {
    let types: Vec<NodeId> =
        if event_types.is_empty() { vec![ObjectTypeId::ConditionType.into()] } else { event_types.to_vec() };
    let severity = SimpleAttributeOperand::new_value(ObjectTypeId::BaseEventType, "Severity");
    let mut b = ContentFilterBuilder::new()
        .or(Operand::element(1), Operand::element(2))
        .of_type(Operand::literal(ObjectTypeId::RefreshStartEventType))
        .or(Operand::element(3), Operand::element(4))
        .of_type(Operand::literal(ObjectTypeId::RefreshEndEventType))
        .and(Operand::element(5), Operand::element(6))
        .gte(severity, Operand::literal(min_severity));
    let mut at = 6u32;
    for (i, t) in types.iter().enumerate() {
        if i + 1 == types.len() {
            b = b.of_type(Operand::literal(t.clone()));
        } else {
            b = b.or(Operand::element(at + 1), Operand::element(at + 2)).of_type(Operand::literal(t.clone()));
            at += 2;
        }
    }
    b.build()
}

/// The event filter for one `[[opcua.alarms]]` source; `event_types` resolved to this session's indexes.
pub fn event_filter(src: &AlarmSource, event_types: &[NodeId]) -> EventFilter {
    EventFilter { select_clauses: Some(select_clauses()), where_clause: where_clause(event_types, src.min_severity) }
}

/// One condition event, its fields named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConditionEvent {
    pub event_type: Option<NodeId>,
    pub source_node: Option<NodeId>,
    pub source_name: String,
    pub time_ms: Option<i64>,
    pub receive_time_ms: Option<i64>,
    pub severity: u16,
    pub message: String,
    pub condition_id: Option<NodeId>,
    pub condition_name: String,
    pub condition_class: Option<NodeId>,
    pub branch_id: Option<NodeId>,
    pub retain: bool,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub acked: Option<bool>,
    pub confirmed: Option<bool>,
    /// `ShelvingState/CurrentState` as text (`Unshelved`, `TimedShelved`, `OneShotShelved`), when present.
    pub shelving: Option<String>,
    pub suppressed_or_shelved: Option<bool>,
}

impl ConditionEvent {
    /// Names the fields of an event notification. `valid` lists, per [`SELECT`] clause, whether the server
    /// accepted it: a server that drops refused clauses (async-opcua does) sends fewer fields, which are then
    /// matched to the accepted clauses in order. `None` for a notification without fields.
    pub fn parse(fields: Option<Vec<Variant>>, valid: &[bool]) -> Option<Self> {
        let fields = fields?;
        let mut named: Vec<Variant> = vec![Variant::Empty; SELECT.len()];
        if fields.len() == SELECT.len() {
            named = fields;
        } else {
            let slots = (0..SELECT.len()).filter(|&i| valid.get(i).copied().unwrap_or(true));
            for (slot, v) in slots.zip(fields) {
                named[slot] = v;
            }
        }
        let node = |v: &Variant| match v {
            Variant::NodeId(n) if !n.is_null() => Some((**n).clone()),
            Variant::ExpandedNodeId(n) if !n.node_id.is_null() => Some(n.node_id.clone()),
            _ => None,
        };
        let text = |v: &Variant| match v {
            Variant::String(s) => s.as_ref().to_string(),
            Variant::LocalizedText(t) => t.text.as_ref().to_string(),
            Variant::QualifiedName(q) => q.name.as_ref().to_string(),
            _ => String::new(),
        };
        let flag = |v: &Variant| match v {
            Variant::Boolean(b) => Some(*b),
            _ => None,
        };
        let time = |v: &Variant| match v {
            Variant::DateTime(t) => {
                Some(t.as_chrono().timestamp_millis()).filter(|ms| TS_RANGE_MS.contains(ms) && **t != DateTime::null())
            }
            _ => None,
        };
        let severity = match &named[6] {
            Variant::UInt16(s) => *s,
            Variant::UInt32(s) => u16::try_from(*s).unwrap_or(1000),
            Variant::Int32(s) => u16::try_from(*s).unwrap_or(0),
            _ => 0,
        };
        let shelving = match &named[17] {
            Variant::LocalizedText(t) => Some(t.text.as_ref().to_string()),
            Variant::String(s) => Some(s.as_ref().to_string()),
            _ => None,
        };
        Some(Self {
            event_type: node(&named[1]),
            source_node: node(&named[2]),
            source_name: text(&named[3]),
            time_ms: time(&named[4]),
            receive_time_ms: time(&named[5]),
            severity,
            message: text(&named[7]),
            condition_id: node(&named[8]),
            condition_name: text(&named[9]),
            condition_class: node(&named[10]),
            branch_id: node(&named[11]),
            retain: flag(&named[12]).unwrap_or(false),
            enabled: flag(&named[13]),
            active: flag(&named[14]),
            acked: flag(&named[15]),
            confirmed: flag(&named[16]),
            shelving,
            suppressed_or_shelved: flag(&named[18]),
        })
    }

    fn is(&self, ty: ObjectTypeId) -> bool {
        let want: NodeId = ty.into();
        self.event_type.as_ref() == Some(&want)
    }

    /// The condition's key: ConditionId (or, from a server that does not send it, SourceNode + ConditionName)
    /// and BranchId.
    fn key(&self) -> (String, String) {
        let id = match &self.condition_id {
            Some(id) => id.to_string(),
            None => format!(
                "{}/{}",
                self.source_node.as_ref().map(ToString::to_string).unwrap_or_else(|| self.source_name.clone()),
                self.condition_name
            ),
        };
        (id, self.branch_id.as_ref().map(ToString::to_string).unwrap_or_default())
    }
}

/// Matches `text` against a pattern with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What was last reported of one condition.
#[derive(Debug, Clone)]
struct Known {
    asset: AssetId,
    alarm: Alarm,
}

/// The conditions of one `[[opcua.alarms]]` source as the agent last reported them.
#[derive(Debug)]
pub struct Conditions {
    source: String,
    config: AlarmSource,
    known: HashMap<(String, String), Known>,
    /// Alarm ids last stored as active, from the outbox, until the condition is seen again.
    restored: HashMap<String, (AssetId, bool)>,
    /// Keys seen since RefreshStart, while a refresh runs.
    refreshing: Option<HashSet<(String, String)>>,
    /// Events whose source maps to no asset, by source name.
    unmapped: BTreeMap<String, u64>,
    branches: u64,
}

impl Conditions {
    /// `source` is the endpoint id; `reported` the alarm flags last stored (see [`crate::Reported`]).
    pub fn new(source: &str, config: AlarmSource, reported: &crate::Reported) -> Self {
        let assets: HashSet<&AssetId> = config.assets.iter().map(|r| &r.asset).collect();
        let restored = reported
            .iter()
            .filter(|(a, _)| assets.contains(a))
            .flat_map(|(a, m)| m.iter().map(move |(id, on)| (id.clone(), (a.clone(), *on))))
            .collect();
        Self {
            source: source.to_string(),
            config,
            known: HashMap::new(),
            restored,
            refreshing: None,
            unmapped: BTreeMap::new(),
            branches: 0,
        }
    }

    /// Events from sources mapped to no asset, by source name (for `probe` and tests).
    pub fn unmapped(&self) -> &BTreeMap<String, u64> {
        &self.unmapped
    }

    /// The conditions reported active now: (asset, alarm).
    pub fn active(&self) -> Vec<(AssetId, Alarm)> {
        let mut v: Vec<(AssetId, Alarm)> =
            self.known.values().filter(|k| k.alarm.active).map(|k| (k.asset.clone(), k.alarm.clone())).collect();
        v.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        v
    }

    /// The asset a condition's source maps to: by name or pattern, SourceName first, then SourceNode.
    pub fn asset_of(&self, source_name: &str, source_node: Option<&NodeId>) -> Option<AssetId> {
        let node = source_node.map(ToString::to_string);
        let candidates = std::iter::once(source_name).chain(node.as_deref());
        for text in candidates.filter(|t| !t.is_empty()) {
            if let Some(rule) = self.config.assets.iter().find(|r| r.matches(text)) {
                return Some(rule.asset.clone());
            }
        }
        None
    }

    /// The priority band of a severity (bands sorted from the highest minimum down).
    pub fn priority(&self, severity: u16) -> Option<String> {
        self.config.priorities.iter().find(|b| severity >= b.min_severity).map(|b| b.name.clone())
    }

    /// One event notification in; alarm samples out.
    pub fn event(&mut self, ev: ConditionEvent) -> Vec<Sample> {
        if ev.is(ObjectTypeId::RefreshStartEventType) {
            self.refreshing = Some(HashSet::new());
            return Vec::new();
        }
        if ev.is(ObjectTypeId::RefreshEndEventType) {
            let ts_ms = ev.time_ms.unwrap_or_else(now_ms);
            return self.refresh_end(ts_ms);
        }
        let key = ev.key();
        if let Some(seen) = self.refreshing.as_mut() {
            seen.insert(key.clone());
        }
        if !key.1.is_empty() {
            self.branches += 1;
            return Vec::new();
        }
        if ev.severity < self.config.min_severity {
            return Vec::new();
        }
        let Some(asset) = self.asset_of(&ev.source_name, ev.source_node.as_ref()) else {
            return self.unmapped_source(&ev);
        };
        let ts_ms = ev.time_ms.or(ev.receive_time_ms).unwrap_or_else(now_ms);
        let shelved = ev.shelving.as_deref().map(|s| !s.is_empty() && !s.eq_ignore_ascii_case("Unshelved"));
        let alarm = Alarm {
            id: match self.config.alarm_id {
                AlarmIdFrom::ConditionId => key.0.clone(),
                AlarmIdFrom::ConditionName if !ev.condition_name.is_empty() => ev.condition_name.clone(),
                AlarmIdFrom::ConditionName => key.0.clone(),
            },
            // A disabled condition is not active, whatever its last ActiveState.
            active: ev.active.unwrap_or(false) && ev.enabled != Some(false),
            severity: ev.severity.clamp(1, 1000),
            text: ev.message.clone(),
            class: ev
                .condition_class
                .as_ref()
                .and_then(|c| self.config.classes.iter().find(|(id, _)| *id == c.to_string()))
                .map(|(_, class)| class.clone()),
            priority: self.priority(ev.severity),
            acked: ev.acked,
            shelved,
            suppressed: ev.suppressed_or_shelved.map(|s| s && shelved != Some(true)),
        };
        let sample = |alarm: &Alarm| Sample::Alarm {
            source: self.source.clone(),
            asset: asset.clone(),
            ts_ms,
            alarm: alarm.clone(),
        };
        let out = match self.known.get(&key) {
            Some(k) if same(&k.alarm, &alarm) => Vec::new(),
            Some(_) => vec![sample(&alarm)],
            None => match self.restored.remove(&alarm.id) {
                Some((_, was)) if was == alarm.active => Vec::new(),
                Some(_) => vec![sample(&alarm)],
                None if alarm.active => vec![sample(&alarm)],
                None => Vec::new(),
            },
        };
        if !alarm.active && !ev.retain {
            self.known.remove(&key);
        } else {
            self.known.insert(key, Known { asset, alarm });
        }
        out
    }

    fn unmapped_source(&mut self, ev: &ConditionEvent) -> Vec<Sample> {
        let name = if ev.source_name.is_empty() {
            ev.source_node.as_ref().map(ToString::to_string).unwrap_or_else(|| "(no source)".into())
        } else {
            ev.source_name.clone()
        };
        let count = self.unmapped.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Vec::new();
        }
        tracing::warn!(
            endpoint = %self.source,
            alarms = %self.config.name,
            alarm_source = %name,
            condition = %ev.condition_name,
            "OPC UA alarm from a source mapped to no asset: counted, not stored; add it to [[opcua.alarms.assets]]"
        );
        vec![Sample::Unmapped { source: self.source.clone(), from: name }]
    }

    /// Clears every condition last reported active that the refresh did not mention.
    fn refresh_end(&mut self, ts_ms: i64) -> Vec<Sample> {
        let Some(seen) = self.refreshing.take() else { return Vec::new() };
        let mut out = Vec::new();
        let gone: Vec<(String, String)> = self.known.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            if let Some(k) = self.known.remove(&key) {
                if k.alarm.active {
                    let alarm = Alarm { active: false, ..k.alarm };
                    out.push(Sample::Alarm { source: self.source.clone(), asset: k.asset, ts_ms, alarm });
                }
            }
        }
        // Restored as active and not in the refresh: it cleared while the agent was away.
        for (id, (asset, was)) in std::mem::take(&mut self.restored) {
            if was {
                let alarm = Alarm { id, active: false, severity: 1, ..Default::default() };
                out.push(Sample::Alarm { source: self.source.clone(), asset, ts_ms, alarm });
            }
        }
        out.push(Sample::Refreshed {
            source: self.source.clone(),
            active: self.active(),
            unmapped: self.unmapped.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        });
        out
    }
}

/// Whether two alarm states carry the same on the wire (the text may be re-sent unchanged).
fn same(a: &Alarm, b: &Alarm) -> bool {
    (a.active, a.acked, a.shelved, a.suppressed, a.severity, &a.text, &a.id)
        == (b.active, b.acked, b.shelved, b.suppressed, b.severity, &b.text, &b.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::opcua::{AssetRule, PriorityBand};

    fn source() -> AlarmSource {
        AlarmSource {
            name: "alarms".into(),
            notifier: crate::source::opcua::NodeRef { namespace_uri: None, node: NodeId::new(0, 2253u32) },
            event_types: Vec::new(),
            min_severity: 1,
            alarm_id: AlarmIdFrom::ConditionId,
            assets: vec![
                AssetRule { source: Some("Press1".into()), pattern: None, asset: AssetId::parse("press1").unwrap() },
                AssetRule { source: None, pattern: Some("Line2.*".into()), asset: AssetId::parse("line2").unwrap() },
            ],
            classes: vec![("i=11164".into(), "process".into())],
            priorities: PriorityBand::defaults(),
        }
    }

    fn ev(name: &str, active: bool, acked: bool) -> ConditionEvent {
        ConditionEvent {
            event_type: Some(ObjectTypeId::OffNormalAlarmType.into()),
            source_name: "Press1".into(),
            time_ms: Some(1_800_000_000_000),
            severity: 700,
            message: format!("{name} text"),
            condition_id: Some(NodeId::new(2, format!("Press1.{name}"))),
            condition_name: name.into(),
            condition_class: Some(ObjectTypeId::ProcessConditionClassType.into()),
            retain: active || !acked,
            enabled: Some(true),
            active: Some(active),
            acked: Some(acked),
            shelving: Some("Unshelved".into()),
            suppressed_or_shelved: Some(false),
            ..Default::default()
        }
    }

    fn refresh(end: bool) -> ConditionEvent {
        let ty = if end { ObjectTypeId::RefreshEndEventType } else { ObjectTypeId::RefreshStartEventType };
        ConditionEvent { event_type: Some(ty.into()), time_ms: Some(1_800_000_001_000), ..Default::default() }
    }

    fn alarms(out: &[Sample]) -> Vec<(String, bool, Option<bool>)> {
        out.iter()
            .filter_map(|s| match s {
                Sample::Alarm { alarm, .. } => Some((alarm.id.clone(), alarm.active, alarm.acked)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_changes_make_samples_and_the_mapping_fills_priority_and_class() {
        let mut c = Conditions::new("scada", source(), &crate::Reported::new());
        let out = c.event(ev("Hot", true, false));
        let [Sample::Alarm { asset, alarm, ts_ms, .. }] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!((asset.as_str(), alarm.id.as_str(), *ts_ms), ("press1", "ns=2;s=Press1.Hot", 1_800_000_000_000));
        assert_eq!((alarm.priority.as_deref(), alarm.class.as_deref()), (Some("high"), Some("process")));
        assert!(c.event(ev("Hot", true, false)).is_empty(), "the same state again is no event");
        assert_eq!(alarms(&c.event(ev("Hot", true, true))), [("ns=2;s=Press1.Hot".into(), true, Some(true))]);
        assert_eq!(alarms(&c.event(ev("Hot", false, true))), [("ns=2;s=Press1.Hot".into(), false, Some(true))]);
        // First seen inactive: nothing to report. A branch is never an alarm of its own.
        assert!(c.event(ev("Cold", false, false)).is_empty());
        let branch = ConditionEvent { branch_id: Some(NodeId::new(2, 77u32)), ..ev("Hot", true, false) };
        assert!(c.event(branch).is_empty());
        assert_eq!(c.priority(400).as_deref(), Some("medium"));
        assert_eq!(c.priority(1).as_deref(), Some("low"));
    }

    #[test]
    fn refresh_end_clears_what_the_refresh_did_not_mention() {
        let mut c = Conditions::new("scada", source(), &crate::Reported::new());
        c.event(ev("A", true, false));
        c.event(ev("B", true, false));
        assert!(c.event(refresh(false)).is_empty());
        assert!(c.event(ev("B", true, false)).is_empty(), "B unchanged");
        let out = c.event(refresh(true));
        assert_eq!(alarms(&out), [("ns=2;s=Press1.A".into(), false, Some(false))]);
        let Some(Sample::Refreshed { active, .. }) = out.last() else { panic!("{out:?}") };
        assert_eq!(active.iter().map(|(_, a)| a.id.as_str()).collect::<Vec<_>>(), ["ns=2;s=Press1.B"]);
    }

    #[test]
    fn after_a_restart_the_outbox_flags_decide_what_is_reported() {
        let press1 = AssetId::parse("press1").unwrap();
        let mut reported = crate::Reported::new();
        let flags = [("ns=2;s=Press1.Still".to_string(), true), ("ns=2;s=Press1.Gone".to_string(), true)];
        reported.insert(press1.clone(), flags.into_iter().collect());
        let mut c = Conditions::new("scada", source(), &reported);
        c.event(refresh(false));
        assert!(c.event(ev("Still", true, false)).is_empty(), "already reported active");
        assert_eq!(alarms(&c.event(refresh(true))), [("ns=2;s=Press1.Gone".into(), false, None)]);
    }

    #[test]
    fn unmapped_sources_are_counted_and_reported_once_each() {
        let mut c = Conditions::new("scada", source(), &crate::Reported::new());
        let other = |n: &str| ConditionEvent { source_name: "Mixer9".into(), ..ev(n, true, false) };
        assert!(matches!(c.event(other("X")).as_slice(), [Sample::Unmapped { from, .. }] if from == "Mixer9"));
        assert!(c.event(other("Y")).is_empty());
        assert!(c.event(other("X")).is_empty());
        assert_eq!(c.unmapped().get("Mixer9"), Some(&3));
        let line = ConditionEvent { source_name: "Line2.Filler".into(), ..ev("Z", true, false) };
        assert!(matches!(c.event(line).as_slice(), [Sample::Alarm { asset, .. }] if asset.as_str() == "line2"));
    }

    #[test]
    fn fields_from_a_server_that_drops_refused_clauses_are_matched_to_the_accepted_ones() {
        let mut valid = vec![true; SELECT.len()];
        valid[8] = false; // ConditionId refused
        let mut fields: Vec<Variant> = vec![Variant::Empty; SELECT.len() - 1];
        fields[3] = Variant::from("Press1");
        fields[8] = Variant::from("Hot"); // ConditionName, one slot earlier
        let e = ConditionEvent::parse(Some(fields), &valid).unwrap();
        assert_eq!((e.source_name.as_str(), e.condition_name.as_str(), e.condition_id), ("Press1", "Hot", None));
        assert!(ConditionEvent::parse(None, &valid).is_none());
    }

    #[test]
    fn glob_patterns_match_like_shell_patterns() {
        for (p, t, want) in [
            ("Line2.*", "Line2.Filler", true),
            ("Line2.*", "Line3.Filler", false),
            ("*Press?", "Hall1.Press7", true),
            ("*Press?", "Hall1.Press17", false),
            ("exact", "exact", true),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} {t}");
        }
    }
}
