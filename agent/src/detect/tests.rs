//! Table tests and properties of the detector.

use super::*;
use proptest::prelude::*;
use shiftlens_common::MachineState::{self, *};

fn asset(s: &str) -> AssetId {
    AssetId::parse(s).unwrap()
}

fn parse_meaning(toml_text: &str) -> Meaning {
    #[derive(serde::Deserialize)]
    struct W {
        meaning: Meaning,
    }
    toml::from_str::<W>(toml_text).unwrap().meaning
}

fn spec(point: &str, a: &str, meaning: &str) -> PointSpec {
    PointSpec { source: "plc".into(), point: point.into(), asset: asset(a), meaning: parse_meaning(meaning) }
}

fn val(point: &str, a: &str, ts_ms: i64, value: Value) -> Sample {
    Sample::Value { source: "plc".into(), point: point.into(), asset: asset(a), ts_ms, value }
}

fn link(ts_ms: i64, connected: bool) -> Sample {
    let error = (!connected).then(|| "timeout".to_string());
    Sample::Link { source: "plc".into(), assets: vec![asset("press-1")], ts_ms, connected, error }
}

fn states(obs: &[Observation]) -> Vec<(i64, MachineState, Option<String>)> {
    obs.iter()
        .filter_map(|o| match &o.body {
            EventBody::State { state, reason } => Some((o.ts_ms, *state, reason.clone())),
            _ => None,
        })
        .collect()
}

fn alarms(obs: &[Observation]) -> Vec<(i64, String, bool)> {
    obs.iter()
        .filter_map(|o| match &o.body {
            EventBody::Alarm(a) => Some((o.ts_ms, a.id.clone(), a.active)),
            _ => None,
        })
        .collect()
}

const CODES: &str = r#"meaning = { state = { codes = { 0 = "idle", 1 = "running", 2 = "down", 3 = "planned" } } }"#;

