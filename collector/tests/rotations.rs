//! The fixed 3×8 rotation (crew A `1111111` 06-14, B `2222222` 14-22, C `3333333` 22-06, one anchor) and a
//! swap (config/people.md: an absence plus a work row), against hand-computed instants, in UTC and across
//! both DST changes of Europe/Berlin, through the same public functions as people.rs.
#![allow(clippy::unwrap_used)]

#[path = "people_fixture.rs"]
mod fixture;

use chrono::NaiveDate;
use fixture::{down, t};
use shiftlens_collector::people::roster::{self, Slot};
use shiftlens_collector::people::*;
use shiftlens_collector::report::join::join_one;

fn anchor() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn rotation(crew: &str, cycle: &str) -> Rotation {
    Rotation { crew: crew.into(), anchor: anchor(), cycle: cycle.into() }
}

fn person(id: &str, crew: &str) -> Person {
    Person { id: id.into(), name: id.to_uppercase(), crew: crew.into(), discipline: "OT".into(), from_ms: None }
}

/// Crews A (a1, a2), B (b1, b2) and C (c1) on a fixed 3×8; a1 and b1 hold s7 level 3, the others level 2;
/// press-1 needs s7:3.
fn three_by_eight(settings: Settings) -> Personnel {
    let mut p = Personnel::new(settings);
    p.skills = vec![Skill { id: "s7".into(), name: "S7 networking".into(), domain: "IT".into(), cert_required: false }];
    p.rotations = vec![rotation("A", "1111111"), rotation("B", "2222222"), rotation("C", "3333333")];
    p.people = vec![person("a1", "A"), person("a2", "A"), person("b1", "B"), person("b2", "B"), person("c1", "C")];
    p.person_skills = [("a1", 3), ("a2", 2), ("b1", 3), ("b2", 2), ("c1", 2)]
        .into_iter()
        .map(|(id, level)| PersonSkill {
            person: id.into(),
            skill: "s7".into(),
            level,
            assessed_ms: t("2025-01-01T00:00"),
            cert_id: None,
            issued_ms: None,
            expires_ms: None,
        })
        .collect();
    p.assets = vec![Asset {
        id: "press-1".into(),
        site: "plant-a".into(),
        line: "line1".into(),
        cost_per_hour: 1000.0,
        requires: vec![Requirement { skill: "s7".into(), min_level: 3 }],
    }];
    p
}

fn berlin() -> Settings {
    Settings { tz: "Europe/Berlin".parse().unwrap(), ..Settings::default() }
}

/// (person, crew, shift) of everyone on shift at the UTC instant `at`.
fn on(p: &Personnel, at: &str) -> Vec<(String, String, String)> {
    p.on_shift(t(at))
        .into_iter()
        .map(|o| (o.person.to_string(), o.crew.unwrap_or("").to_string(), o.shift.unwrap_or("").to_string()))
        .collect()
}

fn row(person: &str, crew: &str, shift: &str) -> (String, String, String) {
    (person.into(), crew.into(), shift.into())
}

fn slot(crew: &str, name: &'static str, start: &str, end: &str) -> Slot {
    Slot { crew: crew.into(), name, start_ms: t(start), end_ms: t(end) }
}

#[test]
fn a_fixed_three_by_eight_hands_over_at_06_14_and_22() {
    let p = three_by_eight(Settings::default()).rebuilt();
    let a = || vec![row("a1", "A", "1st"), row("a2", "A", "1st")];
    let b = || vec![row("b1", "B", "2nd"), row("b2", "B", "2nd")];
    let c = || vec![row("c1", "C", "3rd")];
    // start ≤ t < end at every hand-over.
    assert_eq!(on(&p, "2026-03-05T05:59"), c(), "the 3rd shift that began at 22:00 the day before");
    assert_eq!(on(&p, "2026-03-05T06:00"), a());
    assert_eq!(on(&p, "2026-03-05T13:59"), a());
    assert_eq!(on(&p, "2026-03-05T14:00"), b());
    assert_eq!(on(&p, "2026-03-05T21:59"), b());
    assert_eq!(on(&p, "2026-03-05T22:00"), c());
    assert_eq!(on(&p, "2026-03-06T00:00"), c(), "midnight is inside the 3rd shift");
    // Every day of the 7-day cycle, also past its first repetition.
    for day in ["2026-01-07", "2026-01-08", "2026-01-14", "2026-12-31"] {
        assert_eq!(on(&p, &format!("{day}T10:00")), a(), "{day}");
        assert_eq!(on(&p, &format!("{day}T18:00")), b(), "{day}");
        assert_eq!(on(&p, &format!("{day}T23:00")), c(), "{day}");
    }
    // The anchor day's early hours would belong to a 3rd shift of the day before the anchor: nobody.
    assert_eq!(on(&p, "2026-01-01T03:00"), []);
    assert_eq!(on(&p, "2026-01-01T06:00"), a());
    assert_eq!(
        roster::shift_at(&p.settings, &p.rotations[2], t("2026-03-05T05:00")),
        Some(slot("C", "3rd", "2026-03-04T22:00", "2026-03-05T06:00"))
    );
}

