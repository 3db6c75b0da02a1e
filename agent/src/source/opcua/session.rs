//! The I/O half of an OPC UA endpoint: one task per endpoint that connects (retrying forever with the common
//! [`Backoff`]), creates one subscription with a monitored item per point, follows the session's event loop and
//! hands every data change and link change to the [`Tracker`], whose samples go to the detector's channel.
//!
//! Invariants:
//! - Sessions retry forever. After every reconnect Publish is triggered at once (async-opcua 0.19 otherwise
//!   stalls silently); on a new session the nodes are re-resolved (namespace URIs may map to other indexes after
//!   a server restart) and the subscription is created afresh, so each point reports its current value again.
//! - The OPC UA event loop is never blocked: callbacks hand samples on with `try_send`.

use super::conditions::{self, ConditionEvent, Conditions};
use super::tracker::Tracker;
use super::trust::check_trust;
use super::{Identity, NodeRef, OpcUaEndpoint};
use crate::detect::Sample;
use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, MonitoredItem, Session, SessionConnectMode, SessionPollResult,
    SubscriptionCallbacks,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, CallMethodRequest, DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, EndpointDescription,
    EventFilterResult, ExtensionObject, MethodId, MonitoredItemCreateRequest, MonitoringMode, NodeId, ObjectTypeId,
    ReadValueId, StatusCode, TimestampsToReturn, VariableId, Variant,
};
use shiftlens_common::clock::Backoff;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tracing::{error, info, warn};

/// Client handles of event monitored items start here (points count from 1).
const ALARM_HANDLE: u32 = 1 << 24;

/// One `[[opcua.alarms]]` while its endpoint runs: the conditions tracker (kept across sessions, so a refresh
/// after a reconnect can clear what cleared meanwhile) and which select clauses the server accepted.
struct AlarmState {
    conditions: Conditions,
    valid: Vec<bool>,
}

type Alarms = Arc<Mutex<Vec<AlarmState>>>;

/// Starts the endpoint's task. It runs until `tx` is closed, reconnecting by itself.
pub fn spawn(endpoint: &OpcUaEndpoint, tx: Sender<Sample>) -> tokio::task::JoinHandle<()> {
    spawn_restored(endpoint, tx, &crate::Reported::new())
}

/// [`spawn`] with the alarm conditions started from what the outbox says was last reported, so a condition
/// that cleared while the agent was away is cleared at the first refresh.
pub fn spawn_restored(
    endpoint: &OpcUaEndpoint,
    tx: Sender<Sample>,
    reported: &crate::Reported,
) -> tokio::task::JoinHandle<()> {
    let ep = Arc::new(endpoint.clone());
    let alarms: Vec<AlarmState> = ep
        .alarms
        .iter()
        .map(|a| AlarmState { conditions: Conditions::new(ep.id(), a.clone(), reported), valid: Vec::new() })
        .collect();
    let alarms = Arc::new(Mutex::new(alarms));
    tokio::spawn(async move { run(ep, tx, alarms).await })
}

async fn run(ep: Arc<OpcUaEndpoint>, tx: Sender<Sample>, alarms: Alarms) {
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
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let result = tokio::select! {
            r = session_once(&ep, &mut client, &tracker, &alarms, &tx) => r,
            _ = tx.closed() => return,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                warn!(endpoint = %ep.id(), error = %e, "OPC UA endpoint unavailable");
                emit(&tx, lock(&tracker).session(false, Some(e)));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = tx.closed() => return,
        }
    }
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
        .keep_alive_interval(ep.keep_alive)
        .request_timeout(ep.request_timeout)
        .max_failed_keep_alive_count(3)
        .recreate_subscriptions(false)
        .session_name(format!("shiftlens {}", ep.id()))
        .client()
        .map_err(|e| format!("invalid client settings: {}", e.join("; ")))
}

