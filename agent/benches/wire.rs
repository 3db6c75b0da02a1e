//! Bytes on the wire per change over a realistic mix, plain (batch version 2) against the dictionary form
//! (version 3, what `[uplink] encoding = "dictionary"` sends), through the uplink's own encoders.
//!
//! The mix, shaped like the modbus delivery bench (`benches/modbus.rs`): 10,000 points on 100 assets
//! (each one state point and 99 alarm points with texts, classes and priorities), behind 10 devices of
//! 1,000 points polled once a second, the polls 100 ms apart; each poll reports its 10 assets' changes,
//! each asset one state change (with a reason when it goes down) and two alarm edges of its alarms, so 300
//! changes a second, and the uplink publishes one batch per poll (30 events). Once every 10 minutes a
//! device drops and comes back (two source events with a different error text each time, contents the
//! dictionary sees once). One session of an hour (1,080,000 changes), and the same for 8 hours.
//!
//! "payload" is the MQTT payload; "wire" adds the PUBLISH framing at QoS 1 (fixed header, topic, packet id).
//! The dictionary's own bytes (the entries, each sent once per session) are included, and also shown
//! apart, with the first minute and a dictionary restarted every 5 minutes (what a dictionary per MQTT
//! session would cost on a flaky link) for comparison. `cargo bench -p shiftlens-agent --bench wire`
#![allow(clippy::unwrap_used)]

use shiftlens_common::wire_dict::DictEncoder;
use shiftlens_common::{wire, Alarm, AssetId, Batch, Event, EventBody, GatewayId, MachineState, SiteId, Topic};

const ASSETS: usize = 100;
const ALARMS_PER_ASSET: usize = 99;
const DEVICES: usize = 10;
const TEXTS: [&str; 12] = [
    "Hydraulic pressure low",
    "Motor overload",
    "Guard door open",
    "Emergency stop pressed",
    "Lubrication level low",
    "Coolant temperature high",
    "Drive fault",
    "Air pressure low",
    "Part jam at infeed",
    "Tool wear limit reached",
    "Encoder signal lost",
    "Safety light curtain interrupted",
];
const REASONS: [&str; 4] = ["hydraulic pressure", "material shortage", "tool change", "jam"];

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

/// A small deterministic generator (xorshift), so every run sends the same mix.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The plant: each asset's state and which alarms are active.
struct Plant {
    rng: Rng,
    states: Vec<MachineState>,
    active: Vec<Vec<bool>>,
    assets: Vec<AssetId>,
    seq: u64,
    outages: u64,
}

impl Plant {
    fn new() -> Self {
        Self {
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            states: vec![MachineState::Running; ASSETS],
            active: vec![vec![false; ALARMS_PER_ASSET]; ASSETS],
            assets: (0..ASSETS).map(|a| AssetId::parse(format!("asset-{a:03}")).unwrap()).collect(),
            seq: 0,
            outages: 0,
        }
    }

    fn event(&mut self, ts_ms: i64, asset: usize, body: EventBody) -> Event {
        self.seq += 1;
        Event { seq: self.seq, ts_ms, asset: self.assets[asset].clone(), body }
    }

    /// One poll of `device` at `ts_ms`: its assets' changes.
    fn poll(&mut self, device: usize, ts_ms: i64) -> Vec<Event> {
        let mut events = Vec::with_capacity(30);
        for asset in device * (ASSETS / DEVICES)..(device + 1) * (ASSETS / DEVICES) {
            let next = [MachineState::Running, MachineState::Idle, MachineState::Down][self.rng.below(3)];
            let next = if next == self.states[asset] { MachineState::Running } else { next };
            let next = if next == self.states[asset] { MachineState::Idle } else { next };
            self.states[asset] = next;
            let reason = (next == MachineState::Down).then(|| REASONS[self.rng.below(REASONS.len())].to_string());
            events.push(self.event(ts_ms, asset, EventBody::State { state: next, reason }));
            for _ in 0..2 {
                let k = self.rng.below(ALARMS_PER_ASSET);
                let active = !self.active[asset][k];
                self.active[asset][k] = active;
                let point = asset * 100 + 1 + k;
                let severity = [200u16, 500, 800][point % 3];
                let body = EventBody::Alarm(Alarm {
                    id: format!("A{point}"),
                    active,
                    severity,
                    text: TEXTS[point % TEXTS.len()].to_string(),
                    class: Some(["hydraulics", "drive", "safety", "process"][point % 4].to_string()),
                    priority: Some(["low", "medium", "high"][point % 3].to_string()),
                    ..Default::default()
                });
                events.push(self.event(ts_ms, asset, body));
            }
        }
        events
    }

