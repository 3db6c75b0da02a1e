//! The whole chain with the real programs as separate processes: the simulated plant (Modbus TCP and
//! OPC UA), two agents, and the collector with its embedded broker over mutual TLS. Faults come from the
//! scenario `config/e2e/scenario.toml`; the answers are read through the collector's HTTP API.

#![allow(clippy::unwrap_used)]

mod demo;
mod dictionary;
mod restart_truth;
mod sparkplug;

use serde_json::Value;
use shiftlens_collector::pki::{Ca, Kind};
use shiftlens_common::{GatewayId, SiteId};
use shiftlens_e2e::*;
use std::time::Duration;

/// Closed downtime records of `asset` from `GET /api/v1/downtime`.
fn closed(records: &Value, asset: &str) -> Vec<Value> {
    records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["asset"] == asset && r["state"] == "closed")
        .cloned()
        .collect()
}

#[test]
fn plant_faults_become_downtime_and_coverage_through_both_protocols_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), "plant-a", &["gw-line1", "gw-line2"]);
    let mut collector = spawn_collector(dir.path());
    let plant = spawn_plant(dir.path(), "e2e/scenario.toml");
    let modbus = plant.modbus.to_string();
    let _line1 = spawn_agent(dir.path(), "gw-line1", &collector, &[("MODBUS", &modbus)]);
    let _line2 = spawn_agent(dir.path(), "gw-line2", &collector, &[("OPCUA", &plant.opcua)]);
    let _rogue = spawn_rogue_agent(dir.path(), &collector, &modbus);

    // The scenario repeats a 2.5 s stop every 6 s on press-1 (Modbus) and line2-labeler (OPC UA) for two
    // minutes, longer than the wait. An agent that connects during a stop sees only its rest, so wait for a
    // stop seen whole on each.
    let whole = |v: &Value, asset: &str| closed(v, asset).iter().any(|r| r["duration_s"].as_f64() >= Some(1.5));
    let records = wait_until(Duration::from_secs(90), "a whole downtime event of press-1 and of line2-labeler", || {
        let v = try_get_json(collector.http, "/api/v1/downtime?site=plant-a")?;
        (whole(&v, "press-1") && whole(&v, "line2-labeler")).then_some(v)
    });

    for (asset, gateway, line, reason, alarm, class) in [
        ("press-1", "gw-line1", "line1", "hydraulic pressure", "HYD-PRESSURE", Value::Null),
        ("line2-labeler", "gw-line2", "line2", "network", "NET-LOSS", Value::from("network")),
    ] {
        for r in closed(&records, asset) {
            assert_eq!(r["schema"], "shiftlens.downtime/1", "{r}");
            assert_eq!(r["gateway"], gateway, "{r}");
            assert_eq!(r["line"], line, "{r}");
            assert_eq!(r["reason"], reason, "{r}");
            assert_eq!(r["data_gap"], false, "{r}");
            assert_eq!(r["first_out_alarm"]["id"], alarm, "{r}");
            assert_eq!(r["first_out_alarm"]["class"], class, "{r}");
            // The plant stops for 2.5 s and runs for 3.5 s. Polling and a loaded machine stretch what is measured
            // by up to a few hundred ms, more when starved; a record of 6 s or more has spanned a run.
            let d = r["duration_s"].as_f64().unwrap();
            assert!(d > 0.0 && d < 6.0, "the plant stopped for 2.5 s in every 6 s, the record says {d} s: {r}");
        }
    }
    let stopped: Vec<&str> = records.as_array().unwrap().iter().filter_map(|r| r["asset"].as_str()).collect();
    assert!(
        stopped.iter().all(|a| *a == "press-1" || *a == "line2-labeler"),
        "only press-1 and line2-labeler ever stopped, got {stopped:?}"
    );

    // The join: each event's required skills are its asset's plus those of its first-out alarm's class.
    let join = get_json(collector.http, "/api/v1/join?asset=line2-labeler");
    let rows = join["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{join}");
    for row in rows {
        let required = row["required"].to_string();
        for skill in ["vision", "profinet", "s7-net"] {
            assert!(required.contains(skill), "line2-labeler needs {skill} (asset or alarm class network): {row}");
        }
        let covered = row["covered"].as_str().unwrap();
        let missing = row["missing"].as_str().unwrap();
        assert!(covered == "yes" && missing.is_empty() || covered == "no" && !missing.is_empty(), "{row}");
    }

    // Coverage of the skills press-1 needs, per shift.
    let coverage = get_json(collector.http, "/api/v1/coverage?asset=press-1");
    let skills: Vec<&str> = coverage["rows"].as_array().unwrap().iter().filter_map(|r| r["skill"].as_str()).collect();
    assert!(skills.contains(&"hydraulics") && skills.contains(&"plc-prog"), "{coverage}");

    // Both gateways are known; the one whose certificate comes from another CA tried and never got in. Its
    // refusal is its own event, so wait for it before asking whether it got in.
    collector.proc.wait_for("TLS handshake failed", WAIT);
    let gws = wait_until(WAIT, "both gateways in /api/v1/gateways", || {
        let gws = try_get_json(collector.http, "/api/v1/gateways")?;
        let text = gws["rows"].to_string();
        (text.contains("gw-line1") && text.contains("gw-line2")).then_some(gws)
    });
    assert!(!gws["rows"].to_string().contains("gw-rogue"), "{gws}");
}