fn identity(ep: &OpcUaEndpoint) -> Result<IdentityToken, String> {
    Ok(match &ep.identity {
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
    let url = ep.endpoint.as_str();
    let endpoints = tokio::time::timeout(ep.request_timeout * 3, client.get_server_endpoints_from_url(url))
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

/// One client session: connect, subscribe, and follow the event loop until it ends for good.
/// `Ok` only when `tx` closed.
async fn session_once(
    ep: &Arc<OpcUaEndpoint>,
    client: &mut Client,
    tracker: &Arc<Mutex<Tracker>>,
    alarms: &Alarms,
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
                    if !ep.alarms.is_empty() && !matches!(mode, SessionConnectMode::NewSession(_)) {
                        // A reactivated session delivered no events at all here (async-opcua 0.19, not even
                        // on a new subscription): start a new session, whose ConditionRefresh reports every
                        // condition as it is now. (No `disconnect()`: it needs this very event loop polled.)
                        return Err("reconnected; starting a new session for the alarm events".into());
                    }
                    info!(endpoint = %ep.id(), ?mode, "OPC UA session connected");
                    emit(tx, lock(tracker).session(true, None));
                    if matches!(mode, SessionConnectMode::NewSession(_)) || subscription.is_none() {
                        let old = subscription.take();
                        setup = Some(Box::pin(subscribe(session.clone(), ep.clone(), tracker.clone(), alarms.clone(), tx.clone(), old)));
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
    alarms: Alarms,
    tx: Sender<Sample>,
    old: Option<u32>,
) -> Result<u32, String> {
    if let Some(id) = old {
        let _ = session.delete_subscription(id).await;
    }
    let alarm_nodes = ep.alarms.iter().flat_map(|a| std::iter::once(&a.notifier).chain(&a.event_types));
    let namespaces = if ep.points.iter().map(|p| &p.node).chain(alarm_nodes).any(|n| n.namespace_uri.is_some()) {
        read_namespaces(&session).await?
    } else {
        Vec::new()
    };
    let callback = {
        let (tracker, tx) = (tracker.clone(), tx.clone());
        let (alarms, tx2) = (alarms.clone(), tx.clone());
        SubscriptionCallbacks::new(
            |_| {},
            move |dv: DataValue, item: &MonitoredItem| {
                let Some(i) = (item.client_handle() as usize).checked_sub(1) else { return };
                emit(&tx, lock(&tracker).data(i, &dv));
            },
            move |fields: Option<Vec<Variant>>, item: &MonitoredItem| {
                let Some(i) = item.client_handle().checked_sub(ALARM_HANDLE) else { return };
                let mut alarms = lock(&alarms);
                let Some(state) = alarms.get_mut(i as usize) else { return };
                if let Some(ev) = ConditionEvent::parse(fields, &state.valid) {
                    emit(&tx2, state.conditions.event(ev));
                }
            },
        )
    };
    let id = session
        .create_subscription(ep.publishing_interval, 60, 10, 0, 0, true, callback)
        .await
        .map_err(|e| format!("CreateSubscription failed: {e}"))?;
    let mut items = Vec::new();
    for (i, p) in ep.points.iter().enumerate() {
        let r = &p.node;
        let mut node = r.node.clone();
        if let Some(uri) = &r.namespace_uri {
            let Some(ns) = namespaces.iter().position(|n| n == uri) else {
                error!(endpoint = %ep.id(), point = %p.name, namespace = %uri, "namespace not on the server; point skipped");
                continue;
            };
            node.namespace = u16::try_from(ns).unwrap_or(u16::MAX);
        }
        let mut req: MonitoredItemCreateRequest = node.into();
        req.requested_parameters.client_handle = u32::try_from(i + 1).unwrap_or(u32::MAX);
        req.requested_parameters.sampling_interval = p.sampling.as_secs_f64() * 1000.0;
        req.requested_parameters.queue_size = 10;
        req.requested_parameters.discard_oldest = true;
        // Always an explicit filter: without one async-opcua reports value changes only, not status changes.
        let deadband = p.deadband;
        req.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValue,
            deadband_type: if deadband > 0.0 { DeadbandType::Absolute } else { DeadbandType::None } as u32,
            deadband_value: deadband,
        });
        items.push(req);
    }
    for (i, a) in ep.alarms.iter().enumerate() {
        let resolve = |r: &NodeRef| -> Option<NodeId> {
            let mut node = r.node.clone();
            if let Some(uri) = &r.namespace_uri {
                node.namespace = u16::try_from(namespaces.iter().position(|n| n == uri)?).ok()?;
            }
            Some(node)
        };
        let Some(notifier) = resolve(&a.notifier) else {
            error!(endpoint = %ep.id(), alarms = %a.name, "the notifier's namespace is not on the server; alarms skipped");
            continue;
        };
        let types: Vec<NodeId> = a.event_types.iter().filter_map(resolve).collect();
        let mut req = MonitoredItemCreateRequest::new(
            ReadValueId { node_id: notifier, attribute_id: AttributeId::EventNotifier as u32, ..Default::default() },
            MonitoringMode::Reporting,
            Default::default(),
        );
        req.requested_parameters.client_handle = ALARM_HANDLE + u32::try_from(i).unwrap_or(0);
        // An alarm flood: up to 10,000 events per publishing interval (servers may revise this down).
        req.requested_parameters.queue_size = 10_000;
        req.requested_parameters.discard_oldest = true;
        req.requested_parameters.filter = ExtensionObject::from_message(conditions::event_filter(a, &types));
        items.push(req);
    }
    let results = session
        .create_monitored_items(id, TimestampsToReturn::Both, items.clone())
        .await
        .map_err(|e| format!("CreateMonitoredItems failed: {e}"))?;
    let mut refresh = false;
    for (req, res) in items.iter().zip(results) {
        if let Some(i) = req.requested_parameters.client_handle.checked_sub(ALARM_HANDLE) {
            let name = ep.alarms.get(i as usize).map_or("?", |a| a.name.as_str());
            if res.result.status_code.is_bad() {
                error!(endpoint = %ep.id(), alarms = %name, status = %res.result.status_code, "server refused the event monitored item");
                continue;
            }
            let accepted: Vec<bool> = match res.result.filter_result.inner_as::<EventFilterResult>() {
                Some(r) => r.select_clause_results.iter().flatten().map(|s| s.is_good()).collect(),
                None => Vec::new(),
            };
            if accepted.iter().any(|ok| !ok) {
                warn!(endpoint = %ep.id(), alarms = %name, refused = ?accepted, "the server refused some event fields; they stay empty");
            }
            if let Some(state) = lock(&alarms).get_mut(i as usize) {
                state.valid = accepted;
            }
            refresh = true;
            continue;
        }
        if res.result.status_code.is_bad() {
            let i = req.requested_parameters.client_handle as usize - 1;
            let name = ep.points.get(i).map_or("?", |p| p.name.as_str());
            error!(endpoint = %ep.id(), point = %name, node = %req.item_to_monitor.node_id, status = %res.result.status_code, "server refused the monitored item");
            let dv = DataValue { status: Some(res.result.status_code), ..Default::default() };
            emit(&tx, lock(&tracker).data(i, &dv));
        }
    }
    session.trigger_publish_now();
    if refresh {
        condition_refresh(&session, &ep, id).await;
    }
    info!(endpoint = %ep.id(), subscription = id, points = ep.points.len(), alarms = ep.alarms.len(), "OPC UA subscription created");
    Ok(id)
}

/// Asks the server to send every retained condition again, between RefreshStart and RefreshEnd, on
/// subscription `id`; the [`Conditions`] trackers clear what the refresh does not mention.
async fn condition_refresh(session: &Session, ep: &OpcUaEndpoint, id: u32) {
    let call = CallMethodRequest {
        object_id: ObjectTypeId::ConditionType.into(),
        method_id: MethodId::ConditionType_ConditionRefresh.into(),
        input_arguments: Some(vec![Variant::UInt32(id)]),
    };
    match session.call_one(call).await {
        Ok(r) if r.status_code.is_good() => {}
        Ok(r) => {
            warn!(endpoint = %ep.id(), status = %r.status_code, "ConditionRefresh refused: conditions that cleared meanwhile stay active until their next event")
        }
        Err(e) => {
            warn!(endpoint = %ep.id(), error = %e, "ConditionRefresh failed: conditions that cleared meanwhile stay active until their next event")
        }
    }
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

fn lock<T>(t: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
