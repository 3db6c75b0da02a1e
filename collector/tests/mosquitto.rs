//! Interoperability with a real Mosquitto (`[broker] mode = "external"`): Mosquitto runs as a child
//! process with mTLS (`require_certificate`, `use_identity_as_username`) and a per-gateway ACL as in
//! docs/operations.md; a gateway-role client publishes batches, the collector takes them through its
//! shared subscription, stores them and acks, and the ack reaches the gateway through Mosquitto.
#![allow(clippy::unwrap_used)]

mod support;

use shiftlens_collector::{feed, topology, Config};
use shiftlens_common::config::ConfigFile;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto child process, killed on drop.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Mosquitto on a port that was free a moment ago. Mosquitto cannot bind port 0 and say which port
/// it got, so another process may take the port meanwhile: then Mosquitto exits ("Address already in
/// use") and another port is tried. Success is Mosquitto's own log line saying it runs (after opening
/// the listener), never a connect, which a foreign listener on the port would answer too.
async fn spawn_mosquitto(dir: &Path, pki: &Pki) -> Mosquitto {
    for _attempt in 0..5 {
        if let Some(m) = tokio::task::block_in_place(|| try_spawn_mosquitto(dir, pki, free_port())) {
            return m;
        }
    }
    panic!("mosquitto did not start on any of 5 free ports; run with TEST_LOG=1 to see why");
}

fn try_spawn_mosquitto(dir: &Path, pki: &Pki, port: u16) -> Option<Mosquitto> {
    let server = pki.leaf("localhost");
    let acl = dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        "# gateways: their own topics only (username = certificate CN)\n\
         pattern write shiftlens/v1/+/%u/events\n\
         pattern write shiftlens/v1/+/%u/status\n\
         pattern read shiftlens/v1/+/%u/ack\n\
         \n\
         user shiftlens-collector\n\
         topic read shiftlens/v1/+/+/events\n\
         topic read shiftlens/v1/+/+/status\n\
         topic write shiftlens/v1/+/+/ack\n\
         topic write shiftlens/v1/+/downtime\n",
    )
    .unwrap();
    let conf = dir.join("mosquitto.conf");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\n\
             user {user}\n\
             persistence false\n\
             log_dest stderr\n\
             allow_anonymous false\n\
             acl_file {}\n\
             listener {port} 127.0.0.1\n\
             cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             max_queued_messages 100000\n",
            acl.display(),
            server.ca.display(),
            server.cert.display(),
            server.key.display()
        ),
    )
    .unwrap();
    let mut child =
        Command::new(MOSQUITTO).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Its log, line by line, read to the end (so Mosquitto never blocks on a full pipe).
    let (tx, lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("mosquitto: {l}");
            }
            let _ = tx.send(l);
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let m = Mosquitto { child, addr };
    let deadline = Instant::now() + Duration::from_secs(WAIT);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(" running") => return Some(m),
            Ok(l) if l.contains("Address already in use") => return None,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("mosquitto exited; run with TEST_LOG=1 to see why")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("mosquitto did not start within {WAIT} s"),
        }
    }
}

fn external_config(dir: &Path, port: u16, files: &shiftlens_collector::broker::TlsFiles) -> Config {
    external_config_with(dir, port, files, "client_id = \"shiftlens-collector\"")
}