#[test]
fn across_both_dst_changes_the_third_shift_is_7_and_9_hours_and_the_first_still_starts_at_06_local() {
    let p = three_by_eight(berlin()).rebuilt();
    let c = |at: &str| roster::shift_at(&p.settings, &p.rotations[2], t(at));
    let a = |at: &str| roster::shift_at(&p.settings, &p.rotations[0], t(at));
    let ids = |at: &str| on(&p, at).into_iter().map(|(id, _, _)| id).collect::<Vec<_>>();

    // Winter (CET, UTC+1): the 3rd shift 22:00-06:00 local is 21:00-05:00 UTC.
    assert_eq!(c("2026-03-28T04:30"), Some(slot("C", "3rd", "2026-03-27T21:00", "2026-03-28T05:00")));
    assert_eq!(ids("2026-03-28T04:30"), ["c1"]);
    assert_eq!(ids("2026-03-28T05:00"), ["a1", "a2"]);
    // Spring forward on Sunday 2026-03-29 (02:00 CET → 03:00 CEST): 22:00 CET to 06:00 CEST is 7 real hours.
    assert_eq!(c("2026-03-29T00:30"), Some(slot("C", "3rd", "2026-03-28T21:00", "2026-03-29T04:00")));
    assert_eq!(ids("2026-03-29T03:59"), ["c1"]);
    assert_eq!(ids("2026-03-29T04:00"), ["a1", "a2"], "06:00 CEST");
    assert_eq!(ids("2026-03-29T04:30"), ["a1", "a2"], "a day earlier this instant was still the 3rd shift");
    assert_eq!(a("2026-03-29T10:00"), Some(slot("A", "1st", "2026-03-29T04:00", "2026-03-29T12:00")));
    assert_eq!(ids("2026-03-29T12:00"), ["b1", "b2"], "14:00 CEST");
    assert_eq!(ids("2026-03-29T20:00"), ["c1"], "22:00 CEST");

    // Summer (CEST, UTC+2): 06:00 local is 04:00 UTC.
    assert_eq!(ids("2026-10-24T04:30"), ["a1", "a2"]);
    // Fall back on Sunday 2026-10-25 (03:00 CEST → 02:00 CET): 22:00 CEST to 06:00 CET is 9 real hours, and
    // both passes through 02:30 local (00:30 and 01:30 UTC) are inside it.
    assert_eq!(c("2026-10-25T04:30"), Some(slot("C", "3rd", "2026-10-24T20:00", "2026-10-25T05:00")));
    for at in ["2026-10-25T00:30", "2026-10-25T01:30", "2026-10-25T04:30", "2026-10-25T04:59"] {
        assert_eq!(ids(at), ["c1"], "{at}");
    }
    assert_eq!(ids("2026-10-25T05:00"), ["a1", "a2"], "06:00 CET");
    assert_eq!(ids("2026-10-25T13:00"), ["b1", "b2"], "14:00 CET");

    // Past the precomputed slots (about three years after the anchor) shifts are computed on demand, with the
    // same answers: spring forward 2029-03-25, fall back 2029-10-28.
    assert_eq!(c("2029-03-25T03:59"), Some(slot("C", "3rd", "2029-03-24T21:00", "2029-03-25T04:00")));
    assert_eq!(ids("2029-03-25T03:59"), ["c1"]);
    assert_eq!(ids("2029-03-25T04:00"), ["a1", "a2"]);
    assert_eq!(c("2029-10-28T04:59"), Some(slot("C", "3rd", "2029-10-27T20:00", "2029-10-28T05:00")));
    assert_eq!(ids("2029-10-28T04:59"), ["c1"]);
    assert_eq!(ids("2029-10-28T05:00"), ["a1", "a2"]);
}

