//! Test helpers: a throw-away PKI (rcgen), collector configs in a temp dir, and a minimal agent that
//! publishes batches over real MQTT/TLS and collects the collector's acks.
#![allow(clippy::unwrap_used, dead_code)]

pub mod pg;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use shiftlens_collector::broker::{self, TlsFiles};
use shiftlens_collector::Config;
use shiftlens_common::config::ConfigFile;
use shiftlens_common::wire::{decode_ack, encode_batch};
use shiftlens_common::{AssetId, Batch, Event as WireEvent, EventBody, GatewayId, MachineState, SiteId, Topic};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub const SITE: &str = "plant-a";

/// Seconds a test waits for something that must happen (a connection with its TLS handshake, an ack, a
/// stored row, a process start). Waits end as soon as it happens, so this is generous for a slow, loaded
/// CI machine and costs nothing when all is well.
pub const WAIT: u64 = 60;

/// A CA with its key, writing leaf certificates into `dir`.
pub struct Pki {
    pub dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Self { dir: dir.to_path_buf(), issuer: rcgen::Issuer::new(params, key), ca }
    }

    /// A leaf certificate with subject CN `cn` and OU [`SITE`] (a gateway's site), valid for localhost
    /// and 127.0.0.1.
    pub fn leaf(&self, cn: &str) -> TlsFiles {
        self.leaf_at(cn, Some(SITE))
    }

    /// A leaf certificate with subject CN `cn` and, when given, OU `site`; files named after both.
    pub fn leaf_at(&self, cn: &str, site: Option<&str>) -> TlsFiles {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(site) = site {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, site);
        }
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let stem = self.ca.file_stem().unwrap().to_string_lossy().replace("-ca", "");
        let name = format!("{stem}-{}{cn}", site.map(|s| format!("{s}.")).unwrap_or_default());
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsFiles { ca: self.ca.clone(), cert: c, key: k }
    }
}

/// Config text for a collector with an mTLS embedded broker on a free port and its store in `dir`.
pub fn config_text(dir: &Path, server: &TlsFiles, extra_broker: &str) -> String {
    format!(
        r#"
[broker]
listen = "127.0.0.1:0"
{extra_broker}
[broker.tls]
ca = "{}"
cert = "{}"
key = "{}"

[store]
path = "{}"

[http]
bind = "127.0.0.1:0"
"#,
        server.ca.display(),
        server.cert.display(),
        server.key.display(),
        dir.join("collector.db").display()
    )
}

pub fn config(dir: &Path, server: &TlsFiles, extra_broker: &str) -> Config {
    let text = config_text(dir, server, extra_broker);
    Config::from_file(&ConfigFile::from_text(dir.join("collector.toml"), text)).unwrap()
}

/// What the test agent's event loop saw.
#[derive(Debug)]
pub enum Seen {
    /// Connected, and every subscription asked for is acknowledged (SUBACK): from now on the broker
    /// routes matching messages to this client.
    Connected,
    Ack(shiftlens_common::Ack),
    Message(String, Vec<u8>),
    Error(String),
}

