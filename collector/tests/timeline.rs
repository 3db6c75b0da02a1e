//! Property: any permutation and duplication of a set of events (and last wills) yields the same
//! downtime table and the same state intervals as applying them once in time order (agent restart breaks
//! included).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use shiftlens_collector::timeline::{Input, Timeline};
use shiftlens_common::{Alarm, AssetId, Event, EventBody, GatewayId, MachineState, SiteId};

fn input(asset: u8, seq: u64, ts_ms: i64, kind: u8) -> Input {
    let body = match kind {
        0..=4 => EventBody::State { state: MachineState::ALL[kind as usize], reason: Some(format!("r{seq}")) },
        5 => EventBody::Alarm(Alarm {
            id: format!("A{seq}"),
            active: true,
            severity: 1,
            text: "t".into(),
            class: None,
            ..Default::default()
        }),
        6 => EventBody::Alarm(Alarm {
            id: "A0".into(),
            active: false,
            severity: 1,
            text: "t".into(),
            class: None,
            ..Default::default()
        }),
        7 => EventBody::Source { source: "plc".into(), connected: false, error: None },
        // The agent's "not running from here" mark after an unclean stop: a break.
        _ => EventBody::Source { source: shiftlens_common::AGENT_SOURCE.into(), connected: false, error: None },
    };
    let event = Event { seq, ts_ms, asset: AssetId::parse(format!("a{asset}")).unwrap(), body };
    Input::Event { site: SiteId::parse("s").unwrap(), gateway: GatewayId::parse("gw").unwrap(), epoch: 1, event }
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    // Timestamps from a small range so that equal timestamps and window edges happen often.
    prop::collection::vec((0u8..3, 0i64..200, 0u8..9, prop::bool::weighted(0.05)), 1..80).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (asset, ts, kind, offline))| {
                let ts = ts * 1000;
                if offline {
                    Input::Offline {
                        site: SiteId::parse("s").unwrap(),
                        gateway: GatewayId::parse("gw").unwrap(),
                        ts_ms: ts,
                    }
                } else {
                    input(asset, i as u64 + 1, ts, kind)
                }
            })
            .collect()
    })
}

fn table(
    t: &Timeline,
) -> (Vec<shiftlens_collector::timeline::Downtime>, Vec<Vec<shiftlens_collector::timeline::StateInterval>>) {
    let ivs = t.assets().iter().map(|(s, a)| t.intervals(s, a, 0, 1_000_000)).collect();
    (t.downtimes(), ivs)
}

fn ts(i: &Input) -> i64 {
    match i {
        Input::Event { event, .. } => event.ts_ms,
        Input::Offline { ts_ms, .. } => *ts_ms,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn any_permutation_and_duplication_yields_the_same_downtime_table(
        events in inputs(),
        seed in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        // Reference: time order, each once.
        let mut sorted = events.clone();
        sorted.sort_by_key(ts);
        let mut reference = Timeline::new(30_000);
        for i in sorted {
            reference.apply(i);
        }
        // Shuffled with duplicates.
        let mut shuffled = events.clone();
        for d in &dups {
            shuffled.push(d.get(&events).clone());
        }
        let mut rng = seed;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut t = Timeline::new(30_000);
        for i in shuffled {
            t.apply(i);
        }
        prop_assert_eq!(table(&t), table(&reference));
    }

    #[test]
    fn reported_changes_replay_to_the_final_table(events in inputs()) {
        // Applying the reported upserts/removals to a table gives the timeline's own table: what the store
        // and the feed see is what the timeline holds.
        let mut t = Timeline::new(30_000);
        let mut rows = std::collections::BTreeMap::new();
        for i in events {
            let c = t.apply(i);
            for d in c.removed {
                // A retraction carries the event as it was last reported.
                let last = rows.remove(&(d.site.clone(), d.asset.clone(), d.start_ms));
                prop_assert_eq!(last.as_ref(), Some(&d));
            }
            for d in c.upserted {
                rows.insert((d.site.clone(), d.asset.clone(), d.start_ms), d);
            }
        }
        let replayed: Vec<_> = rows.into_values().collect();
        prop_assert_eq!(replayed, t.downtimes());
    }
}

#[test]
fn a_gateway_sending_descending_timestamps_gets_the_same_table_as_in_time_order() {
    // Every event earlier than all before it: each one lands at the front of its asset's timeline. States
    // alternate with unknowns and alarms mixed in, so runs open, merge, split and get data gaps throughout.
    // (The old timeline rescanned the asset's history for each such event: 2,000 of them took 9.6 s in a
    // debug build, and the cost grew faster than quadratically.)
    let n = 20_000u64;
    let kind = |seq: u64| match seq % 11 {
        0 => 7,                 // source lost: unknown
        3 | 8 => 5,             // alarm
        k => (k % 4) as u8 + 1, // idle, down, planned, unknown
    };
    let descending: Vec<Input> = (1..=n).map(|seq| input(0, seq, (n - seq) as i64 * 10, kind(seq))).collect();
    let mut in_order = descending.clone();
    in_order.reverse();
    let mut a = Timeline::new(30_000);
    for i in descending {
        a.apply(i);
    }
    let mut b = Timeline::new(30_000);
    for i in in_order {
        b.apply(i);
    }
    let (ta, tb) = (table(&a), table(&b));
    assert!(ta.0.len() > 1000, "{} downtime events", ta.0.len());
    assert!(ta.0.iter().any(|d| d.data_gap) && ta.0.iter().any(|d| d.first_out.is_some()));
    assert_eq!(ta, tb);
}
