//! A synthetic plant year for benchmarks and page timings: assets with requirements, skills (IT/OT and
//! classic), four crews on a DuPont rotation in Europe/Berlin (two DST changes), people with levels,
//! certificates (some expiring mid-year), absences, work orders, downtime events and alarm activations.
//! Deterministic for a seed.

use crate::join::{AlarmKey, AlarmRecord, Alarms, Priority};
use crate::people::*;
use crate::report::stats::Rng;
use crate::timeline::{Downtime, FirstOut};
use chrono::NaiveDate;
use shiftlens_common::{AssetId, GatewayId, SiteId};

/// Sizes of the generated plant.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub assets: usize,
    pub people: usize,
    pub downtime: usize,
    pub alarms: usize,
}

impl Size {
    /// The benchmark plant: 50 assets, 300 people, 100,000 downtime events.
    pub const YEAR: Size = Size { assets: 50, people: 300, downtime: 100_000, alarms: 1_000_000 };
}

/// A generated year.
#[derive(Debug, Clone)]
pub struct Plant {
    pub people: Personnel,
    pub downtime: Vec<Downtime>,
    /// Alarm activations sorted by raise time: 40 alarms per asset, a few of them bad actors, no two
    /// activations of one alarm overlapping.
    pub alarms: Alarms,
    pub from_ms: i64,
    pub to_ms: i64,
}

const SKILLS: [(&str, &str); 16] = [
    ("s7-net", "IT"),
    ("opc-ua", "IT"),
    ("profinet", "OT"),
    ("vfd", "electrical"),
    ("plc-prog", "OT"),
    ("hmi", "OT"),
    ("hydraulics", "mechanical"),
    ("pneumatics", "mechanical"),
    ("lv-electrical", "electrical"),
    ("servo", "electrical"),
    ("vision", "OT"),
    ("robotics", "OT"),
    ("bearings", "mechanical"),
    ("welding", "mechanical"),
    ("safety-plc", "OT"),
    ("network-sec", "IT"),
];

/// DuPont 12 h cycle of crew A; crews B, C, D start 7, 14 and 21 days later.
pub const DUPONT: &str = "NNNN---DDD-NNN---DDDD-------";

/// Generates a plant year (2025, Europe/Berlin).
pub fn year(seed: u64, size: Size) -> Plant {
    let mut rng = Rng::new(seed);
    let settings = Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() };
    let tz = settings.tz;
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default();
    let from_ms = roster::local_midnight(tz, start);
    let to_ms = roster::local_midnight(tz, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default());
    let span = to_ms - from_ms;
    let mut p = Personnel::new(settings);
    p.skills = SKILLS
        .iter()
        .enumerate()
        .map(|(i, (id, domain))| Skill {
            id: id.to_string(),
            name: id.to_string(),
            domain: domain.to_string(),
            cert_required: i % 4 == 3,
        })
        .collect();
    let nskills = p.skills.len();
    let crews = ["A", "B", "C", "D"];
    p.rotations = crews
        .iter()
        .enumerate()
        .map(|(i, c)| Rotation {
            crew: c.to_string(),
            anchor: start - chrono::Duration::days(7 * i as i64 + 28),
            cycle: DUPONT.into(),
        })
        .collect();
    p.assets = (0..size.assets)
        .map(|i| Asset {
            id: format!("asset-{i:03}"),
            site: "plant-a".into(),
            line: format!("line{}", i % 5 + 1),
            cost_per_hour: (200 + rng.below(4800)) as f64,
            requires: (0..1 + rng.below(3))
                .map(|_| Requirement {
                    skill: p.skills[rng.below(nskills)].id.clone(),
                    min_level: 2 + rng.below(2) as u8,
                })
                .collect(),
        })
        .collect();
    p.alarm_classes = ["network", "drive", "hydraulic", "safety", "vision", "process"]
        .iter()
        .enumerate()
        .map(|(i, c)| AlarmClass {
            class: c.to_string(),
            requires: vec![Requirement { skill: p.skills[(i * 3) % nskills].id.clone(), min_level: 2 }],
        })
        .collect();
    for i in 0..size.people {
        let id = format!("p{i:04}");
        p.people.push(Person {
            id: id.clone(),
            name: format!("Person {i}"),
            crew: crews[i % 4].to_string(),
            discipline: ["IT", "OT", "electrical", "mechanical"][rng.below(4)].into(),
            from_ms: None,
        });
        for _ in 0..3 + rng.below(6) {
            let s = &p.skills[rng.below(nskills)];
            let assessed = from_ms - rng.below(3 * 365) as i64 * 86_400_000;
            let (cert_id, issued, expires) = if s.cert_required {
                let exp = from_ms + rng.below(500) as i64 * 86_400_000;
                (Some(format!("C-{i}-{}", s.id)), Some(exp - 730 * 86_400_000), Some(exp))
            } else {
                (None, None, None)
            };
            p.person_skills.push(PersonSkill {
                person: id.clone(),
                skill: s.id.clone(),
                level: 1 + rng.below(4) as u8,
                assessed_ms: assessed,
                cert_id,
                issued_ms: issued,
                expires_ms: expires,
            });
        }
        for _ in 0..4 {
            let a = from_ms + rng.below(360) as i64 * 86_400_000;
            p.roster.push(RosterEntry {
                person: id.clone(),
                start_ms: a,
                end_ms: a + (1 + rng.below(5)) as i64 * 86_400_000,
                kind: RosterKind::Absent,
                shift: None,
            });
        }
    }
    p.person_skills.sort_by(|a, b| (&a.person, &a.skill, a.assessed_ms).cmp(&(&b.person, &b.skill, b.assessed_ms)));
    p.person_skills.dedup_by(|a, b| a.person == b.person && a.skill == b.skill && a.assessed_ms == b.assessed_ms);
    let classes: Vec<String> = p.alarm_classes.iter().map(|c| c.class.clone()).collect();
    let (site, gw) = (SiteId::parse("plant-a").ok(), GatewayId::parse("gw-1").ok());
    let asset_ids: Vec<Option<AssetId>> = p.assets.iter().map(|a| AssetId::parse(a.id.clone()).ok()).collect();
    let mut downtime = Vec::with_capacity(size.downtime);
    for _ in 0..size.downtime {
        let ai = rng.below(size.assets.max(1));
        let start = from_ms + (rng.unit() * span as f64) as i64;
        // Skewed repair times: mostly minutes, a tail of hours.
        let ttr = (60_000.0 + 3_600_000.0 * rng.unit().powi(3) * 4.0) as i64;
        let first_out = (rng.below(10) < 7).then(|| FirstOut {
            id: format!("AL{}", rng.below(500)),
            text: "alarm".into(),
            class: Some(classes[rng.below(classes.len())].clone()),
            ts_ms: start - 5_000,
        });
        if rng.below(10) < 3 {
            p.work_orders.push(WorkOrder {
                ticket: format!("WO-{}", p.work_orders.len()),
                asset: p.assets[ai].id.clone(),
                opened_ms: start + 60_000,
                closed_ms: Some(start + ttr),
                resolved_by: Some(format!("p{:04}", rng.below(size.people.max(1)))),
            });
        }
        if let (Some(site), Some(gateway), Some(Some(asset))) = (site.clone(), gw.clone(), asset_ids.get(ai).cloned()) {
            downtime.push(Downtime {
                site,
                gateway,
                asset,
                start_ms: start,
                end_ms: Some(start + ttr),
                reason: None,
                first_out,
                data_gap: false,
            });
        }
    }
    downtime.sort_by_key(|d| d.start_ms);
    let alarms = alarms(&mut rng, &p, size.alarms, from_ms, span);
    p.initiatives = vec![Initiative {
        id: "opcua-rollout".into(),
        name: "OPC UA rollout".into(),
        go_live_ms: to_ms + 60 * 86_400_000,
        needs: vec![
            Need { skill: "opc-ua".into(), min_level: 3, headcount: 2 },
            Need { skill: "network-sec".into(), min_level: 2, headcount: 1 },
        ],
    }];
    Plant { people: p.rebuilt(), downtime, alarms, from_ms, to_ms }
}

