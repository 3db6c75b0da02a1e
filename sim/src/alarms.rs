//! OPC UA Alarms & Conditions for the simulated plant: the plant's [`Condition`]s as condition events on the
//! Server object, and `ConditionRefresh` answered per subscription.
//!
//! Each condition is `{asset-or-source}.{name}` in the plant namespace (its ConditionId); its events carry the
//! fields a SCADA server sends (Part 9): EventType (`AlarmConditionType` or `OffNormalAlarmType`), SourceNode,
//! SourceName, Time, Severity, Message, ConditionName, ConditionClassId (`ProcessConditionClassType`), Retain,
//! EnabledState, ActiveState, AckedState, ConfirmedState, ShelvingState/CurrentState and SuppressedOrShelved.
//! A change of a condition (raised, cleared, acknowledged, shelved, suppressed) is one event. `ConditionRefresh`
//! sends RefreshStart, every retained condition, then RefreshEnd, to the calling subscription only. async-opcua
//! 0.19 has no condition model of its own, so the events are plain [`Event`] implementations here.

use crate::plant::{Condition, ConditionKind};
use async_trait::async_trait;
use opcua::nodes::{DefaultTypeTree, Event, TypeTree};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::{MethodCall, NodeManager, NodeManagerBuilder, RequestContext, ServerContext};
use opcua::types::{
    event_field::EventField, AttributeId, ByteString, DateTime, LocalizedText, MethodId, NodeClass, NodeId,
    NumericRange, ObjectId, ObjectTypeId, QualifiedName, StatusCode, UAString, Variant,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static EVENT_SEQ: AtomicU64 = AtomicU64::new(1);

/// One event: a condition's state, or RefreshStart / RefreshEnd (`condition` `None`).
#[derive(Debug)]
pub struct ConditionEvent {
    event_id: ByteString,
    event_type: NodeId,
    time: DateTime,
    condition_id: NodeId,
    source_node: NodeId,
    name: String,
    condition: Option<Condition>,
}

impl ConditionEvent {
    /// The event of condition `name` in namespace `ns`, as it is now.
    pub fn of(ns: u16, name: &str, c: &Condition) -> Self {
        let event_type = match c.kind {
            ConditionKind::Alarm => ObjectTypeId::AlarmConditionType,
            ConditionKind::OffNormal => ObjectTypeId::OffNormalAlarmType,
        };
        Self {
            event_id: next_event_id(),
            event_type: event_type.into(),
            time: DateTime::now(),
            condition_id: condition_id(ns, &c.source, name),
            source_node: NodeId::new(ns, c.source.clone()),
            name: name.to_string(),
            condition: Some(c.clone()),
        }
    }

    /// RefreshStartEvent or RefreshEndEvent.
    pub fn refresh(end: bool) -> Self {
        let ty = if end { ObjectTypeId::RefreshEndEventType } else { ObjectTypeId::RefreshStartEventType };
        Self {
            event_id: next_event_id(),
            event_type: ty.into(),
            time: DateTime::now(),
            condition_id: NodeId::null(),
            source_node: ObjectId::Server.into(),
            name: String::new(),
            condition: None,
        }
    }

    fn field(&self, attribute_id: AttributeId, path: &[QualifiedName]) -> Variant {
        let names: Vec<&str> = path.iter().map(|q| q.name.as_ref()).collect();
        if attribute_id == AttributeId::NodeId {
            // The condition itself: its ConditionId.
            return if names.is_empty() && self.condition.is_some() {
                Variant::from(self.condition_id.clone())
            } else {
                Variant::Empty
            };
        }
        match names.as_slice() {
            ["EventId"] => return Variant::from(self.event_id.clone()),
            ["EventType"] => return Variant::from(self.event_type.clone()),
            ["SourceNode"] => return Variant::from(self.source_node.clone()),
            ["Time"] | ["ReceiveTime"] => return Variant::from(self.time),
            _ => {}
        }
        let Some(c) = &self.condition else {
            return match names.as_slice() {
                ["SourceName"] => Variant::from(UAString::from("Server")),
                ["Severity"] => Variant::UInt16(1),
                ["Message"] => Variant::from(LocalizedText::from("Condition refresh")),
                _ => Variant::Empty,
            };
        };
        match names.as_slice() {
            ["SourceName"] => Variant::from(UAString::from(c.source.as_str())),
            ["Severity"] => Variant::UInt16(c.severity),
            ["Message"] => Variant::from(LocalizedText::from(c.message.as_str())),
            ["ConditionName"] => Variant::from(UAString::from(self.name.as_str())),
            ["ConditionClassId"] => Variant::from(NodeId::from(ObjectTypeId::ProcessConditionClassType)),
            ["ConditionClassName"] => Variant::from(LocalizedText::from("Process")),
            ["BranchId"] => Variant::from(NodeId::null()),
            ["Retain"] => Variant::Boolean(c.retain()),
            ["EnabledState", "Id"] => Variant::Boolean(true),
            ["ActiveState", "Id"] => Variant::Boolean(c.active),
            ["AckedState", "Id"] => Variant::Boolean(c.acked),
            ["ConfirmedState", "Id"] => Variant::Boolean(c.acked),
            ["ShelvingState", "CurrentState"] => {
                Variant::from(LocalizedText::from(if c.shelved { "OneShotShelved" } else { "Unshelved" }))
            }
            ["SuppressedOrShelved"] => Variant::Boolean(c.suppressed || c.shelved),
            _ => Variant::Empty,
        }
    }
}

fn next_event_id() -> ByteString {
    ByteString::from(EVENT_SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes().to_vec())
}

/// A condition's ConditionId: `ns=..;s={source}.{name}`.
pub fn condition_id(ns: u16, source: &str, name: &str) -> NodeId {
    NodeId::new(ns, format!("{source}.{name}"))
}

impl EventField for ConditionEvent {
    fn get_value(&self, attribute_id: AttributeId, _range: &NumericRange, path: &[QualifiedName]) -> Variant {
        self.field(attribute_id, path)
    }
}

impl Event for ConditionEvent {
    fn get_field(
        &self,
        _type_definition_id: &NodeId,
        attribute_id: AttributeId,
        _index_range: &NumericRange,
        browse_path: &[QualifiedName],
    ) -> Variant {
        self.field(attribute_id, browse_path)
    }

    fn time(&self) -> &DateTime {
        &self.time
    }

    fn event_type_id(&self) -> &NodeId {
        &self.event_type
    }
}

/// What the refresh answers from: the plant's conditions and their namespace index.
pub type Source = Arc<dyn Fn() -> (u16, Vec<(String, Condition)>) + Send + Sync>;

/// A node manager that answers `ConditionType.ConditionRefresh` (it must come before the core node manager,
/// which answers BadNotSupported) and lets event filters select a condition's ConditionId.
pub struct RefreshNodeManager {
    source: Source,
}

/// Builds a [`RefreshNodeManager`].
pub struct RefreshNodeManagerBuilder(pub Source);

impl NodeManagerBuilder for RefreshNodeManagerBuilder {
    fn build(self: Box<Self>, _context: ServerContext) -> Arc<opcua::server::node_manager::DynNodeManager> {
        Arc::new(RefreshNodeManager { source: self.0 })
    }
}

#[async_trait]
impl NodeManager for RefreshNodeManager {
    fn owns_node(&self, id: &NodeId) -> bool {
        *id == NodeId::from(MethodId::ConditionType_ConditionRefresh)
    }

    fn name(&self) -> &str {
        "condition-refresh"
    }

    fn namespaces_for_user(&self, _context: &RequestContext) -> Vec<NamespaceMetadata> {
        Vec::new()
    }

    async fn init(&self, type_tree: &mut DefaultTypeTree, _context: ServerContext) {
        // `(ConditionType, [], NodeId)` selects the ConditionId (Part 9); the type tree knows no empty path.
        let ty: NodeId = ObjectTypeId::ConditionType.into();
        type_tree.add_type_property(&ty, &ty, &[], NodeClass::Object);
    }

    async fn call(&self, context: &RequestContext, methods: &mut [&mut MethodCall]) -> Result<(), StatusCode> {
        for call in methods {
            if !self.owns_node(call.method_id()) {
                continue;
            }
            let status = match call.arguments() {
                [Variant::UInt32(sub)] => self.refresh(context, *sub),
                _ => StatusCode::BadInvalidArgument,
            };
            call.set_outputs(Vec::new());
            call.set_status(status);
        }
        Ok(())
    }
}

impl RefreshNodeManager {
    /// Sends RefreshStart, every retained condition and RefreshEnd to the event items of subscription `sub`.
    fn refresh(&self, context: &RequestContext, sub: u32) -> StatusCode {
        let Some(subs) = context.subscriptions.get_session_subscriptions(context.session_id) else {
            return StatusCode::BadSessionIdInvalid;
        };
        let (ns, conditions) = (self.source)();
        let mut events = vec![ConditionEvent::refresh(false)];
        events.extend(conditions.iter().filter(|(_, c)| c.retain()).map(|(n, c)| ConditionEvent::of(ns, n, c)));
        events.push(ConditionEvent::refresh(true));
        let type_tree = context.type_tree.read();
        let mut subs = subs.lock();
        let Some(subscription) = subs.get_mut(sub) else { return StatusCode::BadSubscriptionIdInvalid };
        let items: Vec<u32> = subscription
            .items()
            .filter(|i| i.item_to_monitor().attribute_id == AttributeId::EventNotifier)
            .map(|i| i.id())
            .collect();
        for e in &events {
            for id in &items {
                subscription.notify_event(id, e, &*type_tree as &dyn TypeTree);
            }
        }
        StatusCode::Good
    }
}
