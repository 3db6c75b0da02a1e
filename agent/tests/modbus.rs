//! The Modbus source against the simulated plant over real TCP (and a real pty for RTU).
#![allow(clippy::unwrap_used)]

use shiftlens_agent::health::Health;
use shiftlens_agent::source::modbus::task::run_line;
use shiftlens_agent::{Config, Observation};
use shiftlens_common::config::ConfigFile;
use shiftlens_common::{EventBody, MachineState};
use shiftlens_sim::modbus::ModbusServer;
use shiftlens_sim::plant::{Faults, Plant};
use std::time::Duration;
use tokio::sync::mpsc;

const HEADER: &str = "site = \"plant1\"\ngateway = \"gw1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n";

async fn spawn_plant(assets: &[&str]) -> (Plant, ModbusServer) {
    let plant = Plant::new(assets.iter().copied());
    for a in assets {
        plant.update(a, |p| p.state = 1);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ModbusServer::start(plant.clone(), listener).unwrap();
    (plant, server)
}

/// A device on the sim reading asset block `block`: state codes, reason, alarm word, f32 temperature threshold.
/// The answer timeout is 1 s, so that a loaded machine does not make a healthy device look lost, unless
/// `extra` sets `timeout`.
fn device(id: &str, addr: &str, unit: u8, asset: &str, block: u32, extra: &str) -> String {
    let b = block * 100;
    let timeout = if extra.contains("timeout =") { "" } else { "timeout = \"1s\"" };
    format!(
        r#"
[[modbus]]
id = "{id}"
address = "{addr}"
unit = {unit}
poll = "50ms"
backoff_max = "400ms"
{timeout}
{extra}
[[modbus.points]]
name = "state"
asset = "{asset}"
table = "holding"
address = {b}
type = "u16"
meaning = {{ state = {{ codes = {{ 0 = "idle", 1 = "running", 2 = "down", 3 = "planned" }} }} }}
[[modbus.points]]
name = "reason"
asset = "{asset}"
table = "holding"
address = {r}
type = "u16"
meaning = {{ reason = {{}} }}
[[modbus.points]]
name = "alarms"
asset = "{asset}"
table = "holding"
address = {a}
type = "u16"
meaning = {{ alarm_word = {{ bits = {{ 0 = {{ id = "GUARD" }}, 3 = {{ id = "JAM", class = "mechanical" }} }} }} }}
[[modbus.points]]
name = "temperature"
asset = "{asset}"
table = "input"
address = {t}
type = "f32"
meaning = {{ threshold = {{ id = "HOT", above = 80.0, hysteresis = 5.0 }} }}
"#,
        r = b + 1,
        a = b + 2,
        t = b + 3
    )
}

fn config(devices: &str) -> Config {
    Config::from_file(&ConfigFile::from_text("agent.toml", format!("{HEADER}{devices}"))).unwrap()
}

/// Starts the source tasks of `config` and returns the observation stream.
fn spawn_sources(config: &Config) -> mpsc::Receiver<Observation> {
    let (tx, rx) = mpsc::channel(1024);
    for (line, devs) in shiftlens_agent::source::modbus_lines(&config.modbus) {
        tokio::spawn(run_line(line, devs, tx.clone(), Health::default()));
    }
    rx
}

/// How long [`expect`] waits: generous for a loaded machine, since the wait ends with the observation.
const WAIT: Duration = Duration::from_secs(30);

/// Waits (up to [`WAIT`]) for an observation matching `want`, returning it.
async fn expect(rx: &mut mpsc::Receiver<Observation>, what: &str, want: impl Fn(&Observation) -> bool) -> Observation {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(o)) if want(&o) => return o,
            Ok(Some(o)) => eprintln!("skipped while waiting for {what}: {o:?}"),
            Ok(None) => panic!("channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

fn is_state(o: &Observation, asset: &str, s: MachineState) -> bool {
    o.asset.as_str() == asset && matches!(&o.body, EventBody::State { state, .. } if *state == s)
}

fn is_link(o: &Observation, asset: &str, up: bool) -> bool {
    o.asset.as_str() == asset && matches!(&o.body, EventBody::Source { connected, .. } if *connected == up)
}

#[tokio::test]
async fn plant_state_changes_become_the_right_observations() {
    let (plant, server) = spawn_plant(&["press-1", "press-2"]).await;
    let cfg = config(&device("plc1", &server.local_addr().to_string(), 1, "press-2", 1, ""));
    let mut rx = spawn_sources(&cfg);
    expect(&mut rx, "source up", |o| is_link(o, "press-2", true)).await;
    expect(&mut rx, "running", |o| is_state(o, "press-2", MachineState::Running)).await;

    plant.update("press-2", |p| {
        p.state = 2;
        p.reason = 12;
        p.alarms = 0b1000;
    });
    // One poll cycle: the alarm edge and the state change, nothing else.
    let cycle = [expect(&mut rx, "change", |_| true).await.body, expect(&mut rx, "change", |_| true).await.body];
    assert!(cycle.contains(&EventBody::State { state: MachineState::Down, reason: Some("12".into()) }), "{cycle:?}");
    let jam = cycle.iter().find_map(|b| match b {
        EventBody::Alarm(a) => Some(a.clone()),
        _ => None,
    });
    let a = jam.unwrap();
    assert_eq!((a.id.as_str(), a.active, a.class.as_deref()), ("JAM", true, Some("mechanical")));

    plant.update("press-2", |p| p.temperature = 85.5);
    let o = expect(&mut rx, "hot alarm", |o| matches!(&o.body, EventBody::Alarm(a) if a.id == "HOT")).await;
    assert!(matches!(o.body, EventBody::Alarm(a) if a.active));
    plant.update("press-2", |p| {
        p.temperature = 20.0;
        p.state = 1;
        p.reason = 0;
        p.alarms = 0;
    });
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let o = expect(&mut rx, "recovery", |_| true).await;
        seen.push(o.body);
    }
    assert!(seen.contains(&EventBody::State { state: MachineState::Running, reason: None }), "{seen:?}");
    assert!(seen.iter().any(|b| matches!(b, EventBody::Alarm(a) if a.id == "HOT" && !a.active)), "{seen:?}");
    assert!(seen.iter().any(|b| matches!(b, EventBody::Alarm(a) if a.id == "JAM" && !a.active)), "{seen:?}");
}

#[tokio::test]
async fn an_exception_marks_the_source_lost_until_the_device_answers_again() {
    let (plant, server) = spawn_plant(&["press-1"]).await;
    let mut rx = spawn_sources(&config(&device("plc1", &server.local_addr().to_string(), 1, "press-1", 0, "")));
    expect(&mut rx, "running", |o| is_state(o, "press-1", MachineState::Running)).await;
    plant.set_faults(Faults { modbus_exception: Some(4), ..Faults::default() });
    let o = expect(&mut rx, "source lost", |o| is_link(o, "press-1", false)).await;
    let EventBody::Source { error: Some(e), .. } = &o.body else { panic!("{o:?}") };
    assert!(e.contains("exception") && e.contains("0x04"), "{e}");
    expect(&mut rx, "unknown", |o| is_state(o, "press-1", MachineState::Unknown)).await;
    plant.update("press-1", |p| p.state = 3);
    plant.set_faults(Faults::default());
    expect(&mut rx, "source back", |o| is_link(o, "press-1", true)).await;
    expect(&mut rx, "current state", |o| is_state(o, "press-1", MachineState::Planned)).await;
}

#[tokio::test]
async fn a_timeout_reopens_the_connection_and_later_values_are_right() {
    let (plant, server) = spawn_plant(&["press-1"]).await;
    let mut rx = spawn_sources(&config(&device("plc1", &server.local_addr().to_string(), 1, "press-1", 0, "")));
    expect(&mut rx, "running", |o| is_state(o, "press-1", MachineState::Running)).await;
    // Answers arrive after the 1 s timeout: each late answer would be taken for the next request.
    plant.set_faults(Faults { delay_ms: 1_500, ..Faults::default() });
    let o = expect(&mut rx, "source lost", |o| is_link(o, "press-1", false)).await;
    assert!(matches!(&o.body, EventBody::Source { error: Some(e), .. } if e.contains("no answer")), "{o:?}");
    plant.set_faults(Faults::default());
    expect(&mut rx, "source back", |o| is_link(o, "press-1", true)).await;
    expect(&mut rx, "current state", |o| is_state(o, "press-1", MachineState::Running)).await;
    for (code, want) in [(2, MachineState::Down), (0, MachineState::Idle), (1, MachineState::Running)] {
        plant.update("press-1", |p| p.state = code);
        let o = expect(&mut rx, "state", |o| matches!(o.body, EventBody::State { .. })).await;
        assert!(is_state(&o, "press-1", want), "after the reconnect every value is the right one: {o:?}");
    }
}

#[tokio::test]
async fn a_dead_unit_id_does_not_stall_another_on_the_same_address() {
    let (plant, server) = spawn_plant(&["press-1", "press-2"]).await;
    let addr = server.local_addr().to_string();
    // The dead unit times out after 200 ms; unit 1 has the default 1 s.
    let devices = format!(
        "{}{}",
        device("unit1", &addr, 1, "press-1", 0, ""),
        device("unit2", &addr, 2, "press-2", 1, "timeout = \"200ms\"")
    );
    server.set_silent_units(&[2]);
    let mut rx = spawn_sources(&config(&devices));
    expect(&mut rx, "unit 1 running", |o| is_state(o, "press-1", MachineState::Running)).await;
    expect(&mut rx, "unit 2 lost", |o| is_link(o, "press-2", false)).await;
    for (code, want) in
        [(2, MachineState::Down), (1, MachineState::Running), (2, MachineState::Down), (1, MachineState::Running)]
    {
        let changed = tokio::time::Instant::now();
        plant.update("press-1", |p| p.state = code);
        expect(&mut rx, "unit 1 change", |o| is_state(o, "press-1", want)).await;
        // Poll 50 ms; at most one 200 ms timeout of the dead unit can come first: about 250 ms. The bound is
        // loose for a loaded machine; unit 1 starved while the dead unit keeps retrying still crosses it.
        assert!(changed.elapsed() < Duration::from_secs(3), "unit 1 stalled for {:?}", changed.elapsed());
    }
    server.set_silent_units(&[]);
    expect(&mut rx, "unit 2 back", |o| is_link(o, "press-2", true)).await;
    expect(&mut rx, "unit 2 running", |o| is_state(o, "press-2", MachineState::Running)).await;
}

#[tokio::test]
async fn dropped_connections_and_a_server_restart_are_recovered() {
    let (plant, server) = spawn_plant(&["press-1"]).await;
    let mut rx = spawn_sources(&config(&device("plc1", &server.local_addr().to_string(), 1, "press-1", 0, "")));
    expect(&mut rx, "running", |o| is_state(o, "press-1", MachineState::Running)).await;
    plant.set_faults(Faults { drop_connections: true, ..Faults::default() });
    expect(&mut rx, "lost on drop", |o| is_link(o, "press-1", false)).await;
    plant.set_faults(Faults::default());
    expect(&mut rx, "back after drop", |o| is_link(o, "press-1", true)).await;
    expect(&mut rx, "running again", |o| is_state(o, "press-1", MachineState::Running)).await;

    server.restart(Duration::from_millis(300));
    expect(&mut rx, "lost on restart", |o| is_link(o, "press-1", false)).await;
    plant.update("press-1", |p| p.state = 2);
    expect(&mut rx, "back after restart", |o| is_link(o, "press-1", true)).await;
    expect(&mut rx, "down after restart", |o| is_state(o, "press-1", MachineState::Down)).await;
}

#[tokio::test]
async fn neighbouring_points_are_read_with_the_fewest_requests() {
    let (_plant, server) = spawn_plant(&["press-1", "press-2"]).await;
    let addr = server.local_addr().to_string();
    // Holding 0,1,2 (one request) + input 3-4 (one) for each asset; assets 100 apart stay separate.
    let cfg =
        config(&format!("{}{}", device("a", &addr, 1, "press-1", 0, ""), device("b", &addr, 1, "press-2", 1, "")));
    let before = server.requests();
    let report = shiftlens_agent::probe::run(&cfg).await;
    assert!(report.unreachable.is_empty(), "{:?}", report.unreachable);
    assert_eq!(server.requests() - before, 4, "two requests per device:\n{}", report.table());
    // Holding 0, 2 and 4: three requests without a gap allowance, one with `coalesce_gap = 1`.
    let sparse = |gap: u16| {
        let pts: String = [0, 2, 4]
            .iter()
            .map(|a| format!("[[modbus.points]]\nname = \"p{a}\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = {a}\ntype = \"u16\"\nmeaning = \"info\"\n"))
            .collect();
        config(&format!("[[modbus]]\nid = \"s\"\naddress = \"{addr}\"\ncoalesce_gap = {gap}\n{pts}"))
    };
    for (gap, want) in [(0, 3), (1, 1)] {
        let before = server.requests();
        let report = shiftlens_agent::probe::run(&sparse(gap)).await;
        assert_eq!(server.requests() - before, want, "gap {gap}:\n{}", report.table());
    }
}

#[tokio::test]
async fn every_register_type_and_word_order_decodes_from_the_plant() {
    let (plant, server) = spawn_plant(&["press-1", "press-2"]).await;
    plant.update("press-2", |p| {
        p.state = 2;
        p.alarms = 0x0109;
        p.temperature = -21.5;
        p.parts = 70_000;
    });
    let addr = server.local_addr();
    let pt = |name: &str, table: &str, address: u32, ty: &str, extra: &str| {
        format!(
            "[[modbus.points]]\nname = \"{name}\"\nasset = \"press-2\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\nmeaning = \"info\"\n{extra}\n"
        )
    };
    let points = [
        pt("state", "holding", 100, "u16", ""),
        pt("f32_abcd", "holding", 103, "f32", ""),
        pt("f32_cdab", "input", 105, "f32", "word_order = \"little\""),
        pt("u32_abcd", "holding", 107, "u32", ""),
        pt("u32_cdab", "holding", 109, "u32", "word_order = \"little\""),
        pt("i16_deci", "holding", 111, "i16", ""),
        pt("deg", "holding", 111, "i16", "scale = 0.1"),
        pt("i32_milli", "input", 112, "i32", ""),
        pt("alarms_swapped", "holding", 114, "u16", "byte_order = \"little\""),
        pt("bit3", "holding", 102, "bit", "bit = 3"),
        pt("bit1", "holding", 102, "bit", "bit = 1"),
        pt("coil8", "coil", 108, "bool", ""),
        pt("down", "discrete_input", 117, "bool", ""),
    ]
    .concat();
    let cfg = config(&format!("[[modbus]]\nid = \"plc\"\naddress = \"{addr}\"\n{points}"));
    let report = shiftlens_agent::probe::run(&cfg).await;
    let got: Vec<(String, String)> = report.rows.iter().map(|r| (r.point.clone(), r.value.clone())).collect();
    let want = [
        ("state", "2"),
        ("f32_abcd", "-21.5"),
        ("f32_cdab", "-21.5"),
        ("u32_abcd", "70000"),
        ("u32_cdab", "70000"),
        ("i16_deci", "-215"),
        ("deg", "-21.5"),
        ("i32_milli", "-21500"),
        ("alarms_swapped", "265"),
        ("bit3", "true"),
        ("bit1", "false"),
        ("coil8", "true"),
        ("down", "true"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(got, want, "\n{}", report.table());
    assert!(report.rows.iter().all(|r| r.status == "ok"), "\n{}", report.table());
}

#[tokio::test]
async fn probe_prints_every_point_and_names_an_unreachable_device_and_an_exception() {
    let (_plant, server) = spawn_plant(&["press-1"]).await;
    let addr = server.local_addr().to_string();
    // Bound but never listening: connections are refused, and no other socket can take the port meanwhile
    // (a port released after `bind(0)` could be given to another test's listener).
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = refusing.local_addr().unwrap().to_string();
    let bad_address = "[[modbus.points]]\nname = \"beyond\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 5000\ntype = \"u16\"\nmeaning = \"info\"\n";
    let devices = format!(
        "{}{}[[modbus]]\nid = \"odd\"\naddress = \"{addr}\"\n{bad_address}",
        device("good", &addr, 1, "press-1", 0, ""),
        device("gone", &closed, 1, "press-9", 0, ""),
    );
    let report = shiftlens_agent::probe::run(&config(&devices)).await;
    let table = report.table();
    assert_eq!(report.unreachable.len(), 1, "{table}");
    assert_eq!(report.unreachable[0].0, "gone", "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("DEVICE") && lines[0].contains("RAW") && lines[0].contains("QUALITY"), "{table}");
    assert_eq!(lines.len(), 1 + 4 + 4 + 1, "{table}");
    let row = |d: &str, p: &str| report.rows.iter().find(|r| r.device == d && r.point == p).unwrap();
    assert_eq!((row("good", "state").raw.as_str(), row("good", "state").value.as_str()), ("0x0001", "1"));
    assert_eq!(row("good", "state").meaning, "state (codes)");
    assert!(row("gone", "state").status.starts_with("unreachable"), "{table}");
    assert!(row("odd", "beyond").status.contains("0x02"), "IllegalDataAddress: {table}");
}

#[tokio::test]
async fn rtu_framing_works_over_a_pty() {
    use tokio_serial::SerialPort;
    let plant = Plant::new(["press-1"]);
    plant.update("press-1", |p| p.state = 2);
    let (master, mut slave) = tokio_serial::SerialStream::pair().unwrap();
    slave.set_exclusive(false).unwrap();
    let path = slave.name().unwrap();
    let _server = shiftlens_sim::modbus::serve_rtu(plant.clone(), master);
    let text = format!(
        "[[modbus]]\nid = \"rtu\"\nserial = \"{path}\"\nbaud = 115200\nparity = \"none\"\nexclusive = false\nunit = 7\npoll = \"50ms\"\ntimeout = \"500ms\"\n[[modbus.points]]\nname = \"state\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\nmeaning = {{ state = {{ codes = {{ 1 = \"running\", 2 = \"down\" }} }} }}\n"
    );
    let mut rx = spawn_sources(&config(&text));
    expect(&mut rx, "down over RTU", |o| is_state(o, "press-1", MachineState::Down)).await;
    plant.update("press-1", |p| p.state = 1);
    expect(&mut rx, "running over RTU", |o| is_state(o, "press-1", MachineState::Running)).await;
    drop(slave);
}
