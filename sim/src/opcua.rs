//! OPC UA server exposing the plant (async-opcua).
//!
//! Every asset of the [`Plant`] is an object under `Objects` with three `UInt16` variables in the
//! namespace [`NAMESPACE_URI`]: `{asset}.state`, `{asset}.reason` and `{asset}.alarms`
//! (see [`node_id`]). A task copies the plant into the address space every `poll_interval`, writing
//! only what changed, so subscribers see each change once. While `Faults::bad_status` is set every
//! value carries `BadDeviceFailure`.
//!
//! The plant's alarm conditions ([`crate::plant::Condition`]) are OPC UA Alarms & Conditions events on the
//! Server object, sent when a condition changes; `ConditionRefresh` is answered (see [`crate::alarms`]).
//!
//! Endpoints: `None`, and `Basic256Sha256` with `Sign` and `SignAndEncrypt`; identities: anonymous
//! (unless disabled) and the configured users. The server's key pair is created in `pki_dir` on first
//! start and reused after a restart; client certificates are trusted automatically (it is a simulator).
//! The namespace URI differs from the application URI on purpose: equal URIs make async-opcua answer
//! `BadServiceUnsupported` for every item.

use crate::alarms::ConditionEvent;
use crate::plant::{AssetPoints, Condition, Plant};
use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::Variable;
use opcua::server::diagnostics::DiagnosticsNodeManagerBuilder;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::node_manager::memory::{CoreNodeManagerBuilder, InMemoryNodeManagerBuilder};
use opcua::server::{ServerBuilder, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, StatusCode, Variant};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The namespace of the plant's variables.
pub const NAMESPACE_URI: &str = "urn:shiftlens:sim:plant";
/// The server's application URI (must differ from [`NAMESPACE_URI`]).
pub const APPLICATION_URI: &str = "urn:shiftlens:sim";
/// The status code of every value while `Faults::bad_status` is set.
pub const BAD_STATUS: StatusCode = StatusCode::BadDeviceFailure;

const POINTS: [&str; 3] = ["state", "reason", "alarms"];

