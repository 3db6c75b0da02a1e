//! The dictionary form (batch version 3) between the real agent and the real collector through Mosquitto
//! (`[broker] mode = "external"`): the collector restarts between batches and so loses the agent's
//! dictionary while the agent's MQTT session goes on; it asks for the dictionary, the agent sends again
//! with a new one, and the store holds every event once, as the agent saw it.

use shiftlens_agent::topology::Agent;
use shiftlens_agent::Observation;
use shiftlens_collector::{feed, topology};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{AssetId, EventBody, MachineState};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto child process (plaintext, loopback, anonymous), killed on drop.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Mosquitto on a port that was free a moment ago (it cannot bind port 0); another port if that one
/// was taken meanwhile.
fn mosquitto(dir: &Path) -> (Mosquitto, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("user root\npersistence false\nallow_anonymous true\nmax_queued_messages 100000\nlistener {port} 127.0.0.1\n"),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/mosquitto must be installed (apt-get install mosquitto)");
        let mut m = Mosquitto(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (m, port);
            }
            if m.0.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("mosquitto did not start on any of 5 free ports");
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = shiftlens_collector::store::open_reader(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ASSETS: [&str; 4] = ["press-1", "press-2", "oven-1", "robot-1"];

/// Observation `n`: the four assets in turn, running and down by turns (8 contents, repeated).
fn toggle(t0: i64, n: u64) -> Observation {
    let state = if (n / 4) % 2 == 0 { MachineState::Running } else { MachineState::Down };
    Observation {
        ts_ms: t0 + n as i64 * 100,
        asset: AssetId::parse(ASSETS[(n % 4) as usize]).unwrap(),
        body: EventBody::State { state, reason: (state == MachineState::Down).then(|| "jam".to_string()) },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_asks_for_the_dictionary_and_stores_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = tokio::task::block_in_place(|| mosquitto(dir.path()));
    let db = dir.path().join("collector.db");
    let text = format!(
        "[broker]\nmode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\n[store]\npath = {:?}\n\
         [http]\nbind = \"127.0.0.1:0\"\n",
        db.display().to_string()
    );
    let config =
        shiftlens_collector::Config::from_file(&ConfigFile::from_text(dir.path().join("c.toml"), text)).unwrap();
    let collector = topology::start(&config, feed::no_lines()).await.unwrap();
    let agent_text = format!(
        "site = \"plant-a\"\ngateway = \"gw-1\"\n[outbox]\npath = {:?}\n[uplink]\nbroker = \"mqtt://127.0.0.1:{port}\"\n\
         reconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\nack_timeout = \"2s\"\n",
        dir.path().join("outbox.db").display().to_string()
    );
    let agent_config =
        shiftlens_agent::Config::from_file(&ConfigFile::from_text(dir.path().join("a.toml"), agent_text)).unwrap();
    let agent = Agent::start(&agent_config).await.unwrap();
    let depth = || agent.outbox.lock().unwrap().stats().unwrap().depth;
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;

    for n in 0..200 {
        agent.observations.send(toggle(t0, n)).await.unwrap();
    }
    eventually("the first part stored and confirmed", || {
        count(&db, "SELECT COUNT(*) FROM events") == 200 && depth() == 0
    })
    .await;
    assert_eq!(shiftlens_collector::metrics::Metrics::get(&collector.metrics.dictionary_requests), 0);

    // The collector restarts: its dictionaries are gone, the agent's session and dictionary are not.
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
    let collector = topology::start(&config, feed::no_lines()).await.unwrap();
    for n in 200..400 {
        agent.observations.send(toggle(t0, n)).await.unwrap();
    }
    eventually("the second part stored and confirmed", || {
        count(&db, "SELECT COUNT(*) FROM events") == 400 && depth() == 0
    })
    .await;
    assert!(
        shiftlens_collector::metrics::Metrics::get(&collector.metrics.dictionary_requests) >= 1,
        "the restarted collector asked for the dictionary"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);

    // Every event once, as the agent saw it.
    let conn = shiftlens_collector::store::open_reader(&db).unwrap();
    let mut st = conn.prepare("SELECT seq, ts_ms, asset, body FROM events ORDER BY seq").unwrap();
    let rows: Vec<(i64, i64, String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 400);
    for (n, (seq, ts_ms, asset, body)) in rows.into_iter().enumerate() {
        let want = toggle(t0, n as u64);
        assert_eq!((seq, ts_ms, asset.as_str()), (n as i64 + 1, want.ts_ms, want.asset.as_str()), "event {n}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::to_value(&want.body).unwrap(), "event {n}");
    }
    agent.shutdown().await.unwrap();
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}