#[test]
fn a_swap_moves_a_person_to_another_crews_shift_for_one_day() {
    // On 2026-03-05 a1 (crew A, 1st) and b1 (crew B, 2nd) swap: each is absent from their own shift and
    // has a work row for the other's.
    let mut p = three_by_eight(Settings::default());
    let entry = |person: &str, start: &str, end: &str, kind: RosterKind, shift: Option<&str>| RosterEntry {
        person: person.into(),
        start_ms: t(start),
        end_ms: t(end),
        kind,
        shift: shift.map(str::to_string),
    };
    p.roster = vec![
        entry("a1", "2026-03-05T06:00", "2026-03-05T14:00", RosterKind::Absent, None),
        entry("a1", "2026-03-05T14:00", "2026-03-05T22:00", RosterKind::Work, Some("2nd")),
        entry("b1", "2026-03-05T14:00", "2026-03-05T22:00", RosterKind::Absent, None),
        entry("b1", "2026-03-05T06:00", "2026-03-05T14:00", RosterKind::Work, Some("1st")),
    ];
    let p = p.rebuilt();

    // The day before, the rotation alone.
    assert_eq!(on(&p, "2026-03-04T10:00"), [row("a1", "A", "1st"), row("a2", "A", "1st")]);
    assert_eq!(on(&p, "2026-03-04T18:00"), [row("b1", "B", "2nd"), row("b2", "B", "2nd")]);
    // The swap day: each works the other's shift, listed with their own crew and the shift of the work row.
    assert_eq!(on(&p, "2026-03-05T06:00"), [row("a2", "A", "1st"), row("b1", "B", "1st")]);
    assert_eq!(on(&p, "2026-03-05T13:59"), [row("a2", "A", "1st"), row("b1", "B", "1st")]);
    assert_eq!(on(&p, "2026-03-05T14:00"), [row("a1", "A", "2nd"), row("b2", "B", "2nd")]);
    assert_eq!(on(&p, "2026-03-05T21:59"), [row("a1", "A", "2nd"), row("b2", "B", "2nd")]);
    assert_eq!(on(&p, "2026-03-05T22:00"), [row("c1", "C", "3rd")]);
    // The day after, back to the rotation.
    assert_eq!(on(&p, "2026-03-06T10:00"), [row("a1", "A", "1st"), row("a2", "A", "1st")]);
    assert_eq!(on(&p, "2026-03-06T18:00"), [row("b1", "B", "2nd"), row("b2", "B", "2nd")]);

    // The join follows the swap: press-1 (s7:3) is covered by whoever of a1 and b1 is on.
    let e = join_one(&p, &down("press-1", "2026-03-05T10:00", 1.0));
    assert_eq!(
        (e.on_shift.clone(), e.required[0].qualified.clone()),
        (vec!["a2".into(), "b1".into()], vec!["b1".into()])
    );
    assert_eq!(e.covered, Some(true));
    let e = join_one(&p, &down("press-1", "2026-03-05T15:00", 1.0));
    assert_eq!(
        (e.on_shift.clone(), e.required[0].qualified.clone()),
        (vec!["a1".into(), "b2".into()], vec!["a1".into()])
    );
    assert_eq!(e.covered, Some(true));
    assert_eq!(e.shift.as_deref(), Some("2nd"));
    // The event belongs to the crew the roster schedules (B), not to the swapped-in a1's home crew.
    assert_eq!(e.crew.as_deref(), Some("B"));
    // A stop at 22:30 on the swap day: the 3rd shift as usual, nobody at level 3.
    let e = join_one(&p, &down("press-1", "2026-03-05T22:30", 0.5));
    assert_eq!((e.on_shift.clone(), e.covered, e.missing.clone()), (vec!["c1".into()], Some(false), vec!["s7".into()]));
}

#[test]
fn an_absence_covering_the_whole_day_also_cancels_that_days_work_row() {
    // Absences override any shift (config/people.md), explicit assignments included: a swap whose absence row
    // covers the whole day takes the person off the swapped shift too.
    let mut p = three_by_eight(Settings::default());
    p.roster = vec![
        RosterEntry {
            person: "a1".into(),
            start_ms: t("2026-03-05T00:00"),
            end_ms: t("2026-03-06T00:00"),
            kind: RosterKind::Absent,
            shift: None,
        },
        RosterEntry {
            person: "a1".into(),
            start_ms: t("2026-03-05T14:00"),
            end_ms: t("2026-03-05T22:00"),
            kind: RosterKind::Work,
            shift: Some("2nd".into()),
        },
    ];
    let p = p.rebuilt();
    assert_eq!(on(&p, "2026-03-05T10:00"), [row("a2", "A", "1st")]);
    assert_eq!(on(&p, "2026-03-05T15:00"), [row("b1", "B", "2nd"), row("b2", "B", "2nd")]);
}
