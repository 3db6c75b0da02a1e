use super::host::{asset_id, gateway_id, Host, Output};
use super::*;
use shiftlens_common::sparkplug::proto::{DataType, Value};
use shiftlens_common::EventBody;

fn config(text: &str) -> Result<Sparkplug, Vec<String>> {
    #[derive(Deserialize)]
    struct T {
        sparkplug: RawSparkplugConfig,
    }
    let file = ConfigFile::from_text("collector.toml", text);
    let t: T = file.parse().map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    t.sparkplug.validate(&file, &mut errors);
    if errors.is_empty() {
        Ok(t.sparkplug.validated())
    } else {
        Err(errors.iter().map(ToString::to_string).collect())
    }
}

const MAPPED: &str = r#"[sparkplug]
host_id = "shiftlens"
groups = ["plant-a"]
[[sparkplug.map]]
metric = "Status"
state = { 0 = "idle", 1 = "running", 2 = "down", "Maintenance" = "planned" }
[[sparkplug.map]]
metric = "Faults/Jam"
alarm = "JAM"
severity = 700
text = "Infeed jam"
[[sparkplug.map]]
metric = "StopReason"
reason = { 3 = "material" }
"#;

#[test]
fn the_mapping_table_is_checked_with_file_line_col() {
    assert!(config(MAPPED).is_ok(), "{:?}", config(MAPPED).err());
    let e = config(
        "[sparkplug]\nhost_id = \"a/b\"\ngroups = [\"Plant A\"]\n[[sparkplug.map]]\nmetric = \"x\"\nalarm = \"A\"\nreason = {}\n",
    )
    .unwrap_err();
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("collector.toml:2:11: "), "{e:?}");
    assert!(e[1].starts_with("collector.toml:3:11: ") && e[1].contains("set [sparkplug] site"), "{e:?}");
    assert!(e[2].contains("exactly one of"), "{e:?}");
    let e = config("[sparkplug]\nhost_id = \"h\"\ngroups = []\n").unwrap_err();
    assert!(e[0].contains("at least one"), "{e:?}");
    let e = config("[sparkplug]\nhost_id = \"h\"\ngroups = [\"g\"]\n[[sparkplug.map]]\nmetric = \"x\"\nstate = { 1 = \"broken\" }\n")
        .unwrap_err();
    assert!(e[0].contains("broken"), "{e:?}");
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Payload {
    Payload { timestamp: Some(1_700_000_000_000), metrics, seq, uuid: None, body: None }
}

fn int(name: Option<&str>, alias: Option<u64>, v: u32) -> Metric {
    let mut m = Metric::uint64(name, alias, 1_700_000_000_100, 0);
    (m.datatype, m.value) = (Some(DataType::Int32 as u32), Some(Value::IntValue(v)));
    m
}