    /// A device's link drops and comes back: a source event each way on its first asset.
    fn outage(&mut self, device: usize, ts_ms: i64) -> Vec<Event> {
        self.outages += 1;
        let asset = device * (ASSETS / DEVICES);
        let source = format!("plc-{device}");
        let error = Some(format!("read timed out after 1000 ms (attempt {})", self.outages));
        vec![
            self.event(ts_ms, asset, EventBody::Source { source: source.clone(), connected: false, error }),
            self.event(ts_ms + 3_000, asset, EventBody::Source { source, connected: true, error: None }),
        ]
    }
}

/// The batches of a session of `secs` seconds.
fn session(secs: i64) -> Vec<Batch> {
    let site = SiteId::parse("plant-a").unwrap();
    let gateway = GatewayId::parse("gw-line1").unwrap();
    let mut plant = Plant::new();
    let mut batches = Vec::new();
    let t0 = 1_700_000_000_000i64;
    for s in 0..secs {
        for device in 0..DEVICES {
            let ts = t0 + s * 1000 + device as i64 * 100;
            let mut events = plant.poll(device, ts);
            if s % 600 == 599 && device == s as usize / 600 % DEVICES {
                events.extend(plant.outage(device, ts));
            }
            batches.push(Batch::new(site.clone(), gateway.clone(), 0x1234_5678_9abc_def1, events));
        }
    }
    batches
}

struct Figures {
    changes: usize,
    payload: usize,
    wire: usize,
}

impl Figures {
    fn row(&self, name: &str) -> String {
        let n = self.changes as f64;
        format!("| {name} | {:.2} | {:.2} |", self.payload as f64 / n, self.wire as f64 / n)
    }
}

fn measure(batches: &[Batch], topic: &str, mut encode: impl FnMut(&Batch) -> Vec<u8>) -> Figures {
    let mut f = Figures { changes: 0, payload: 0, wire: 0 };
    for b in batches {
        let p = encode(b).len();
        f.changes += b.events.len();
        f.payload += p;
        f.wire += mqtt_wire(topic, p);
    }
    f
}

fn main() {
    let topic =
        Topic::Events { site: SiteId::parse("plant-a").unwrap(), gateway: GatewayId::parse("gw-line1").unwrap() }
            .to_string();
    println!("wire bench: 10,000 points, 100 assets, 300 changes/s, one batch per device poll (30 events)\n");
    println!("| session, form | payload B/change | wire B/change |");
    println!("| --- | ---: | ---: |");
    for (name, secs) in [("1 h", 3_600i64), ("8 h", 8 * 3_600)] {
        let batches = session(secs);
        let plain = measure(&batches, &topic, wire::encode_batch);
        let mut enc = DictEncoder::new(1);
        let dict = measure(&batches, &topic, |b| enc.encode(b));
        let entries = enc.len();
        // The same batches once more with every entry already known: the dictionary's own bytes are the
        // difference.
        let warm = measure(&batches, &topic, |b| enc.encode(b));
        println!("{}", plain.row(&format!("{name}, plain (version 2)")));
        println!("{}", dict.row(&format!("{name}, dictionary (version 3), entries included")));
        println!("{}", warm.row(&format!("{name}, dictionary, entries already known")));
        let dict_bytes = dict.payload - warm.payload;
        println!(
            "| {name}: {} changes, {} entries, {:.0} kB of entries ({:.2} B/change over the session) | | |",
            dict.changes,
            entries,
            dict_bytes as f64 / 1000.0,
            dict_bytes as f64 / dict.changes as f64
        );
    }
    // Were the dictionary new at every MQTT session (the agent keeps it across reconnects), a link that
    // reconnects every 5 minutes would pay for the entries again each time.
    let batches = session(3_600);
    let mut enc = DictEncoder::new(1);
    let mut i = 0;
    let f = measure(&batches, &topic, |b| {
        i += 1;
        if i % 3_000 == 0 {
            enc.restart();
        }
        enc.encode(b)
    });
    println!("{}", f.row("1 h, dictionary, had it restarted at a reconnect every 5 min"));
    // The first minute of a dictionary, when most entries travel.
    let first_minute = session(60);
    let mut enc = DictEncoder::new(1);
    let f = measure(&first_minute, &topic, |b| enc.encode(b));
    println!("{}", f.row("first minute of a dictionary"));
}