/// An agent like gw-line1 but named gw-rogue, whose client certificate is signed by a CA the collector does not
/// know (it trusts the real CA for the broker's certificate, so only the client side is wrong).
fn spawn_rogue_agent(dir: &std::path::Path, collector: &Collector, modbus: &str) -> Proc {
    let rogue = dir.join("rogue");
    let now = chrono::Utc::now().timestamp_millis();
    let other = Ca::init(&rogue.join("pki"), "other CA", 30, now).unwrap();
    let kind = Kind::Gateway { site: SiteId::parse(SITE).unwrap(), gateway: GatewayId::parse("gw-rogue").unwrap() };
    other.issue(&kind, 30, now).unwrap();
    std::fs::copy(dir.join("pki/ca.pem"), rogue.join("pki/ca.pem")).unwrap();
    let template =
        std::fs::read_to_string(config_dir().join("demo/gw-line1.toml")).unwrap().replace("gw-line1", "gw-rogue");
    let port = collector.broker.port().to_string();
    let text = fill(&template, &[("DIR", &rogue.to_string_lossy()), ("BROKER_PORT", &port), ("MODBUS", modbus)]);
    let config = rogue.join("gw-rogue.toml");
    std::fs::write(&config, text).unwrap();
    Proc::spawn("gw-rogue", &bins().agent, &["run", "--config", &config.to_string_lossy()])
}

/// The collector's embedded broker refuses a gateway whose MQTT client id is not its certificate's CN (it closes
/// the connection at login, with no CONNACK) and one whose client certificate comes from another CA; the agent
/// says each in plain words in a WARN at the default level on its first failed connect.
#[test]
fn the_agent_explains_each_refusal_by_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), SITE, &["gw-line1"]);
    let collector = spawn_collector(dir.path());
    let port = collector.broker.port().to_string();
    let template = std::fs::read_to_string(config_dir().join("demo/gw-line1.toml")).unwrap();
    assert!(template.contains("client_id = \"gw-line1\""), "the template sets the client id");
    let text = fill(
        &template.replace("client_id = \"gw-line1\"", "client_id = \"shiftlens-plant-a-gw-line1\""),
        &[("DIR", &dir.path().to_string_lossy()), ("BROKER_PORT", &port), ("MODBUS", "127.0.0.1:1")],
    );
    let config = dir.path().join("wrong-id.toml");
    std::fs::write(&config, text).unwrap();
    let mut wrong_id = Proc::spawn("wrong-id", &bins().agent, &["run", "--config", &config.to_string_lossy()]);
    let line = wrong_id.wait_for("cannot connect to the broker", WAIT);
    assert!(line.contains("client id refused") && line.contains("must equal the certificate CN"), "{line}");
    assert!(line.contains("set [uplink] client_id to the CN of the gateway's certificate"), "{line}");

    let mut rogue = spawn_rogue_agent(dir.path(), &collector, "127.0.0.1:1");
    let line = rogue.wait_for("cannot connect to the broker", WAIT);
    assert!(line.contains("TLS: the broker refused this gateway's client certificate"), "{line}");
}