/// The node id (with namespace URI) of one of an asset's points: `state`, `reason` or `alarms`.
pub fn node_id(asset: &str, point: &str) -> String {
    format!("nsu={NAMESPACE_URI};s={asset}.{point}")
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct OpcUaOptions {
    /// Users accepted with a password: (name, password).
    pub users: Vec<(String, String)>,
    /// Accept anonymous sessions.
    pub anonymous: bool,
    /// How often the plant is copied into the address space.
    pub poll_interval: Duration,
}

impl Default for OpcUaOptions {
    fn default() -> Self {
        Self { users: Vec::new(), anonymous: true, poll_interval: Duration::from_millis(50) }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpcUaError {
    #[error("cannot read the listener's address: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the OPC UA server: {0}")]
    Build(String),
}

/// A running server; [`OpcUaServer::stop`] ends it and frees its port.
pub struct OpcUaServer {
    handle: ServerHandle,
    server: JoinHandle<Result<(), String>>,
    updater: JoinHandle<()>,
    addr: SocketAddr,
}

impl OpcUaServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `opc.tcp://ip:port/`
    pub fn endpoint_url(&self) -> String {
        format!("opc.tcp://{}/", self.addr)
    }

    /// Stops the server, closing every connection; the port can be bound again afterwards.
    pub async fn stop(self) {
        self.updater.abort();
        self.handle.cancel();
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
            tracing::warn!("OPC UA server did not stop within 5 s, aborting it");
            server.abort();
        }
    }
}

/// Starts an OPC UA server for `plant` on `listener` (bind port 0 in tests), keeping its key pair in
/// `pki_dir`.
///
/// # Errors
/// When the listener has no address or the server cannot be built (e.g. the PKI dir is unusable).
pub async fn serve(
    plant: Plant,
    listener: TcpListener,
    pki_dir: &Path,
    options: &OpcUaOptions,
) -> Result<OpcUaServer, OpcUaError> {
    let addr = listener.local_addr()?;
    let host = addr.ip().to_string();
    let mut token_ids: Vec<String> = options.users.iter().map(|(u, _)| u.clone()).collect();
    if options.anonymous {
        token_ids.push(ANONYMOUS_USER_TOKEN_ID.to_string());
    }
    let token_ids: Vec<&str> = token_ids.iter().map(String::as_str).collect();
    // The refresh needs the plant namespace's index, known only once the server is built.
    let ns_cell: std::sync::Arc<std::sync::OnceLock<u16>> = std::sync::Arc::new(std::sync::OnceLock::new());
    let refresh_source: crate::alarms::Source = {
        let (plant, ns) = (plant.clone(), ns_cell.clone());
        std::sync::Arc::new(move || (ns.get().copied().unwrap_or(0), plant.conditions().into_iter().collect()))
    };
    let mut builder = ServerBuilder::new()
        .without_node_managers()
        .with_node_manager(crate::alarms::RefreshNodeManagerBuilder(refresh_source))
        .with_node_manager(InMemoryNodeManagerBuilder::new(CoreNodeManagerBuilder))
        .with_node_manager(DiagnosticsNodeManagerBuilder)
        .application_name("ShiftLens simulated plant")
        .application_uri(APPLICATION_URI)
        .product_uri("urn:shiftlens:sim:product")
        .create_sample_keypair(true)
        .pki_dir(pki_dir)
        .trust_client_certs(true)
        .host(host.clone())
        .port(addr.port())
        .discovery_urls(vec![format!("opc.tcp://{host}:{}/", addr.port())])
        .with_node_manager(simple_node_manager(
            NamespaceMetadata { namespace_uri: NAMESPACE_URI.to_owned(), ..Default::default() },
            "plant",
        ));
    // An alarm flood is many events per publishing interval; the default queue of 10 would drop them.
    builder.limits_mut().subscriptions.max_monitored_item_queue_size = 10_000;
    for (user, password) in &options.users {
        builder = builder.add_user_token(user.clone(), ServerUserToken::user_pass(user, password));
    }
    let endpoints = [
        ("none", SecurityPolicy::None, MessageSecurityMode::None),
        ("basic256sha256_sign", SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign),
        ("basic256sha256_sign_encrypt", SecurityPolicy::Basic256Sha256, MessageSecurityMode::SignAndEncrypt),
    ];
    for (id, policy, mode) in endpoints {
        builder = builder.add_endpoint(id, ("/", policy, mode, token_ids.as_slice()));
    }
    let (server, handle) = builder.build().map_err(OpcUaError::Build)?;
    let manager = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| OpcUaError::Build("the plant node manager is missing".into()))?;
    let ns = handle
        .get_namespace_index(NAMESPACE_URI)
        .ok_or_else(|| OpcUaError::Build("the plant namespace is missing".into()))?;
    let _ = ns_cell.set(ns);

    let assets = plant.asset_ids();
    {
        let mut space = manager.address_space().write();
        for asset in &assets {
            let object = NodeId::new(ns, asset.clone());
            space.add_folder(&object, asset.as_str(), asset.as_str(), &NodeId::objects_folder_id());
            let vars = POINTS
                .iter()
                .map(|p| {
                    let id = NodeId::new(ns, format!("{asset}.{p}"));
                    Variable::new(&id, *p, *p, 0u16)
                })
                .collect();
            space.add_variables(vars, &object);
        }
    }

    let subscriptions = handle.subscriptions().clone();
    let interval = options.poll_interval;
    let updater = tokio::spawn(async move {
        let mut last: BTreeMap<String, (AssetPoints, bool)> = BTreeMap::new();
        let mut last_conditions: BTreeMap<String, Condition> = BTreeMap::new();
        let server: NodeId = ObjectId::Server.into();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let bad = plant.faults().bad_status;
            let now = DateTime::now();
            let mut updates = Vec::new();
            for asset in &assets {
                let Some(points) = plant.get(asset) else { continue };
                let current = (points.clone(), bad);
                if last.get(asset) == Some(&current) {
                    continue;
                }
                for (p, v) in POINTS.iter().zip([points.state, points.reason, points.alarms]) {
                    let value = DataValue {
                        value: Some(Variant::UInt16(v)),
                        status: Some(if bad { BAD_STATUS } else { StatusCode::Good }),
                        source_timestamp: Some(now),
                        server_timestamp: Some(now),
                        ..Default::default()
                    };
                    updates.push((NodeId::new(ns, format!("{asset}.{p}")), value));
                }
                last.insert(asset.clone(), current);
            }
            if !updates.is_empty() {
                let items = updates.iter().map(|(id, v)| (id, None, v.clone()));
                if let Err(e) = manager.set_values(&subscriptions, items) {
                    tracing::warn!(error = %e, "cannot update OPC UA values");
                }
            }
            // Each changed condition is one event on the Server object.
            let conditions = plant.conditions();
            let events: Vec<ConditionEvent> = conditions
                .iter()
                .filter(|(name, c)| last_conditions.get(*name) != Some(*c))
                .map(|(name, c)| ConditionEvent::of(ns, name, c))
                .collect();
            if !events.is_empty() {
                subscriptions.notify_events(events.iter().map(|e| (e as &dyn opcua::nodes::Event, &server)));
            }
            last_conditions = conditions;
        }
    });
    let server = tokio::spawn(server.run_with(listener));
    Ok(OpcUaServer { handle, server, updater, addr })
}
