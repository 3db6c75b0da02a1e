//! Bytes on the wire per change: the native protocol (CBOR batch on `shiftlens/v1/{site}/{gateway}/events`)
//! beside Sparkplug B (DDATA by alias on `spBv1.0/{group}/DDATA/{gateway}/{asset}`), for a single state
//! change, a single alarm edge, and a backlog of 100 changes over 10 assets (in runs of one asset, and
//! interleaved). "wire" adds the MQTT PUBLISH framing at QoS 1 (fixed header, topic, packet id).
//!
//! `cargo bench -p shiftlens-agent --bench sparkplug`
#![allow(clippy::unwrap_used)]

use shiftlens_agent::uplink::sparkplug::edge::Edge;
use shiftlens_common::{wire, Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId, Topic};

fn mqtt_wire(topic: &str, payload: usize) -> usize {
    let remaining = 2 + topic.len() + 2 + payload;
    let len_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_bytes + remaining
}

fn state(seq: u64, asset: &str, s: MachineState) -> Event {
    Event {
        seq,
        ts_ms: 1_700_000_000_000 + seq as i64 * 1000,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::State {
            state: s,
            reason: (s == MachineState::Down).then(|| "hydraulic pressure".to_string()),
        },
    }
}

fn alarm(seq: u64, asset: &str) -> Event {
    Event {
        seq,
        ts_ms: 1_700_000_000_000 + seq as i64 * 1000,
        asset: AssetId::parse(asset).unwrap(),
        body: EventBody::Alarm(Alarm {
            id: "HYD-PRESSURE".into(),
            active: true,
            severity: 800,
            text: "Hydraulic pressure low".into(),
            class: Some("hydraulics".into()),
            ..Default::default()
        }),
    }
}

/// (payload bytes, wire bytes) of the native protocol for `events` sent as one batch.
fn native(events: &[Event]) -> (usize, usize) {
    let site = SiteId::parse("plant-a").unwrap();
    let gateway = GatewayId::parse("gw-line1").unwrap();
    let topic = Topic::Events { site: site.clone(), gateway: gateway.clone() }.to_string();
    let payload = wire::encode_batch(&Batch::new(site, gateway, 0x1234_5678_9abc_def1, events.to_vec())).len();
    (payload, mqtt_wire(&topic, payload))
}

/// (payload bytes, wire bytes) of Sparkplug DDATA for `events`, after the births.
fn sparkplug(events: &[Event]) -> (usize, usize) {
    let assets: Vec<(String, Vec<String>)> =
        (0..10).map(|a| (format!("asset-{a}"), vec!["HYD-PRESSURE".to_string()])).collect();
    let mut edge = Edge::new("plant-a", "gw-line1", assets);
    let _ = edge.birth(1_700_000_000_000);
    assert!(!edge.learn(events));
    let messages = edge.data(events, 0, 1_700_000_000_000);
    let payload = messages.iter().map(|m| m.payload.len()).sum();
    let wire = messages.iter().map(|m| mqtt_wire(&m.topic, m.payload.len())).sum();
    (payload, wire)
}

fn main() {
    let states = MachineState::ALL;
    let runs: Vec<Event> =
        (0..100).map(|i| state(i + 1, &format!("asset-{}", i / 10), states[(i % 4) as usize])).collect();
    let interleaved: Vec<Event> =
        (0..100).map(|i| state(i + 1, &format!("asset-{}", i % 10), states[((i / 10) % 4) as usize])).collect();
    let cases: Vec<(&str, Vec<Event>)> = vec![
        ("one state change (down, with reason)", vec![state(1, "asset-0", MachineState::Down)]),
        ("one state change (running)", vec![state(1, "asset-0", MachineState::Running)]),
        ("one alarm edge", vec![alarm(1, "asset-0")]),
        ("backlog: 100 state changes, runs of 10 per asset", runs),
        ("backlog: 100 state changes, assets interleaved", interleaved),
    ];
    println!("| case | native payload B/change | native wire B/change | Sparkplug payload B/change | Sparkplug wire B/change |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, events) in cases {
        let n = events.len() as f64;
        let (np, nw) = native(&events);
        let (sp, sw) = sparkplug(&events);
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            np as f64 / n,
            nw as f64 / n,
            sp as f64 / n,
            sw as f64 / n
        );
    }
    // The births a (re)connect costs, once per session.
    let assets: Vec<(String, Vec<String>)> =
        (0..10).map(|a| (format!("asset-{a}"), vec!["HYD-PRESSURE".to_string()])).collect();
    let mut edge = Edge::new("plant-a", "gw-line1", assets);
    let births = edge.birth(1_700_000_000_000);
    let bytes: usize = births.iter().map(|m| mqtt_wire(&m.topic, m.payload.len())).sum();
    println!("\nSparkplug births for 10 assets with one alarm each (once per session and per rebirth): {} messages, {bytes} B on the wire", births.len());
}
