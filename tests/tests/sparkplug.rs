//! A ShiftLens agent in Sparkplug mode and the collector as its primary host, through the embedded broker's
//! gate: the agent waits for the collector's STATE, publishes its births and data as an edge node, and its
//! stops become downtime (reason and first-out alarm included) by ShiftLens's own metric names, with no map.

use shiftlens_agent::topology::Agent;
use shiftlens_agent::Observation;
use shiftlens_collector::{feed, topology};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{Alarm, AssetId, EventBody, MachineState};
use std::time::{Duration, Instant};

fn count(db: &std::path::Path, sql: &str) -> i64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_in_sparkplug_mode_feeds_the_collector_s_host_application() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let text = format!(
        "[broker]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n\
         [sparkplug]\nhost_id = \"shiftlens\"\ngroups = [\"plant-a\"]\n",
        db.display().to_string()
    );
    let config =
        shiftlens_collector::Config::from_file(&ConfigFile::from_text(dir.path().join("c.toml"), text)).unwrap();
    let collector = topology::start(&config, feed::no_lines()).await.unwrap();
    let port = collector.broker.unwrap().port();
    let agent_text = format!(
        "site = \"plant-a\"\ngateway = \"gw-1\"\n[outbox]\npath = {:?}\n[uplink]\nbroker = \"mqtt://127.0.0.1:{port}\"\n\
         client_id = \"plant-a.gw-1\"\nreconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\nprotocol = \"sparkplug\"\n\
         [uplink.sparkplug]\nhost_id = \"shiftlens\"\n",
        dir.path().join("outbox.db").display().to_string()
    );
    let agent_config =
        shiftlens_agent::Config::from_file(&ConfigFile::from_text(dir.path().join("a.toml"), agent_text)).unwrap();
    let agent = Agent::start(&agent_config).await.unwrap();
    let t0 = chrono::Utc::now().timestamp_millis() - 600_000;
    let press = AssetId::parse("press-1").unwrap();
    let obs = |ts_ms, body| Observation { ts_ms, asset: press.clone(), body };
    let state = |s, reason: Option<&str>| EventBody::State { state: s, reason: reason.map(str::to_string) };
    let alarm = EventBody::Alarm(Alarm {
        id: "HYD-PRESSURE".into(),
        active: true,
        severity: 800,
        text: "Hydraulic pressure low".into(),
        class: None,
        ..Default::default()
    });
    for o in [
        obs(t0, state(MachineState::Running, None)),
        obs(t0 + 59_000, alarm),
        obs(t0 + 60_000, state(MachineState::Down, Some("hydraulic pressure"))),
        obs(t0 + 150_000, state(MachineState::Running, None)),
    ] {
        agent.observations.send(o).await.unwrap();
    }
    let closed = "SELECT COUNT(*) FROM downtime WHERE site = 'plant-a' AND asset = 'press-1' AND gateway = 'gw-1' \
                  AND end_ms - start_ms = 90000 AND reason = 'hydraulic pressure' AND first_out LIKE '%HYD-PRESSURE%'";
    eventually("the agent's stop as downtime at the collector", || count(&db, closed) == 1).await;
    eventually("an empty outbox", || agent.outbox.lock().unwrap().stats().unwrap().depth == 0).await;
    agent.shutdown().await.unwrap();
    let offline = "SELECT COUNT(*) FROM gateways WHERE site = 'plant-a' AND gateway = 'gw-1' AND online = 0";
    eventually("the agent's NDEATH marking it offline", || count(&db, offline) == 1).await;
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}