/// A client playing a gateway (or a feed reader).
pub struct TestClient {
    pub client: AsyncClient,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// TLS client options for `client_id`, presenting `files` (or no certificate when `None`, trusting `ca`).
pub fn options(addr: SocketAddr, client_id: &str, ca: &Path, files: Option<&TlsFiles>) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = match files {
        Some(f) => broker::client_tls(f).unwrap(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).unwrap();
            for c in rustls_pemfile_certs(&pem) {
                roots.add(c).unwrap();
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(8 << 20, 8 << 20);
    o
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap()).collect()
}

/// Connects and keeps polling; subscribes to `subscribe` on every ConnAck and reports
/// [`Seen::Connected`] once the broker acknowledged them all. Stops at the first error when
/// `stop_on_error`.
pub fn connect(opts: MqttOptions, subscribe: Vec<String>, stop_on_error: bool) -> TestClient {
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    eventloop.set_network_options(broker::network_options());
    let (tx, seen) = mpsc::unbounded_channel();
    let c = client.clone();
    let task = tokio::spawn(async move {
        let mut unacked_subscriptions = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for s in &subscribe {
                        c.subscribe(s.clone(), QoS::AtLeastOnce).await.unwrap();
                    }
                    unacked_subscriptions = subscribe.len();
                    if unacked_subscriptions == 0 {
                        let _ = tx.send(Seen::Connected);
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) if unacked_subscriptions > 0 => {
                    unacked_subscriptions -= 1;
                    if unacked_subscriptions == 0 {
                        let _ = tx.send(Seen::Connected);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let msg = match decode_ack(&p.payload) {
                        Ok(a) if p.topic.ends_with("/ack") => Seen::Ack(a),
                        _ => Seen::Message(p.topic.clone(), p.payload.to_vec()),
                    };
                    let _ = tx.send(msg);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Seen::Error(e.to_string()));
                    if stop_on_error {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    TestClient { client, seen, task }
}

/// A gateway client with its own certificate, subscribed to its ack topic.
pub fn agent(addr: SocketAddr, pki: &Pki, gw: &str) -> TestClient {
    let files = pki.leaf(gw);
    let ack = Topic::Ack { site: site(), gateway: gateway(gw) }.to_string();
    connect(options(addr, gw, &pki.ca, Some(&files)), vec![ack], false)
}

pub fn site() -> SiteId {
    SiteId::parse(SITE).unwrap()
}

pub fn gateway(g: &str) -> GatewayId {
    GatewayId::parse(g).unwrap()
}

pub fn events_topic(gw: &str) -> String {
    Topic::Events { site: site(), gateway: gateway(gw) }.to_string()
}

/// A batch of `n` state events of `asset` with seqs `first..first+n`.
pub fn batch(gw: &str, epoch: u64, first: u64, n: u64) -> Batch {
    let events = (first..first + n)
        .map(|seq| WireEvent {
            seq,
            ts_ms: 1_700_000_000_000 + seq as i64 * 1000,
            asset: AssetId::parse("press-1").unwrap(),
            body: EventBody::State {
                state: if seq % 2 == 0 { MachineState::Down } else { MachineState::Running },
                reason: None,
            },
        })
        .collect();
    Batch::new(site(), gateway(gw), epoch, events)
}

pub async fn publish(c: &TestClient, topic: &str, payload: Vec<u8>) {
    c.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
}

pub async fn publish_batch(c: &TestClient, gw: &str, b: &Batch) {
    publish(c, &events_topic(gw), encode_batch(b)).await;
}

/// Waits for `what` to happen on `c` (consuming other messages), up to `secs`.
pub async fn wait_for<T>(c: &mut TestClient, secs: u64, mut what: impl FnMut(Seen) -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, c.seen.recv()).await {
            Ok(Some(s)) => {
                if let Some(t) = what(s) {
                    return Some(t);
                }
            }
            _ => return None,
        }
    }
}

/// Whether the broker turned the client away (`Some(true)`: a connection or subscription error) or took it
/// (`Some(false)`: connected with every subscription acknowledged); `None` when neither happened in time.
pub async fn refused(c: &mut TestClient) -> Option<bool> {
    wait_for(c, WAIT, |s| match s {
        Seen::Connected => Some(false),
        Seen::Error(_) => Some(true),
        _ => None,
    })
    .await
}

/// Collects acked seqs of `epoch` until all of `want` are acked or `secs` pass.
pub async fn wait_acked(
    c: &mut TestClient,
    epoch: u64,
    want: &BTreeSet<u64>,
    acked: &mut BTreeSet<u64>,
    secs: u64,
) -> bool {
    if want.is_subset(acked) {
        return true;
    }
    wait_for(c, secs, |s| {
        if let Seen::Ack(a) = s {
            if a.epoch == epoch {
                for &(lo, hi) in &a.ranges {
                    acked.extend(lo..=hi);
                }
            }
        }
        want.is_subset(acked).then_some(())
    })
    .await
    .is_some()
}

/// Polls `cond` until it holds or `secs` pass.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn count(db: &Path, sql: &str) -> i64 {
    let conn = shiftlens_collector::store::open_reader(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info,rumqttd=warn").with_test_writer().try_init();
    }
}

/// Reads a spawned collector's stdout until it prints its broker address, then keeps draining it.
pub async fn broker_addr(child: &mut tokio::process::Child) -> SocketAddr {
    listen_addrs(child, &["broker"]).await[0]
}

/// Reads a spawned collector's stdout until it has printed `{what} listening on ADDR` for each of `what`
/// (`broker`, `http`), then keeps draining it; returns the addresses in the order asked.
pub async fn listen_addrs(child: &mut tokio::process::Child, what: &[&str]) -> Vec<SocketAddr> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut found: Vec<Option<SocketAddr>> = vec![None; what.len()];
    tokio::time::timeout(Duration::from_secs(WAIT), async {
        while found.iter().any(Option::is_none) {
            let l = lines.next_line().await.unwrap().expect("collector exited before listening");
            for (w, f) in what.iter().zip(&mut found) {
                if let Some(a) = l.strip_prefix(&format!("{w} listening on ")) {
                    *f = Some(a.parse().unwrap());
                }
            }
        }
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found.into_iter().map(Option::unwrap).collect()
}
