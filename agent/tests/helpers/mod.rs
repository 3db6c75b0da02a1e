//! Test helpers: real brokers (rumqttd in-process, Mosquitto as a child process), a small collector that
//! decodes batches and acks them, agent configs, certificates.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shiftlens_agent::{Config, Observation};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{topic, wire, Ack, AssetId, EventBody, GapReason, Limits, Topic};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug,rumqttd=warn").with_test_writer().try_init();
    }
}

/// A free port for a broker, which must be told its port (neither Mosquitto nor rumqttd can bind port 0 and
/// report it back). It lies below the kernel's ephemeral range, so no `bind(0)` and no outgoing connection
/// (of this test or any other) can be given it between this check and the broker binding it, or while a
/// broker restarts on it; and this process never hands the same port out twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..10_000 {
        let port = if ephemeral_low > 12_000 {
            rand::random_range(10_000..ephemeral_low)
        } else {
            // No room below the ephemeral range: take one the OS gives out.
            TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        };
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port below {ephemeral_low}");
}

/// How long a broker may take to listen: generous, for a loaded machine (the wait ends when it listens).
const BROKER_START: Duration = Duration::from_secs(60);

/// Waits until `port` accepts connections; false as soon as `alive` says the broker is gone instead (its port
/// was taken after all).
fn wait_listening(port: u16, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + BROKER_START;
    loop {
        if !alive() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return alive();
        }
        assert!(Instant::now() < deadline, "broker on port {port} did not start within {BROKER_START:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds, or fails the test naming `what`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts rumqttd in-process on a free port; it runs until the test process ends (it has no shutdown).
pub fn start_rumqttd() -> u16 {
    for _ in 0..5 {
        let port = free_port();
        let text = format!(
            r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 2097152
max_inflight_count = 200
dynamic_filters = true
"#
        );
        let config: rumqttd::Config = toml::from_str(&text).unwrap();
        // `start` returns only when its listener ended, e.g. because it could not bind.
        let broker = std::thread::spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let _ = broker.start();
        });
        if wait_listening(port, || !broker.is_finished()) {
            return port;
        }
    }
    panic!("rumqttd did not start on five free ports");
}

/// Mosquitto as a child process, without persistence: killing it forgets every queued message.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    /// The port of the second listener of [`Mosquitto::start_with_listener`].
    pub extra_port: Option<u16>,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto with a plaintext loopback listener on `port`, plus `extra` config lines.
    pub fn start(dir: &Path, extra: &str) -> Self {
        Self::launch(dir, false, |_| extra.to_string())
    }

    /// Like [`Mosquitto::start`], with a second listener on a free port of its own: `listener(port)` gives its
    /// config lines (`listener {port} 127.0.0.1` and its settings); the port is then in `extra_port`.
    pub fn start_with_listener(dir: &Path, listener: impl Fn(u16) -> String) -> Self {
        Self::launch(dir, true, listener)
    }

    fn launch(dir: &Path, second: bool, extra: impl Fn(u16) -> String) -> Self {
        let conf = dir.join("mosquitto.conf");
        for _ in 0..5 {
            let port = free_port();
            let extra_port = second.then(free_port);
            let text = format!(
                "user root\npersistence false\nallow_anonymous true\nmax_queued_messages 1000000\n\
                 max_inflight_messages 100\nset_tcp_nodelay true\nlog_type error\nlog_type warning\nlistener {port} 127.0.0.1\n{}\n",
                extra(extra_port.unwrap_or(0))
            );
            std::fs::write(&conf, text).unwrap();
            let mut m = Self { child: None, port, extra_port, conf: conf.clone() };
            if m.spawn() {
                return m;
            }
        }
        panic!("Mosquitto did not start on five sets of free ports");
    }

    /// Starts the process and waits until it listens on every port; false when it exited instead.
    fn spawn(&mut self) -> bool {
        let log = if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.extra_port).collect();
        let child = &mut self.child;
        ports
            .into_iter()
            .all(|port| wait_listening(port, || child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))))
    }

    /// SIGKILL: the broker dies with whatever it held in memory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "Mosquitto exited instead of listening again on port {}", self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the test collector has seen.
#[derive(Debug, Default)]
pub struct Received {
    /// `(gateway, epoch, seq)`: the collector's dedup key.
    pub keys: HashSet<(String, u64, u64)>,
    /// Distinct events by seq.
    pub events: BTreeMap<u64, shiftlens_common::Event>,
    pub epochs: BTreeSet<u64>,
    /// Every event delivered, duplicates included.
    pub deliveries: u64,
    /// The broker confirmed the subscription.
    pub subscribed: bool,
    /// Payload bytes of the batches decoded (MQTT framing not counted).
    pub payload_bytes: u64,
    /// Batches answered with "dictionary unknown".
    pub dictionary_requests: u64,
    /// Batch versions seen (the second byte of a batch: its version, after the array head).
    pub versions: BTreeSet<u8>,
}

