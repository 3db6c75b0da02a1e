//! A small hand-checked plant shared by the people and report tests (UTC, day shifts 06-18, nights 18-06).
//!
//! - crew A works every day shift: a1 (s7 level 3), a2 (s7 level 2 — one short; vfd level 3 with a
//!   certificate expiring 2026-03-10 12:00, in the middle of a day shift). a1 is absent all of 2026-03-06.
//! - crew B works every night shift: b1 (s7 level 3, exactly the minimum).
//! - press-1 needs s7:3 and costs 1000/h; filler-1 needs vfd:3 and costs 500/h; alarm class `drive`
//!   adds vfd:3. Rotations are anchored on 2026-01-01: nothing is known before.
#![allow(dead_code, clippy::unwrap_used)]

use shiftlens_collector::people::*;
use shiftlens_collector::timeline::{Downtime, FirstOut};
use shiftlens_common::{AssetId, GatewayId, SiteId};

pub const H: i64 = 3_600_000;

/// UTC ms of `2026-03-05T10:00` style text.
pub fn t(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap().and_utc().timestamp_millis()
}

pub fn plant() -> Personnel {
    plant_with(Settings::default())
}

pub fn plant_with(settings: Settings) -> Personnel {
    let mut p = Personnel::new(settings);
    p.skills = vec![
        Skill { id: "s7".into(), name: "S7 networking".into(), domain: "IT".into(), cert_required: false },
        Skill { id: "vfd".into(), name: "VFD drives".into(), domain: "electrical".into(), cert_required: true },
    ];
    p.rotations = vec![
        Rotation { crew: "A".into(), anchor: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), cycle: "D".into() },
        Rotation { crew: "B".into(), anchor: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), cycle: "N".into() },
    ];
    let person = |id: &str, crew: &str| Person {
        id: id.into(),
        name: id.to_uppercase(),
        crew: crew.into(),
        discipline: "OT".into(),
        from_ms: None,
    };
    p.people = vec![person("a1", "A"), person("a2", "A"), person("b1", "B")];
    let ps = |person: &str, skill: &str, level: u8| PersonSkill {
        person: person.into(),
        skill: skill.into(),
        level,
        assessed_ms: t("2025-01-01T00:00"),
        cert_id: None,
        issued_ms: None,
        expires_ms: None,
    };
    p.person_skills = vec![
        ps("a1", "s7", 3),
        ps("a2", "s7", 2),
        PersonSkill {
            cert_id: Some("VFD-77".into()),
            issued_ms: Some(t("2025-01-01T00:00")),
            expires_ms: Some(t("2026-03-10T12:00")),
            ..ps("a2", "vfd", 3)
        },
        ps("b1", "s7", 3),
    ];
    p.assets = vec![
        Asset {
            id: "press-1".into(),
            site: "plant-a".into(),
            line: "line1".into(),
            cost_per_hour: 1000.0,
            requires: vec![Requirement { skill: "s7".into(), min_level: 3 }],
        },
        Asset {
            id: "filler-1".into(),
            site: "plant-a".into(),
            line: "line1".into(),
            cost_per_hour: 500.0,
            requires: vec![Requirement { skill: "vfd".into(), min_level: 3 }],
        },
    ];
    p.alarm_classes =
        vec![AlarmClass { class: "drive".into(), requires: vec![Requirement { skill: "vfd".into(), min_level: 3 }] }];
    p.roster = vec![RosterEntry {
        person: "a1".into(),
        start_ms: t("2026-03-06T00:00"),
        end_ms: t("2026-03-07T00:00"),
        kind: RosterKind::Absent,
        shift: None,
    }];
    p.rebuilt()
}

pub fn down(asset: &str, start: &str, hours: f64) -> Downtime {
    let s = t(start);
    Downtime {
        site: SiteId::parse("plant-a").unwrap(),
        gateway: GatewayId::parse("gw-1").unwrap(),
        asset: AssetId::parse(asset).unwrap(),
        start_ms: s,
        end_ms: Some(s + (hours * H as f64) as i64),
        reason: None,
        first_out: None,
        data_gap: false,
    }
}

pub fn with_class(mut d: Downtime, class: &str) -> Downtime {
    d.first_out = Some(FirstOut {
        id: "AL1".into(),
        text: "drive fault".into(),
        class: Some(class.into()),
        ts_ms: d.start_ms - 5_000,
    });
    d
}