/// `broker` adds `[broker]` keys (at least `client_id`).
fn external_config_with(dir: &Path, port: u16, files: &shiftlens_collector::broker::TlsFiles, broker: &str) -> Config {
    let p = |p: &PathBuf| p.display().to_string();
    let text = format!(
        r#"
[broker]
mode = "external"
host = "127.0.0.1"
port = {port}
{broker}
share_group = "shiftlens"

[broker.tls]
ca = "{}"
cert = "{}"
key = "{}"

[store]
path = "{}"

[http]
bind = "127.0.0.1:0"
"#,
        p(&files.ca),
        p(&files.cert),
        p(&files.key),
        dir.join("collector.db").display()
    );
    Config::from_file(&ConfigFile::from_text(dir.join("collector.toml"), text)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_through_mosquitto_with_mtls_are_stored_and_acked_via_the_shared_subscription() {
    init_logs();
    if !Path::new(MOSQUITTO).exists() {
        panic!("{MOSQUITTO} is missing: apt-get install -y mosquitto");
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let broker = spawn_mosquitto(dir.path(), &pki).await;
    let cfg = external_config(dir.path(), broker.addr.port(), &pki.leaf("shiftlens-collector"));
    let collector = topology::start(&cfg, feed::no_lines()).await.unwrap();
    assert!(collector.broker.is_none(), "external mode runs no broker of its own");

    let mut a = agent(broker.addr, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let epoch = 3;
    let batches: Vec<_> = (0..5).map(|i| batch("gw-1", epoch, i * 50 + 1, 50)).collect();
    let all: BTreeSet<u64> = (1..=250).collect();
    let mut acked = BTreeSet::new();
    // Until the collector's shared subscription exists, Mosquitto drops what is published (nobody
    // subscribes): the gateway resends what is not acked, as the real agent does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
    while acked != all && tokio::time::Instant::now() < deadline {
        for b in &batches {
            if b.events.iter().any(|e| !acked.contains(&e.seq)) {
                publish_batch(&a, "gw-1", b).await;
            }
        }
        wait_acked(&mut a, epoch, &all, &mut acked, 1).await;
    }
    assert_eq!(acked, all, "not every seq was acked through Mosquitto");
    let db = dir.path().join("collector.db");
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM events WHERE epoch = 3") == 250).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);

    // Mosquitto's ACL, not the collector, stops a gateway publishing under another gateway's id: nothing
    // of it arrives (Mosquitto drops it silently for MQTT 3.1.1).
    publish_batch(&a, "gw-2", &batch("gw-2", 9, 1, 10)).await;
    // A good batch after it proves the path is alive and ordered: once it is acked, the forged one would
    // have been stored already.
    publish_batch(&a, "gw-1", &batch("gw-1", epoch, 251, 1)).await;
    assert!(wait_acked(&mut a, epoch, &[251].into(), &mut acked, WAIT).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events WHERE epoch = 9"), 0);

    drop(a);
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Two collectors on one Mosquitto, each with its own `sites`: each stores exactly its site's batches (so each
/// store sees every event of its assets), and each gateway is acked by the collector of its site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_split_the_load_by_site() {
    use shiftlens_common::{Batch, SiteId, Topic};
    init_logs();
    if !Path::new(MOSQUITTO).exists() {
        panic!("{MOSQUITTO} is missing: apt-get install -y mosquitto");
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let broker = spawn_mosquitto(dir.path(), &pki).await;
    let files = pki.leaf("shiftlens-collector");
    let mut collectors = Vec::new();
    for (name, site) in [("c-a", "plant-a"), ("c-b", "plant-b")] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let keys = format!("client_id = \"shiftlens-{name}\"\nsites = [\"{site}\"]");
        let cfg = external_config_with(&d, broker.addr.port(), &files, &keys);
        collectors.push((d.join("collector.db"), topology::start(&cfg, feed::no_lines()).await.unwrap()));
    }

    // gw-1 reports for plant-a, gw-2 for plant-b; each resends until acked, as the agent does.
    let epoch = 4;
    let all: BTreeSet<u64> = (1..=40).collect();
    for (gw, site) in [("gw-1", "plant-a"), ("gw-2", "plant-b")] {
        let site = SiteId::parse(site).unwrap();
        let ack = Topic::Ack { site: site.clone(), gateway: gateway(gw) }.to_string();
        let mut c = connect(options(broker.addr, gw, &pki.ca, Some(&pki.leaf(gw))), vec![ack], false);
        assert!(wait_for(&mut c, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
        let b = batch(gw, epoch, 1, 40);
        let b = Batch::new(site.clone(), gateway(gw), epoch, b.events);
        let topic = Topic::Events { site, gateway: gateway(gw) }.to_string();
        let mut acked = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
        while acked != all && tokio::time::Instant::now() < deadline {
            publish(&c, &topic, shiftlens_common::wire::encode_batch(&b)).await;
            wait_acked(&mut c, epoch, &all, &mut acked, 1).await;
        }
        assert_eq!(acked, all, "{gw} was not acked");
    }
    let (a, b) = (&collectors[0].0, &collectors[1].0);
    let rows = |db: &Path, site: &str| count(db, &format!("SELECT COUNT(*) FROM events WHERE site = '{site}'"));
    assert!(eventually(WAIT, || rows(a, "plant-a") == 40 && rows(b, "plant-b") == 40).await);
    assert_eq!((rows(a, "plant-b"), rows(b, "plant-a")), (0, 0), "a collector stored another site's events");
    for (_, c) in collectors {
        c.shutdown(Duration::from_secs(10)).await.unwrap();
    }
}
