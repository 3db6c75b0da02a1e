//! The uplink's `username` / `password` against a real Mosquitto that refuses anonymous clients and checks a
//! `password_file`: a wrong password delivers nothing and the outbox keeps every event; the right one
//! delivers them; neither password shows up in the agent's logs.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod helpers;

use helpers::*;
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use shiftlens_agent::topology::Agent;
use shiftlens_common::{topic, wire, Ack, EventBody, Limits, Topic};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Deadline of every wait: generous for a loaded machine, since a wait ends as soon as its condition holds.
const LONG: Duration = Duration::from_secs(60);

const USER: &str = "gw-1";

/// Everything the agent logs (at debug), for searching.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs a process-wide subscriber that writes into this buffer (the test binary holds one test).
    fn capture() -> Self {
        let logs = Self::default();
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,rumqttd=warn")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init()
            .expect("no other tracing subscriber in this test binary");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Connection attempts the broker refused (the uplink's debug line with rumqttc's refusal).
    fn refusals(&self) -> usize {
        self.text().lines().filter(|l| l.contains("MQTT connection failed") && l.contains("Connection refused")).count()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a Mosquitto password file with one user.
fn password_file(dir: &Path, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&path)
        .arg(user)
        .arg(password)
        .status()
        .expect("mosquitto_passwd must be installed (apt-get install mosquitto)");
    assert!(status.success(), "mosquitto_passwd failed: {status}");
    path
}

/// What the logged-in collector has seen.
#[derive(Debug, Default)]
struct Seen {
    subscribed: bool,
    /// Every event delivered, duplicates included.
    deliveries: u64,
    /// Producer counters of the alarms delivered.
    counters: BTreeSet<u64>,
}

/// A collector that logs in with `user` / `password`, records every event and acks each batch.
fn logged_in_collector(port: u16, user: &str, password: &str) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut o = MqttOptions::new(format!("collector-{}", rand::random::<u32>()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(4 << 20, 4 << 20).set_credentials(user, password);
    let (client, mut eventloop) = AsyncClient::new(o, 1_000);
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(topic::ALL_EVENTS, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => s.lock().unwrap().subscribed = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let batch = wire::decode_batch(&p.payload, &Limits::default()).unwrap();
                    let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
                    {
                        let mut s = s.lock().unwrap();
                        for e in &batch.events {
                            s.deliveries += 1;
                            if let EventBody::Alarm(a) = &e.body {
                                s.counters.insert(a.id.parse().unwrap());
                            }
                        }
                    }
                    let ack = wire::encode_ack(&Ack::from_seqs(batch.epoch, seqs));
                    let t = Topic::Ack { site: batch.site, gateway: batch.gateway }.to_string();
                    let _ = client.try_publish(t, QoS::AtLeastOnce, false, ack);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (seen, task)
}

fn depth(agent: &Agent) -> u64 {
    agent.outbox.lock().unwrap().stats().unwrap().depth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mqtt_password_keeps_the_events_and_the_right_one_delivers_them_and_neither_is_logged() {
    let logs = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let right = format!("right-{:016x}", rand::random::<u64>());
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    let passwd = password_file(dir.path(), USER, &right);
    let broker = Mosquitto::start(dir.path(), &format!("allow_anonymous false\npassword_file {}", passwd.display()));
    let url = format!("mqtt://127.0.0.1:{}", broker.port);

    // The broker really checks: an anonymous client is refused.
    let (_anon, mut anon_loop) =
        AsyncClient::new(MqttOptions::new(format!("anon-{}", rand::random::<u32>()), "127.0.0.1", broker.port), 10);
    let anon = tokio::time::timeout(LONG, anon_loop.poll()).await.expect("an answer to the anonymous CONNECT");
    assert!(matches!(anon, Err(ConnectionError::ConnectionRefused(_))), "anonymous client: {anon:?}");

    let (seen, collector) = logged_in_collector(broker.port, USER, &right);
    wait_for("the logged-in collector's subscription", LONG, || seen.lock().unwrap().subscribed).await;

    // A wrong password: every connection attempt is refused, nothing arrives, the outbox keeps everything.
    const N: u64 = 200;
    let uplink = |password: &str| format!("username = {USER:?}\npassword = {password:?}");
    let config = agent_config(dir.path(), &url, &uplink(&wrong), "");
    let agent = Agent::start(&config).await.unwrap();
    produce(agent.observations.clone(), 0, N, 50).await;
    let mut committed = agent.committed.clone();
    wait_for("all events committed", LONG, || *committed.borrow_and_update() >= N).await;
    // Attempts that began after the last commit: had one been let in, it would have published.
    let refused = logs.refusals();
    wait_for("two more refused connection attempts", LONG, || logs.refusals() >= refused + 2).await;
    assert_eq!(seen.lock().unwrap().deliveries, 0, "nothing is delivered under a wrong password");
    assert_eq!(depth(&agent), N, "the outbox keeps every event");
    assert!(!logs.text().contains("connected to broker"), "the agent never got in");
    agent.shutdown().await.unwrap();

    // The right password, on the same outbox: the held events arrive, are acked and leave the outbox.
    let config = agent_config(dir.path(), &url, &uplink(&right), "");
    let agent = Agent::start(&config).await.unwrap();
    wait_for("every held event at the collector", LONG, || seen.lock().unwrap().counters.len() as u64 >= N).await;
    wait_for("an empty outbox", LONG, || depth(&agent) == 0).await;
    assert!(seen.lock().unwrap().counters.iter().copied().eq(0..N), "exactly the produced events");
    agent.shutdown().await.unwrap();
    collector.abort();

    let text = logs.text();
    assert!(text.contains("connected to broker"), "the log shows the login");
    assert!(!text.contains(&right), "the right password is in the agent's logs");
    assert!(!text.contains(&wrong), "the wrong password is in the agent's logs");
}