/// Alarms per asset in the generated plant.
const ALARMS_PER_ASSET: usize = 40;

/// `n` activations over `[from_ms, from_ms + span)`: alarm picked with a skew (the ten most frequent take
/// about a quarter), priorities about 5/20/70 % high/medium/low and 5 % unknown (Modbus, never
/// acknowledged), most acknowledged within minutes, a few shelved, suppressed or standing for days. An
/// activation clears before the next one of its alarm is raised.
fn alarms(rng: &mut Rng, p: &Personnel, n: usize, from_ms: i64, span: i64) -> Alarms {
    let nkeys = p.assets.len() * ALARMS_PER_ASSET;
    if nkeys == 0 {
        return Alarms::default();
    }
    let keys: Vec<AlarmKey> = (0..nkeys)
        .map(|i| AlarmKey {
            site: p.assets[i % p.assets.len()].site.clone(),
            asset: p.assets[i % p.assets.len()].id.clone(),
            alarm: format!("AL{}", i / p.assets.len()),
        })
        .collect();
    let mut records: Vec<AlarmRecord> = (0..n)
        .map(|_| {
            let key = ((nkeys as f64 * rng.unit().powi(4)) as usize).min(nkeys - 1) as u32;
            let raised_ms = from_ms + (rng.unit() * span as f64) as i64;
            let long = rng.below(1000);
            let duration = 1_000
                + match long {
                    0 => 86_400_000 + rng.below(2 * 86_400_000) as i64,
                    1..=99 => rng.below(8 * 3_600_000) as i64,
                    _ => rng.below(600_000) as i64,
                };
            let priority = match rng.below(100) {
                0..=4 => Priority::High,
                5..=24 => Priority::Medium,
                25..=94 => Priority::Low,
                _ => Priority::Unknown,
            };
            let acked = priority != Priority::Unknown && rng.below(10) < 9;
            AlarmRecord {
                key,
                raised_ms,
                cleared_ms: Some(raised_ms + duration),
                acked_ms: acked.then(|| raised_ms + 1_000 + (rng.unit().powi(2) * 600_000.0) as i64),
                priority,
                shelved: priority != Priority::Unknown && rng.below(100) == 0,
                suppressed: priority != Priority::Unknown && rng.below(50) == 0,
            }
        })
        .collect();
    records.sort_by_key(|r| (r.raised_ms, r.key));
    // Clear each activation before its alarm's next one (and at least 1 ms after its raise).
    let mut next: Vec<i64> = vec![i64::MAX; nkeys];
    for r in records.iter_mut().rev() {
        let k = r.key as usize;
        if let Some(c) = r.cleared_ms.as_mut() {
            *c = (*c).min(next[k] - 1).max(r.raised_ms + 1);
        }
        if next[k] <= r.raised_ms {
            r.raised_ms = next[k] - 2;
            r.cleared_ms = Some(next[k] - 1);
        }
        if let (Some(a), Some(c)) = (r.acked_ms.as_mut(), r.cleared_ms) {
            *a = (*a).clamp(r.raised_ms, c);
        }
        next[k] = r.raised_ms;
    }
    records.retain(|r| r.cleared_ms.is_some_and(|c| c > r.raised_ms));
    records.sort_by_key(|r| (r.raised_ms, r.key));
    Alarms { keys, records }
}