#[test]
fn a_state_code_makes_an_event_only_on_change_with_its_reason() {
    let mut d = Detector::new([
        spec("state", "press-1", CODES),
        spec("reason", "press-1", r#"meaning = { reason = { codes = { 12 = "jam" } } }"#),
    ]);
    let mut got = Vec::new();
    for (ts, s, r) in [(0, 1, 0), (10, 1, 0), (20, 2, 12), (30, 2, 12), (40, 2, 7), (50, 1, 7), (60, 3, 0)] {
        got.extend(d.apply([val("state", "press-1", ts, Value::Int(s)), val("reason", "press-1", ts, Value::Int(r))]));
    }
    assert_eq!(
        states(&got),
        vec![
            (0, Running, None),
            (20, Down, Some("jam".into())),
            (40, Down, Some("7".into())),
            (50, Running, None),
            (60, Planned, None)
        ]
    );
}

#[test]
fn flags_combine_by_strength() {
    let mut d = Detector::new([
        spec("run", "press-1", r#"meaning = { state = { preset = "flag", when_true = "running" } }"#),
        spec("fault", "press-1", r#"meaning = { state = { preset = "flag", when_true = "down" } }"#),
    ]);
    let cycle =
        |ts, run, fault| [val("run", "press-1", ts, Value::Bool(run)), val("fault", "press-1", ts, Value::Bool(fault))];
    let mut got = Vec::new();
    for (ts, run, fault) in [(0, false, false), (1, true, false), (2, true, true), (3, false, true), (4, true, false)] {
        got.extend(d.apply(cycle(ts, run, fault)));
    }
    assert_eq!(states(&got), vec![(0, Idle, None), (1, Running, None), (2, Down, None), (4, Running, None)]);
}

#[test]
fn machinery_state_uses_the_operation_mode_point() {
    let mut d = Detector::new([
        spec("item", "press-1", r#"meaning = { state = { preset = "opcua_machinery" } }"#),
        spec("mode", "press-1", r#"meaning = "operation_mode""#),
    ]);
    let mut got = d.apply([val("item", "press-1", 0, Value::Int(2)), val("mode", "press-1", 0, Value::Int(3))]);
    got.extend(d.apply([val("mode", "press-1", 5, Value::Int(1))]));
    got.extend(d.apply([val("item", "press-1", 9, Value::Int(1)), val("mode", "press-1", 9, Value::Int(3))]));
    assert_eq!(states(&got), vec![(0, Running, None), (5, Planned, None), (9, Down, None)]);
}

#[test]
fn alarms_come_from_bools_bits_and_thresholds() {
    let mut d = Detector::new([
        spec(
            "estop",
            "press-1",
            r#"meaning = { alarm = { id = "ESTOP", text = "E-stop", severity = 900, class = "safety" } }"#,
        ),
        spec("word", "press-1", r#"meaning = { alarm_word = { bits = { 0 = { id = "A0" }, 3 = { id = "A3" } } } }"#),
        spec("temp", "press-1", r#"meaning = { threshold = { id = "HOT", above = 80.0, hysteresis = 5.0 } }"#),
    ]);
    let mut got = Vec::new();
    let steps = [
        (0, false, 0b0000, 20.0),
        (1, true, 0b1000, 81.0),
        (2, true, 0b1001, 78.0),
        (3, false, 0b0001, 76.0),
        (4, false, 0b0000, 74.0),
        (5, false, 0b0000, 80.5),
    ];
    for (ts, e, w, t) in steps {
        got.extend(d.apply([
            val("estop", "press-1", ts, Value::Bool(e)),
            val("word", "press-1", ts, Value::Int(w)),
            val("temp", "press-1", ts, Value::Float(t)),
        ]));
    }
    let want: Vec<(i64, String, bool)> = [
        (1, "ESTOP", true),
        (1, "A3", true),
        (1, "HOT", true),
        (2, "A0", true),
        (3, "ESTOP", false),
        (3, "A3", false),
        (4, "A0", false),
        (4, "HOT", false),
        (5, "HOT", true),
    ]
    .into_iter()
    .map(|(t, i, a)| (t, i.to_string(), a))
    .collect();
    assert_eq!(alarms(&got), want);
    let EventBody::Alarm(first) = &got[0].body else { panic!("not an alarm: {:?}", got[0]) };
    assert_eq!((first.severity, first.text.as_str(), first.class.as_deref()), (900, "E-stop", Some("safety")));
}

#[test]
fn a_chattering_bit_is_debounced_and_counts_from_when_it_was_first_seen() {
    let mut d =
        Detector::new([spec("estop", "press-1", r#"meaning = { alarm = { id = "ESTOP", debounce = "100ms" } }"#)]);
    let mut got = d.apply([val("estop", "press-1", 0, Value::Bool(false))]);
    for (ts, v) in [(10, true), (20, false), (30, true), (60, false), (70, true), (120, true), (170, true)] {
        got.extend(d.apply([val("estop", "press-1", ts, Value::Bool(v))]));
    }
    assert_eq!(alarms(&got), vec![(70, "ESTOP".to_string(), true)]);
    // A change that holds but is never polled again counts on tick.
    got = d.apply([val("estop", "press-1", 200, Value::Bool(false))]);
    assert!(got.is_empty());
    assert!(d.tick(250).is_empty());
    assert_eq!(alarms(&d.tick(300)), vec![(200, "ESTOP".to_string(), false)]);
}

#[test]
fn comms_loss_gives_a_source_event_and_unknown_then_the_current_state_on_reconnect() {
    let mut d = Detector::new([spec("state", "press-1", CODES)]);
    let mut got = d.apply([link(0, true), val("state", "press-1", 0, Value::Int(1))]);
    got.extend(d.apply([link(5, false)]));
    got.extend(d.apply([link(6, false)]));
    got.extend(d.apply([link(9, true), val("state", "press-1", 9, Value::Int(1))]));
    let bodies: Vec<EventBody> = got.iter().map(|o| o.body.clone()).collect();
    let src = |connected: bool, error: Option<&str>| EventBody::Source {
        source: "plc".into(),
        connected,
        error: error.map(str::to_string),
    };
    let st = |state| EventBody::State { state, reason: None };
    assert_eq!(
        bodies,
        vec![src(true, None), st(Running), src(false, Some("timeout")), st(Unknown), src(true, None), st(Running)]
    );
}

#[test]
fn an_alarm_is_not_cleared_by_a_lost_link() {
    let mut d = Detector::new([spec("estop", "press-1", r#"meaning = { alarm = { id = "ESTOP" } }"#)]);
    let mut got = d.apply([link(0, true), val("estop", "press-1", 0, Value::Bool(true))]);
    got.extend(d.apply([link(1, false)]));
    got.extend(d.apply([link(2, true), val("estop", "press-1", 2, Value::Bool(true))]));
    got.extend(d.apply([val("estop", "press-1", 3, Value::Bool(false))]));
    assert_eq!(alarms(&got), vec![(0, "ESTOP".into(), true), (3, "ESTOP".into(), false)]);
}

/// After a restart ([`Detector::restore`] from the flags last reported) and after a reconnect, the first values
/// make exactly the alarm edges since the last report: a clear for what cleared, an activation for what became
/// active, nothing for what is unchanged (an alarm first seen inactive and never reported stays silent).
#[test]
fn a_restart_or_reconnect_reports_exactly_the_alarm_edges_since_the_last_report() {
    let specs = || {
        [
            spec("estop", "press-1", r#"meaning = { alarm = { id = "ESTOP" } }"#),
            spec(
                "word",
                "press-1",
                r#"meaning = { alarm_word = { bits = { 0 = { id = "A0" }, 1 = { id = "A1" } } } }"#,
            ),
            spec("temp", "press-1", r#"meaning = { threshold = { id = "HOT", above = 80.0, hysteresis = 5.0 } }"#),
        ]
    };
    // (last reported: ESTOP, A0, A1, HOT; values now: estop, word, temp; alarm edges expected)
    type Case = ([Option<bool>; 4], (bool, i64, f64), &'static [(&'static str, bool)]);
    let cases: [Case; 7] = [
        ([None; 4], (false, 0, 20.0), &[]),
        ([None; 4], (true, 0b11, 90.0), &[("ESTOP", true), ("A0", true), ("A1", true), ("HOT", true)]),
        ([Some(true), Some(true), Some(false), Some(true)], (true, 0b01, 90.0), &[]),
        (
            [Some(true), Some(true), Some(true), Some(true)],
            (false, 0, 20.0),
            &[("ESTOP", false), ("A0", false), ("A1", false), ("HOT", false)],
        ),
        ([Some(true), Some(false), Some(true), None], (true, 0b01, 20.0), &[("A0", true), ("A1", false)]),
        // The threshold's hysteresis state comes back too: 78 is still above 80 - 5 for an active HOT.
        ([None, None, None, Some(true)], (false, 0, 78.0), &[]),
        ([None, None, None, Some(false)], (false, 0, 78.0), &[]),
    ];
    for (i, (reported, (estop, word, temp), want)) in cases.into_iter().enumerate() {
        let flags: std::collections::HashMap<String, bool> = ["ESTOP", "A0", "A1", "HOT"]
            .into_iter()
            .zip(reported)
            .filter_map(|(id, f)| Some((id.to_string(), f?)))
            .collect();
        let values = |ts| {
            [
                val("estop", "press-1", ts, Value::Bool(estop)),
                val("word", "press-1", ts, Value::Int(word)),
                val("temp", "press-1", ts, Value::Float(temp)),
            ]
        };
        let want: Vec<(i64, String, bool)> = want.iter().map(|(id, a)| (10, id.to_string(), *a)).collect();

        // A restart: a new detector restored from the outbox's flags.
        let mut d = Detector::new(specs());
        d.restore(&crate::Reported::from([(asset("press-1"), flags.clone())]));
        assert_eq!(alarms(&d.apply(values(10))), want, "case {i}: restart");

        // A reconnect: the same detector reported the flags, lost the link and reads the values again.
        let mut d = Detector::new(specs());
        let before = |ts| {
            let on = |id: &str| flags.get(id).copied().unwrap_or(false);
            let w = i64::from(on("A0")) | i64::from(on("A1")) << 1;
            let t = if on("HOT") { 90.0 } else { 20.0 };
            [
                val("estop", "press-1", ts, Value::Bool(on("ESTOP"))),
                val("word", "press-1", ts, Value::Int(w)),
                val("temp", "press-1", ts, Value::Float(t)),
            ]
        };
        d.apply([link(0, true)].into_iter().chain(before(0)));
        assert!(d.apply([link(5, false)]).iter().all(|o| !matches!(o.body, EventBody::Alarm(_))), "case {i}");
        let got = d.apply([link(10, true)].into_iter().chain(values(10)));
        assert_eq!(alarms(&got), want, "case {i}: reconnect");
    }
}

/// Flags of alarms or assets the detector does not define are ignored by restore.
#[test]
fn restore_ignores_alarms_the_detector_does_not_define() {
    let mut d = Detector::new([spec("estop", "press-1", r#"meaning = { alarm = { id = "ESTOP" } }"#)]);
    let flags = |id: &str| std::collections::HashMap::from([(id.to_string(), true)]);
    d.restore(&crate::Reported::from([(asset("press-1"), flags("OTHER")), (asset("press-2"), flags("ESTOP"))]));
    assert_eq!(alarms(&d.apply([val("estop", "press-1", 1, Value::Bool(true))])), vec![(1, "ESTOP".into(), true)]);
}

/// An alarm's flag belongs to the asset and the alarm id, not to the point: two points of one asset that name
/// the same alarm (and an OPC UA condition with its id) judge their edges from one flag; another asset's alarm
/// of the same id has its own.
#[test]
fn points_naming_the_same_alarm_share_its_flag() {
    let mut d = Detector::new([
        spec("estop", "press-1", r#"meaning = { alarm = { id = "ESTOP" } }"#),
        spec("word", "press-1", r#"meaning = { alarm_word = { bits = { 2 = { id = "ESTOP" } } } }"#),
        spec("other", "press-2", r#"meaning = { alarm = { id = "ESTOP" } }"#),
    ]);
    let condition = |ts_ms, active| Sample::Alarm {
        source: "plc".into(),
        asset: asset("press-1"),
        ts_ms,
        alarm: shiftlens_common::Alarm { id: "ESTOP".into(), active, ..Default::default() },
    };
    let mut got = Vec::new();
    got.extend(d.apply([val("estop", "press-1", 1, Value::Bool(false)), val("word", "press-1", 1, Value::Int(0))]));
    got.extend(d.apply([val("estop", "press-1", 2, Value::Bool(true))]));
    got.extend(d.apply([val("word", "press-1", 3, Value::Int(4))]));
    got.extend(d.apply([val("other", "press-2", 4, Value::Bool(true))]));
    got.extend(d.apply([condition(5, false)]));
    got.extend(d.apply([val("estop", "press-1", 6, Value::Bool(false))]));
    got.extend(d.apply([val("word", "press-1", 7, Value::Int(0))]));
    got.extend(d.apply([val("word", "press-1", 8, Value::Int(4))]));
    let want: Vec<(i64, String, bool)> =
        [(2, true), (4, true), (5, false), (8, true)].into_iter().map(|(t, a)| (t, "ESTOP".to_string(), a)).collect();
    assert_eq!(alarms(&got), want);
}

#[test]
fn bad_meanings_are_explained() {
    let cases = [
        (r#"meaning = { state = { preset = "flag" } }"#, "needs `when_true`"),
        (r#"meaning = { state = { preset = "codes" } }"#, "needs a `codes` table"),
        (r#"meaning = { state = { codes = { x = "idle" } } }"#, "not an integer"),
        (r#"meaning = { alarm_word = { bits = { 40 = { id = "A" } } } }"#, "out of range"),
        (r#"meaning = { threshold = { id = "T" } }"#, "exactly one of `above` or `below`"),
        (r#"meaning = { alarm = { id = "" } }"#, "1-64 characters"),
    ];
    for (text, want) in cases {
        let errs = parse_meaning(text).check();
        assert!(errs.iter().any(|e| e.contains(want)), "{text}: {errs:?}");
    }
    assert!(parse_meaning(CODES).check().is_empty());
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct W {
        meaning: Meaning,
    }
    let e = toml::from_str::<W>(r#"meaning = { state = { codez = {} } }"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `codez`"), "{e}");
}

fn code_state(c: i64) -> MachineState {
    [Idle, Running, Down, Planned].get(c as usize).copied().unwrap_or(Unknown)
}

proptest! {
    /// Without debounce the state events are exactly the changes of the mapped input sequence.
    #[test]
    fn state_events_are_the_changes_of_the_input(codes in proptest::collection::vec(0i64..5, 1..60)) {
        let mut d = Detector::new([spec("state", "press-1", CODES)]);
        let mut got = Vec::new();
        for (ts, c) in codes.iter().enumerate() {
            got.extend(d.apply([val("state", "press-1", ts as i64, Value::Int(*c))]));
        }
        let mut want = Vec::new();
        let mut last = None;
        for (ts, c) in codes.iter().enumerate() {
            let s = code_state(*c);
            if last != Some(s) {
                want.push((ts as i64, s, None));
                last = Some(s);
            }
        }
        prop_assert_eq!(states(&got), want);
    }

    /// With debounce, every alarm edge after the first value held for the debounce time in the input, and
    /// the edges alternate.
    #[test]
    fn debounced_edges_held_long_enough(steps in proptest::collection::vec((1i64..60, any::<bool>()), 1..80)) {
        let mut d = Detector::new([spec("a", "press-1", r#"meaning = { alarm = { id = "A", debounce = "50ms" } }"#)]);
        let mut inputs = vec![(0i64, false)];
        let mut ts = 0;
        for (dt, v) in steps {
            ts += dt;
            inputs.push((ts, v));
        }
        let mut got = Vec::new();
        for (ts, v) in &inputs {
            got.extend(d.apply([val("a", "press-1", *ts, Value::Bool(*v))]));
        }
        let edges = alarms(&got);
        for w in edges.windows(2) {
            prop_assert!(w[0].2 != w[1].2, "edges alternate: {:?}", edges);
        }
        for (at, _, active) in &edges {
            // From `at` the input stayed `active` for at least 50 ms (up to a sample that saw it).
            let held: Vec<_> = inputs.iter().filter(|(t, _)| *t >= *at && *t < at + 50).collect();
            prop_assert!(held.iter().all(|(_, v)| v == active), "{:?} at {}: {:?}", active, at, inputs);
            prop_assert!(inputs.iter().any(|(t, v)| *t >= at + 50 && v == active), "confirmed by a later sample");
        }
    }
}

#[test]
fn point_state_stays_compact() {
    // Every configured point holds one: 10,000 points at 232 bytes each were 2.3 MB of the agent's heap.
    assert!(std::mem::size_of::<super::PointState>() <= 128, "{}", std::mem::size_of::<super::PointState>());
}