fn events(out: &[Output]) -> Vec<EventBody> {
    out.iter()
        .flat_map(|o| match o {
            Output::Events { events, .. } => events.iter().map(|e| e.body.clone()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn births_and_data_become_events_through_the_map_and_aliases() {
    let mut h = Host::new(&config(MAPPED).unwrap());
    let nb = payload(Some(0), vec![Metric::uint64(Some("bdSeq"), None, 0, 4)]);
    let out = h.apply("plant-a", MessageType::NBirth, "Line 3", None, &nb, 0);
    assert!(matches!(&out[0], Output::Online { gateway, .. } if gateway.as_str() == "line-3"));
    let db = payload(Some(1), vec![int(Some("Status"), Some(10), 1), int(Some("Faults/Jam"), Some(11), 0)]);
    let out = h.apply("plant-a", MessageType::DBirth, "Line 3", Some("Press 7"), &db, 0);
    let e = events(&out);
    assert_eq!(e.len(), 2);
    assert!(matches!(e[0], EventBody::State { state: MachineState::Running, .. }));
    let dd = payload(Some(2), vec![int(None, Some(10), 2), int(Some("StopReason"), None, 3), int(None, Some(11), 1)]);
    let out = h.apply("plant-a", MessageType::DData, "Line 3", Some("Press 7"), &dd, 0);
    let e = events(&out);
    assert_eq!(
        e[0],
        EventBody::State { state: MachineState::Down, reason: Some("material".into()) },
        "the reason of the same instant joins its state"
    );
    assert!(matches!(&e[1], EventBody::Alarm(a) if a.id == "JAM" && a.active && a.severity == 700));
    let Output::Events { events: evs, .. } = &out[0] else { panic!() };
    assert_eq!(evs[0].asset.as_str(), "Press-7");
    assert_eq!(h.live().len(), 1);
}

#[test]
fn gaps_unknown_aliases_and_missing_births_ask_for_a_rebirth_and_deaths_go_offline() {
    let mut h = Host::new(&config(MAPPED).unwrap());
    let out = h.apply("plant-a", MessageType::DData, "n1", Some("d"), &payload(Some(5), vec![]), 0);
    assert!(matches!(out[0], Output::Offline { .. }), "a node without a birth is unknown");
    assert!(matches!(out[1], Output::Rebirth { .. }));
    let out = h.apply("plant-a", MessageType::DData, "n1", Some("d"), &payload(Some(6), vec![]), 1000);
    assert!(out.is_empty(), "rebirth requests are spaced: {out:?}");
    let nb = payload(Some(0), vec![Metric::uint64(Some("bdSeq"), None, 0, 1)]);
    h.apply("plant-a", MessageType::NBirth, "n1", None, &nb, 2000);
    let out = h.apply("plant-a", MessageType::NData, "n1", None, &payload(Some(3), vec![]), 3000);
    assert!(matches!(&out[0], Output::Rebirth { why, .. } if why.contains("seq gap")), "{out:?}");
    h.apply("plant-a", MessageType::NBirth, "n1", None, &nb, 9000);
    let out =
        h.apply("plant-a", MessageType::DData, "n1", Some("d"), &payload(Some(1), vec![int(None, Some(99), 1)]), 9000);
    assert!(matches!(&out[0], Output::Rebirth { why, .. } if why.contains("alias")), "{out:?}");
    h.apply("plant-a", MessageType::NBirth, "n1", None, &nb, 20_000);
    let stale = payload(None, vec![Metric::uint64(Some("bdSeq"), None, 0, 0)]);
    assert!(matches!(h.apply("plant-a", MessageType::NDeath, "n1", None, &stale, 0)[0], Output::Ignored { .. }));
    let death = payload(None, vec![Metric::uint64(Some("bdSeq"), None, 0, 1)]);
    assert!(matches!(h.apply("plant-a", MessageType::NDeath, "n1", None, &death, 0)[0], Output::Offline { .. }));
    assert!(h.live().is_empty());
}

#[test]
fn shiftlens_metric_names_need_no_map_and_ids_are_made_valid() {
    let mut h = Host::new(&config("[sparkplug]\nhost_id = \"h\"\ngroups = [\"g\"]\n").unwrap());
    h.apply("g", MessageType::NBirth, "gw", None, &payload(Some(0), vec![]), 0);
    let db = payload(
        Some(1),
        vec![
            Metric::string(Some("state"), Some(5), 1_700_000_000_000, Some("down")),
            Metric::string(Some("reason"), Some(6), 1_700_000_000_000, Some("jam")),
            Metric::boolean(Some("alarm/E1"), Some(7), 1_700_000_000_000, Some(true)),
            Metric::boolean(Some("connected"), Some(8), 1_700_000_000_000, None),
        ],
    );
    let e = events(&h.apply("g", MessageType::DBirth, "gw", Some("press"), &db, 0));
    assert_eq!(e[0], EventBody::State { state: MachineState::Down, reason: Some("jam".into()) });
    assert!(matches!(&e[1], EventBody::Alarm(a) if a.id == "E1" && a.active));
    assert_eq!(e.len(), 2, "a null value makes no event");
    assert_eq!(gateway_id("Edge Node/1").unwrap().as_str(), "edge-node-1");
    assert_eq!(asset_id("Press #7").unwrap().as_str(), "Press--7");
}

#[test]
fn the_commented_example_in_collector_example_toml_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("# [sparkplug]\n").unwrap();
    let example: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
        // Prose lines stay out; option lines and tables go in.
        .filter(|l| l.is_empty() || l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = config(&example).unwrap();
    assert_eq!(c.map.len(), 3);
}

#[test]
fn oversized_names_and_texts_are_not_used() {
    let mut h = Host::new(&config("[sparkplug]\nhost_id = \"h\"\ngroups = [\"g\"]\n").unwrap());
    h.apply("g", MessageType::NBirth, "gw", None, &payload(Some(0), vec![]), 0);
    let long = "x".repeat(2000);
    let db = payload(
        Some(1),
        vec![
            Metric::boolean(Some(&format!("alarm/{long}")), Some(1), 1_700_000_000_000, Some(true)),
            Metric::string(Some("reason"), Some(2), 1_700_000_000_000, Some(&long)),
            Metric::string(Some("state"), Some(3), 1_700_000_000_000, Some("down")),
        ],
    );
    let e = events(&h.apply("g", MessageType::DBirth, "gw", Some("press"), &db, 0));
    assert_eq!(e, [EventBody::State { state: MachineState::Down, reason: None }]);
}