impl Received {
    pub fn gaps(&self) -> Vec<(u64, u64, GapReason)> {
        self.events
            .values()
            .filter_map(|e| match e.body {
                EventBody::Gap { first, last, reason } => Some((first, last, reason)),
                _ => None,
            })
            .collect()
    }

    /// Whether every seq in `1..=last` arrived or is named by a gap.
    pub fn covers(&self, last: u64) -> bool {
        let gaps = self.gaps();
        (1..=last).all(|s| self.events.contains_key(&s) || gaps.iter().any(|&(a, b, _)| a <= s && s <= b))
    }

    /// Whether the alarm with producer counter `n` (made by [`alarm`]) arrived.
    pub fn has_counter(&self, n: u64) -> bool {
        let id = n.to_string();
        self.events.values().any(|e| matches!(&e.body, EventBody::Alarm(a) if a.id == id))
    }

    /// Produced counters per asset, in seq order (from alarms made by [`alarm`]).
    pub fn counters_by_asset(&self) -> BTreeMap<String, Vec<u64>> {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in self.events.values() {
            if let EventBody::Alarm(a) = &e.body {
                m.entry(e.asset.to_string()).or_default().push(a.id.parse().unwrap());
            }
        }
        m
    }
}

/// Plays the collector: subscribes to every gateway's events, records them and (when `acking`) acks each
/// batch on the gateway's ack topic.
pub struct Collector {
    pub received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &format!("collector-{}", rand::random::<u32>()), true, true)
    }

    /// A subscriber that records but never acks.
    pub fn spy(port: u16) -> Self {
        Self::start_with(port, &format!("spy-{}", rand::random::<u32>()), true, false)
    }

    pub fn start_with(port: u16, client_id: &str, clean_session: bool, acking: bool) -> Self {
        Self::subscribed_to(port, client_id, clean_session, acking, topic::ALL_EVENTS)
    }

    /// An acking collector that is one member of the shared subscription `group` (the broker splits the
    /// batches between the members).
    pub fn shared(port: u16, group: &str) -> Self {
        let filter = topic::shared(group, topic::ALL_EVENTS);
        Self::subscribed_to(port, &format!("collector-{}", rand::random::<u32>()), true, true, &filter)
    }

    fn subscribed_to(port: u16, client_id: &str, clean_session: bool, acking: bool, filter: &str) -> Self {
        let filter = filter.to_string();
        let received = Arc::new(Mutex::new(Received::default()));
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(clean_session).set_max_packet_size(4 << 20, 4 << 20).set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 10_000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let r = received.clone();
        let task = tokio::spawn(async move {
            let mut dicts = shiftlens_common::wire_dict::Dictionaries::default();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => r.lock().unwrap().subscribed = true,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // As the collector: dictionary batches (version 3) through a reader that keeps
                        // the entries, asking for the dictionary when it lacks one.
                        let (batch, update) = match dicts.decode(&p.payload, &Limits::default()) {
                            Ok(decoded) => decoded,
                            Err(shiftlens_common::DecodeError::DictionaryUnknown { epoch, dictionary }) => {
                                r.lock().unwrap().dictionary_requests += 1;
                                if acking {
                                    let ack = wire::encode_ack(&Ack::dictionary_unknown(epoch, dictionary));
                                    let t = p.topic.replace("/events", "/ack");
                                    let _ = client.try_publish(t, QoS::AtLeastOnce, false, ack);
                                }
                                continue;
                            }
                            Err(e) => panic!("undecodable batch on {}: {e}", p.topic),
                        };
                        dicts.commit(update);
                        {
                            let mut r = r.lock().unwrap();
                            r.payload_bytes += p.payload.len() as u64;
                            r.versions.extend(p.payload.get(1).copied());
                        }
                        let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
                        {
                            let mut r = r.lock().unwrap();
                            r.epochs.insert(batch.epoch);
                            for e in batch.events {
                                r.deliveries += 1;
                                r.keys.insert((batch.gateway.to_string(), batch.epoch, e.seq));
                                if let Some(old) = r.events.get(&e.seq) {
                                    assert_eq!(old, &e, "seq {} arrived with two different contents", e.seq);
                                }
                                r.events.insert(e.seq, e);
                            }
                        }
                        if acking {
                            let ack = wire::encode_ack(&Ack::from_seqs(batch.epoch, seqs));
                            let t = Topic::Ack { site: batch.site, gateway: batch.gateway }.to_string();
                            let _ = client.try_publish(t, QoS::AtLeastOnce, false, ack);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self { received, task }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().events.len()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// An agent config for `broker` with a fresh outbox in `dir`; `uplink_extra` and `outbox_extra` are TOML lines.
pub fn agent_config(dir: &Path, broker: &str, uplink_extra: &str, outbox_extra: &str) -> Config {
    // Test defaults: quick resends and reconnects; `uplink_extra` may override them.
    let defaults: String = [
        "ack_timeout = \"2s\"",
        "reconnect_min = \"50ms\"",
        "reconnect_max = \"300ms\"",
        "heartbeat = \"1s\"",
        "keep_alive = \"5s\"",
    ]
    .iter()
    .filter(|line| !line.split(' ').next().is_some_and(|key| uplink_extra.contains(&format!("{key} ="))))
    .map(|line| format!("{line}\n"))
    .collect();
    let text = format!(
        "site = \"plant-a\"\ngateway = \"gw-1\"\n\n[outbox]\npath = {db:?}\n{outbox_extra}\n\n[uplink]\n\
         broker = {broker:?}\n{defaults}{uplink_extra}\n",
        db = dir.join("outbox.db").display().to_string(),
    );
    match Config::from_file(&ConfigFile::from_text(dir.join("agent.toml"), text)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// An alarm observation whose id is the producer's counter `n`.
pub fn alarm(asset: &str, n: u64) -> Observation {
    Observation {
        ts_ms: 1_700_000_000_000 + n as i64,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::Alarm(shiftlens_common::Alarm {
            id: n.to_string(),
            active: n % 2 == 0,
            severity: 500,
            text: "Motor overload".into(),
            class: None,
            ..Default::default()
        }),
    }
}

pub const ASSETS: [&str; 4] = ["press-1", "press-2", "oven-1", "Line1.Robot"];

/// Sends alarms `first..first+count` round-robin over [`ASSETS`], `chunk` at a time with a short pause.
pub async fn produce(tx: tokio::sync::mpsc::Sender<Observation>, first: u64, count: u64, chunk: u64) {
    for n in first..first + count {
        tx.send(alarm(ASSETS[(n % 4) as usize], n)).await.unwrap();
        if n % chunk == chunk - 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// State `n` of a run that repeats itself: [`ASSETS`] in turn, running and down by turns, so after the
/// first 8 the dictionary form has every content and sends indices only.
pub fn toggle(n: u64) -> Observation {
    let state =
        if (n / 4) % 2 == 0 { shiftlens_common::MachineState::Running } else { shiftlens_common::MachineState::Down };
    Observation {
        ts_ms: 1_700_000_000_000 + n as i64 * 10,
        asset: AssetId::parse(ASSETS[(n % 4) as usize]).unwrap(),
        body: EventBody::State { state, reason: None },
    }
}

/// Checks that alarms `0..count` arrived, each under exactly one seq, in production order per asset.
pub fn assert_complete(r: &Received, count: u64) {
    let by_asset = r.counters_by_asset();
    let mut all: Vec<u64> = by_asset.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all.len() as u64, count, "distinct events received");
    assert!(all.iter().copied().eq(0..count), "every produced event arrives under exactly one seq");
    for (asset, ns) in &by_asset {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{asset}: events out of production order");
    }
}

/// Test certificates: CA 1 signs the broker and a good client; CA 2 signs an impostor client.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

pub fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (ca1, issuer1) = ca("shiftlens test ca");
    let (ca2, issuer2) = ca("impostor ca");
    let server =
        leaf(&issuer1, vec!["localhost".into(), "127.0.0.1".into()], "broker", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(&issuer1, vec![], "gw-1", ExtendedKeyUsagePurpose::ClientAuth);
    let other = leaf(&issuer2, vec![], "gw-1", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", ca1),
        server_cert: write("server.pem", server.0),
        server_key: write("server.key", server.1),
        client_cert: write("client.pem", client.0),
        client_key: write("client.key", client.1),
        other_ca: write("other-ca.pem", ca2),
        other_client_cert: write("other-client.pem", other.0),
        other_client_key: write("other-client.key", other.1),
    }
}

/// Collects every status message (JSON) published on any gateway's status topic, retained ones included.
pub fn watch_status(port: u16) -> (Arc<Mutex<Vec<shiftlens_common::status::Status>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<shiftlens_common::status::Status>>> = Arc::default();
    let mut o = MqttOptions::new(format!("status-{}", rand::random::<u32>()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(topic::ALL_STATUS, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    s.lock().unwrap().push(serde_json::from_slice(&p.payload).unwrap());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (seen, task)
}

/// Writes an agent config file for the real binary and returns its path.
pub fn write_config(dir: &Path, broker: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        "site = \"plant-a\"\ngateway = \"gw-1\"\n\n[outbox]\npath = {:?}\n\n[uplink]\nbroker = {broker:?}\n\
         heartbeat = \"1s\"\nreconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\n",
        dir.join("outbox.db").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}
