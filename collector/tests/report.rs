//! Every report against hand-computed figures on the small plant of people_fixture.rs.
//!
//! Events (press-1 needs s7:3, filler-1 vfd:3):
//!   E1 press-1 03-02 10:00 1 h  covered (a1)          E2 press-1 03-03 10:00 2 h covered (a1)
//!   E3 press-1 03-04 20:00 3 h  covered (b1, night)   E4 press-1 03-06 10:00 5 h uncovered: a1 absent
//!   E5 filler-1 03-05 22:00 0.5 h uncovered: nobody on nights has vfd
//! Covered MTTR of press-1 = 2 h, so E4 has 3 avoidable hours; filler-1 has no baseline, so E5 has 0.
#![allow(clippy::unwrap_used)]

#[path = "people_fixture.rs"]
mod fixture;
mod http_support;

use fixture::*;
use http_support::records;
use shiftlens_collector::people::import::Kind;
use shiftlens_collector::people::{Initiative, Need, PersonSkill, Personnel, Settings};
use shiftlens_collector::report::coverage::{self, GroupBy, Status};
use shiftlens_collector::report::*;
use shiftlens_collector::report::{join::Baselines, mttr::Dim, pareto::ParetoBy};
use shiftlens_collector::timeline::Downtime;

/// 30.44 days: exactly one month for the per-month figures.
const MONTH: i64 = 2_630_016_000;

fn people() -> Personnel {
    plant_with(Settings { min_baseline_events: 3, ..Settings::default() })
}

fn events(p: &Personnel) -> Vec<JoinedEvent> {
    let d = [
        down("press-1", "2026-03-02T10:00", 1.0),
        down("press-1", "2026-03-03T10:00", 2.0),
        down("press-1", "2026-03-04T20:00", 3.0),
        down("press-1", "2026-03-06T10:00", 5.0),
        down("filler-1", "2026-03-05T22:00", 0.5),
    ];
    join(p, &d)
}

fn input<'a>(p: &'a Personnel, e: &'a [JoinedEvent], from: &str, to: i64) -> Input<'a> {
    Input { people: p, events: e, from_ms: t(from), to_ms: to }
}

fn month<'a>(p: &'a Personnel, e: &'a [JoinedEvent]) -> Input<'a> {
    input(p, e, "2026-03-01T00:00", t("2026-03-01T00:00") + MONTH)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn the_join_of_the_fixture_events_is_as_computed_by_hand() {
    let p = people();
    let e = events(&p);
    let covered: Vec<Option<bool>> = e.iter().map(|x| x.covered).collect();
    assert_eq!(covered, [Some(true), Some(true), Some(true), Some(false), Some(false)]);
    assert_eq!(e[3].on_shift, ["a2"]);
    assert_eq!(e[3].missing, ["s7"]);
    let b = Baselines::new(&e, 3);
    let avoidable: Vec<f64> = e.iter().map(|x| b.avoidable_h(x)).collect();
    assert_eq!(avoidable, [0.0, 0.0, 0.0, 3.0, 0.0]);
    // With a stricter minimum, press-1 has too few covered events: the skill's covered MTTR (s7: E1-E3,
    // 2 h, also 3 events) is too few as well, so the asset's own mean is the fallback.
    assert_eq!(Baselines::new(&e, 4).avoidable_h(&e[3]), 3.0);
}

#[test]
fn mttr_splits_covered_and_uncovered_with_sizes_intervals_and_shrinkage() {
    let p = people();
    let e = events(&p);
    let (rows, prior) = mttr::mttr(&month(&p, &e), Dim::Asset);
    assert!(close(prior, 11.5 / 5.0));
    let press = rows.iter().find(|r| r.group == "press-1").unwrap();
    let c = press.covered.unwrap();
    assert_eq!(c.n, 3);
    assert!(close(c.mean, 2.0) && close(c.median, 2.0) && close(c.p90, 2.8));
    // (3·2 + 5·2.3) / (3 + 5)
    assert!(close(c.shrunk, 2.1875));
    assert!(c.ci_low >= 1.0 && c.ci_low < 2.0 && c.ci_high > 2.0 && c.ci_high <= 3.0, "{c:?}");
    let u = press.uncovered.unwrap();
    assert_eq!(u.n, 1);
    assert!(close(u.mean, 5.0) && close(u.shrunk, 2.75));
    // The bootstrap has a fixed seed: the same input gives the same interval.
    assert_eq!(mttr::mttr(&month(&p, &e), Dim::Asset).0, rows);
    // By skill: E5 counts as uncovered under vfd; by shift: E3 and E5 are night events.
    let (rows, _) = mttr::mttr(&month(&p, &e), Dim::Skill);
    let vfd = rows.iter().find(|r| r.group == "vfd").unwrap();
    assert_eq!((vfd.covered.map(|s| s.n), vfd.uncovered.map(|s| s.n)), (None, Some(1)));
    let (rows, _) = mttr::mttr(&month(&p, &e), Dim::Shift);
    let night = rows.iter().find(|r| r.group == "night").unwrap();
    assert_eq!((night.covered.unwrap().n, night.uncovered.unwrap().n), (1, 1));
}

#[test]
fn pareto_by_asset_and_by_missing_skill() {
    let p = people();
    let e = events(&p);
    let rows = pareto::pareto(&month(&p, &e), ParetoBy::Asset);
    assert_eq!(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["press-1", "filler-1"]);
    assert!(close(rows[0].hours, 11.0) && close(rows[0].cost, 11_000.0) && close(rows[0].avoidable_hours, 3.0));
    assert!(close(rows[0].cumulative, 11.0 / 11.5) && close(rows[1].cumulative, 1.0));
    let rows = pareto::pareto(&month(&p, &e), ParetoBy::Skill);
    let got: Vec<(&str, usize, f64)> = rows.iter().map(|r| (r.key.as_str(), r.events, r.hours)).collect();
    assert_eq!(got, [("s7", 1, 5.0), ("vfd", 1, 0.5)]);
}

#[test]
fn training_priorities_rank_avoidable_hours_times_cost_and_name_who_is_closest() {
    let p = people();
    let e = events(&p);
    let rows = priority::priorities(&month(&p, &e), 3);
    assert_eq!(rows.len(), 1, "E5 has no avoidable hours: {rows:?}");
    let r = &rows[0];
    assert_eq!((r.rank, r.crew.as_str(), r.skill.as_str(), r.min_level, r.events), (1, "A", "s7", 3, 1));
    assert!(close(r.avoidable_h_per_month, 3.0) && close(r.value_per_month, 3000.0));
    assert_eq!(r.candidates, [("a2".to_string(), 2)]);
    let rep = priority::report(&month(&p, &e), &rows, true);
    assert_eq!(rep.rows[0][1], "a2");
}

#[test]
fn the_coverage_matrix_counts_qualified_people_and_uses_the_users_words() {
    let p = people();
    let find = |rows: &[coverage::CoverageRow], g: &str, s: &str| {
        rows.iter().find(|r| r.group == g && r.skill == s).unwrap().clone()
    };
    let day5 = input(&p, &[], "2026-03-05T00:00", t("2026-03-06T00:00"));
    let rows = coverage::coverage(&day5, GroupBy::Shift);
    let r = find(&rows, "day", "s7");
    assert_eq!((r.headcount, r.status, r.covered_share, r.shift_hours), (1, Status::Thin, 1.0, 12.0));
    assert_eq!(find(&rows, "day", "vfd").status, Status::Thin);
    let r = find(&rows, "night", "vfd");
    assert_eq!((r.headcount, r.status, r.covered_share, r.shift_hours), (0, Status::Gap, 0.0, 12.0));
    // a1 absent on the 6th: no s7 on the day shift, and s7 is needed by the costliest asset.
    let day6 = input(&p, &[], "2026-03-06T00:00", t("2026-03-07T00:00"));
    assert_eq!(find(&coverage::coverage(&day6, GroupBy::Shift), "day", "s7").status, Status::CriticalGap);
    // a2's vfd certificate expires at 12:00 on the 10th: half of that day shift is covered.
    let day10 = input(&p, &[], "2026-03-10T00:00", t("2026-03-11T00:00"));
    let r = find(&coverage::coverage(&day10, GroupBy::Shift), "day", "vfd");
    assert_eq!((r.covered_share, r.min_headcount), (0.5, 0));
    let rows = coverage::coverage(&day5, GroupBy::Crew);
    assert_eq!(find(&rows, "B", "s7").headcount, 1);
    assert_eq!(Status::of(2, true), Status::Covered);
}

#[test]
fn gap_analysis_gives_readiness_now_and_at_each_go_live() {
    let mut p = people();
    p.initiatives = vec![Initiative {
        id: "vfd-push".into(),
        name: "Drives".into(),
        go_live_ms: t("2026-03-08T00:00"),
        needs: vec![Need { skill: "vfd".into(), min_level: 3, headcount: 2 }],
    }];
    let p = p.rebuilt();
    let rows = gaps::gaps(&month(&p, &[]));
    let now: Vec<(&str, &str, u32)> =
        rows.iter().filter(|r| r.scope == "now").map(|r| (r.crew.as_str(), r.skill.as_str(), r.have)).collect();
    // At the end of the window a2's certificate has expired.
    assert_eq!(now, [("A", "s7", 1), ("A", "vfd", 0), ("B", "s7", 1), ("B", "vfd", 0)]);
    assert_eq!(rows[0].readiness_pct, 50.0);
    let init: Vec<_> = rows.iter().filter(|r| r.scope == "vfd-push").collect();
    assert_eq!(init.iter().map(|r| (r.have, r.need)).collect::<Vec<_>>(), [(1, 2), (0, 2)]);
    assert_eq!(init[0].readiness_pct, 25.0);
}

#[test]
fn recertification_is_weighted_by_the_shifts_it_would_leave_uncovered() {
    let p = people();
    let rows = recert::recert(&input(&p, &[], "2026-02-01T00:00", t("2026-03-05T00:00")));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.person.as_str(), r.skill.as_str(), r.cert_id.as_str()), ("a2", "vfd", "VFD-77"));
    // Crew A's day shifts from 03-11 to 06-08 (90 days after 03-10 12:00): nobody else has vfd.
    assert_eq!((r.shifts, r.shifts_to_zero), (90, 90));
    assert!(close(r.coverage_hours_lost, 1080.0) && close(r.thin_hours, 0.0));
    // Outside the horizon: nothing due.
    assert!(recert::recert(&input(&p, &[], "2025-10-01T00:00", t("2025-11-01T00:00"))).is_empty());
    // A horizon of 5 days ends before the lapse on the 10th; 6 days reach it, and project it 6 days on.
    let within = |days: i64| {
        let p = plant_with(Settings { recert_horizon_ms: days * 24 * H, ..Settings::default() });
        recert::recert(&input(&p, &[], "2026-02-01T00:00", t("2026-03-05T00:00")))
    };
    assert!(within(5).is_empty());
    assert_eq!(within(6).iter().map(|r| r.shifts).collect::<Vec<_>>(), [6]);
}

#[test]
fn request_horizons_parse_like_the_config_and_are_bounded() {
    assert_eq!(recert::parse_horizon("30d"), Ok(30 * 24 * H));
    assert_eq!(recert::parse_horizon(" 12h "), Ok(12 * H));
    assert_eq!(recert::parse_horizon("730d"), Ok(recert::MAX_HORIZON_MS));
    for bad in ["", "soon", "30", "30w", "-5d", "0d", "731d", "99999999999999999999d"] {
        assert_eq!(recert::parse_horizon(bad), Err(recert::HORIZON_FORM.to_string()), "{bad:?}");
    }
    assert_eq!(recert::format_horizon(90 * 24 * H), "90d");
    assert_eq!(recert::format_horizon(36 * H), "36h");
    assert_eq!(recert::format_horizon(1_500), "1500ms");
}

#[test]
fn the_recert_command_takes_its_horizon_from_the_flag_else_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("c.db");
    // The fixture and a second certificate: b1's vfd, lapsing on 2026-04-20, 46 days after "now".
    let mut p = people();
    p.person_skills.push(PersonSkill {
        person: "b1".into(),
        skill: "vfd".into(),
        level: 3,
        assessed_ms: t("2025-01-01T00:00"),
        cert_id: Some("VFD-88".into()),
        issued_ms: Some(t("2025-01-01T00:00")),
        expires_ms: Some(t("2026-04-20T00:00")),
    });
    let mut conn = shiftlens_collector::store::open_writer(&db_path).unwrap();
    for (kind, recs) in [
        (Kind::Skills, records(&p.skills)),
        (Kind::People, records(&p.people)),
        (Kind::PersonSkills, records(&p.person_skills)),
        (Kind::Rotation, records(&p.rotations)),
        (Kind::Roster, records(&p.roster)),
        (Kind::Assets, records(&p.assets)),
    ] {
        shiftlens_collector::store::people::import(&mut conn, kind, "fixture", &recs, 0).unwrap();
    }
    drop(conn);
    let config = |name: &str, people: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("[store]\npath = {:?}\n{people}", db_path.to_str().unwrap())).unwrap();
        path
    };
    let plain = config("plain.toml", "");
    let short = config("short.toml", "[people]\nrecert_horizon = \"10d\"\n");
    let run = |cfg: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
            .args(["report", "recert", "--format", "json", "--to", "2026-03-05", "--config"])
            .arg(cfg)
            .args(extra)
            .output()
            .unwrap()
    };
    let certs = |cfg: &std::path::Path, extra: &[&str]| -> (Vec<String>, Vec<String>) {
        let out = run(cfg, extra);
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let col = v["columns"].as_array().unwrap().iter().position(|c| c == "certificate").unwrap();
        let mut certs: Vec<String> =
            v["rows"].as_array().unwrap().iter().map(|r| r[col].as_str().unwrap().to_string()).collect();
        certs.sort();
        let notes = v["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
        (certs, notes)
    };
    // Default 90 days: both; 10 days (flag or config): only a2's, lapsing on the 10th.
    let (all, notes) = certs(&plain, &[]);
    assert_eq!(all, ["VFD-77", "VFD-88"]);
    assert!(
        notes.iter().any(|n| n.starts_with("horizon 90d: certificates expiring from 2026-03-05 00:00")),
        "{notes:?}"
    );
    assert_eq!(certs(&plain, &["--horizon", "90d"]).0, all);
    let (few, notes) = certs(&plain, &["--horizon", "10d"]);
    assert_eq!(few, ["VFD-77"]);
    assert!(notes.iter().any(|n| n.starts_with("horizon 10d:")), "{notes:?}");
    assert_eq!(certs(&short, &[]).0, few);
    assert_eq!(certs(&short, &["--horizon", "60d"]).0, all);
    for bad in ["soon", "0d", "731d", "30w"] {
        let out = run(&plain, &["--horizon", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--horizon {bad} was accepted");
        assert!(err.contains("--horizon") && err.contains("at most 730d"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
}

#[test]
fn what_if_shows_the_change_in_coverage_and_avoidable_hours() {
    let p = people();
    let e = events(&p);
    let change: whatif::Change = "a2:s7:3".parse().unwrap();
    let rows = whatif::what_if(&month(&p, &e), &change);
    let get = |m: &str| rows.iter().find(|r| r.metric == m).map(|r| (r.before, r.after)).unwrap();
    assert_eq!(get("uncovered_events"), (2.0, 1.0));
    assert_eq!(get("avoidable_h_per_month"), (3.0, 0.0));
    assert_eq!(get("avoidable_cost_per_month"), (3000.0, 0.0));
    // Day shifts in the window: 30 whole and 4.56 h of the 31st; a1's absence left 12 h without s7.
    let (before, after) = get("covered_share[day]");
    assert!(close(before, 1.0 - 12.0 / 364.56) && close(after, 1.0), "{before} {after}");
    // Removing a1's s7 uncovers the day shift events.
    let rows = whatif::what_if(&month(&p, &e), &"a1:s7".parse().unwrap());
    assert_eq!(rows.iter().find(|r| r.metric == "uncovered_events").map(|r| r.after), Some(4.0));
    assert!("a1".parse::<whatif::Change>().is_err() && "a1:s7:9".parse::<whatif::Change>().is_err());
}

/// The alarm-load figures of one day (2026-03-05) against hand computation. Line 1 (press-1 s7:3, filler-1
/// vfd:3) is operated on day shifts (crew A, 06-18) by a1 (s7) and a2 (vfd, certificate valid): 2
/// operators; on nights (crew B) by b1: 1 operator. 72 ten-minute windows each.
///   P1 press-1: 12 raises 07:00..07:11 a minute apart, low priority, acked after 30 s (even) or 60 s (odd)
///   F2 filler-1: 1 raise 07:05, high, acked after 600 s, shelved → window 07:00 holds 11: a flood
///   F1 filler-1: 3 raises 19:00:00, :20, :40, medium, suppressed → chattering
///   P2 press-1: 1 raise 00:30, cleared next day 01:00 (24.5 h), no attributes (Modbus) → stale
#[test]
fn alarm_load_figures_per_crew_and_operator_are_as_computed_by_hand() {
    use shiftlens_collector::join::{AlarmKey, AlarmRecord, Priority};
    let p = people();
    let key = |asset: &str, alarm: &str| AlarmKey { site: "plant-a".into(), asset: asset.into(), alarm: alarm.into() };
    let keys = [key("press-1", "P1"), key("filler-1", "F1"), key("filler-1", "F2"), key("press-1", "P2")];
    let rec = |key: u32, raised: i64, cleared: i64, acked: Option<i64>, priority| AlarmRecord {
        key,
        raised_ms: raised,
        cleared_ms: Some(cleared),
        acked_ms: acked,
        priority,
        shelved: false,
        suppressed: false,
    };
    let mut a: Vec<AlarmRecord> = (0..12)
        .map(|i| {
            let r = t("2026-03-05T07:00") + i * 60_000;
            rec(0, r, r + 45_000, Some(r + if i % 2 == 0 { 30_000 } else { 60_000 }), Priority::Low)
        })
        .collect();
    let f2 = t("2026-03-05T07:05");
    a.push(AlarmRecord { shelved: true, ..rec(2, f2, f2 + 700_000, Some(f2 + 600_000), Priority::High) });
    for s in [0, 20_000, 40_000] {
        let r = t("2026-03-05T19:00") + s;
        a.push(AlarmRecord { suppressed: true, ..rec(1, r, r + 5_000, None, Priority::Medium) });
    }
    a.push(rec(3, t("2026-03-05T00:30"), t("2026-03-06T01:00"), None, Priority::Unknown));
    a.sort_by_key(|r| r.raised_ms);
    let inp = input(&p, &[], "2026-03-05T00:00", t("2026-03-06T00:00"));
    let figs = alarm_load::alarm_load(&inp, &keys, &a);
    let get = |crew: &str, figure: &str| {
        figs.iter().find(|f| f.crew == crew && f.figure == figure).unwrap_or_else(|| panic!("{crew} {figure}")).actual
    };
    let is = |crew: &str, figure: &str, want: f64| {
        let got = get(crew, figure).unwrap();
        assert!(close(got, want), "{crew} {figure}: {got} != {want}");
    };
    for (crew, alarms, ops, mean10, peak10, mean_h, peak_h, flood) in [
        ("all", 17.0, 1.5, 10.5 / 144.0, 5.5, 10.5 / 24.0, 6.5, 100.0 / 144.0),
        ("A", 13.0, 2.0, 6.5 / 72.0, 5.5, 6.5 / 12.0, 6.5, 100.0 / 72.0),
        ("B", 4.0, 1.0, 4.0 / 72.0, 3.0, 4.0 / 12.0, 3.0, 0.0),
    ] {
        is(crew, "alarms", alarms);
        is(crew, "operators_mean", ops);
        is(crew, "per_operator_10min_mean", mean10);
        is(crew, "per_operator_10min_peak", peak10);
        is(crew, "per_operator_hour_mean", mean_h);
        is(crew, "per_operator_hour_peak", peak_h);
        is(crew, "flood_windows_pct", flood);
        is(crew, "alarms_without_operator", 0.0);
    }
    // Needed skills s7:3 and vfd:3: day shifts hold both (a1, a2), nights only s7 (b1).
    is("A", "per_operator_10min_mean_all_covered", 6.5 / 72.0);
    assert_eq!(get("A", "per_operator_10min_mean_skills_missing"), None);
    is("B", "per_operator_10min_mean_skills_missing", 4.0 / 72.0);
    is("all", "per_operator_10min_mean_skills_missing", 4.0 / 72.0);
    assert_eq!(get("B", "per_operator_10min_mean_all_covered"), None);
    let actors: Vec<(&str, Option<f64>)> = figs
        .iter()
        .filter(|f| f.crew == "all" && f.figure == "bad_actor")
        .map(|f| (f.detail.as_str(), f.actual))
        .collect();
    assert_eq!(
        actors,
        [
            ("plant-a/press-1/P1", Some(12.0)),
            ("plant-a/filler-1/F1", Some(3.0)),
            ("plant-a/filler-1/F2", Some(1.0)),
            ("plant-a/press-1/P2", Some(1.0))
        ]
    );
    is("all", "top10_share_pct", 100.0);
    is("all", "chattering_alarms", 1.0);
    is("B", "chattering_alarms", 1.0);
    is("A", "chattering_alarms", 0.0);
    assert!(figs.iter().any(|f| f.figure == "chattering_alarms" && f.detail == "plant-a/filler-1/F1"));
    is("all", "stale_alarms", 1.0);
    is("B", "stale_alarms", 1.0);
    // P2 becomes stale at 00:30 the next day, after the window: none standing on 03-05.
    is("all", "stale_standing_max_per_day", 0.0);
    is("all", "shelved", 1.0);
    is("all", "suppressed", 3.0);
    is("all", "priority_high_pct", 100.0 / 16.0);
    is("all", "priority_medium_pct", 300.0 / 16.0);
    is("all", "priority_low_pct", 1200.0 / 16.0);
    is("all", "priority_unknown_pct", 100.0 / 17.0);
    is("all", "acked_pct", 1300.0 / 17.0);
    // Ack times (s): 30 ×6, 60 ×6, 600: median the 7th = 60; p90 at position 10.8 = 60.
    is("all", "ack_time_median_s", 60.0);
    is("all", "ack_time_p90_s", 60.0);
    is("A", "ack_time_median_s", 60.0);
    assert_eq!(get("B", "ack_time_median_s"), None, "B acknowledged nothing");
    let status =
        |crew: &str, figure: &str| figs.iter().find(|f| f.crew == crew && f.figure == figure).unwrap().status();
    assert_eq!(status("all", "per_operator_10min_mean"), "ok");
    assert_eq!(status("A", "flood_windows_pct"), "not_met");
    assert_eq!(status("all", "flood_windows_pct"), "ok");
    assert_eq!(status("all", "top10_share_pct"), "not_met");
    assert_eq!(status("all", "priority_low_pct"), "ok");
    assert_eq!(status("B", "chattering_alarms"), "not_met");
    assert_eq!(status("all", "stale_alarms"), "");
    let rep = alarm_load::report(&inp, &a, &figs);
    assert!(rep.notes.iter().any(|n| n.starts_with("1 of 17 activations carry no priority")), "{:?}", rep.notes);
}

/// Operators are those on shift qualified for a skill the line needs: when a1 is absent (03-06) only a2
/// operates line 1 by day; once a2's VFD certificate lapses (03-10 12:00) nobody does in the afternoon,
/// and an alarm then is counted as raised without an operator.
#[test]
fn alarm_load_counts_operators_from_roster_and_qualifications() {
    use shiftlens_collector::join::{AlarmKey, AlarmRecord, Priority};
    let p = people();
    let keys = [AlarmKey { site: "plant-a".into(), asset: "filler-1".into(), alarm: "F".into() }];
    let rec = |raised: i64| AlarmRecord {
        key: 0,
        raised_ms: raised,
        cleared_ms: Some(raised + 1000),
        acked_ms: None,
        priority: Priority::Unknown,
        shelved: false,
        suppressed: false,
    };
    let day = |d: &str| input(&p, &[], &format!("{d}T06:00"), t(&format!("{d}T18:00")));
    let one = [rec(t("2026-03-06T08:00"))];
    let figs = alarm_load::alarm_load(&day("2026-03-06"), &keys, &one);
    let get =
        |figs: &[alarm_load::Figure], f: &str| figs.iter().find(|x| x.crew == "A" && x.figure == f).unwrap().actual;
    assert_eq!(get(&figs, "operators_mean"), Some(1.0), "a1 absent: a2 alone (vfd)");
    assert_eq!(get(&figs, "per_operator_10min_peak"), Some(1.0));
    let late = [rec(t("2026-03-10T13:00"))];
    let figs = alarm_load::alarm_load(&day("2026-03-10"), &keys, &late);
    // Morning windows (36 of 72) have a1 and a2 (vfd valid); after 12:00 only a1 (s7) is on shift for this line.
    assert_eq!(get(&figs, "operators_mean"), Some(1.5));
    assert_eq!(get(&figs, "alarms_without_operator"), Some(0.0), "a1 holds s7, a skill of line 1");
    // A line needing only vfd (filler-1 moved to its own line): nobody operates it after the lapse.
    let mut q = people();
    q.assets[1].line = "line2".into();
    let q = q.rebuilt();
    let inp = Input { people: &q, ..day("2026-03-10") };
    let figs = alarm_load::alarm_load(&inp, &keys, &late);
    assert_eq!(get(&figs, "alarms_without_operator"), Some(1.0));
    assert_eq!(get(&figs, "operators_mean"), Some(1.0), "36 windows with a2; after the lapse none");
}

#[test]
fn reports_about_people_respect_the_minimum_group_size_and_pseudonyms() {
    let p =
        plant_with(Settings { min_group_size: 3, pseudonymize: true, min_baseline_events: 3, ..Settings::default() });
    let e = events(&p);
    let rep = mttr::report(&month(&p, &e), Dim::Crew);
    assert!(rep.rows.is_empty(), "crews of 2 and 1 people are left out: {:?}", rep.rows);
    assert!(rep.notes.iter().any(|n| n.contains("crew A left out")));
    let rows = priority::priorities(&month(&p, &e), 3);
    assert!(priority::report(&month(&p, &e), &rows, true).rows.is_empty());
    let q = plant_with(Settings { pseudonymize: true, ..Settings::default() });
    let shown = privacy::show(&q, "a2");
    assert!(shown.starts_with("P-") && shown != "a2");
    assert_eq!(shown, privacy::show(&q, "a2"));
    let j = join::report(&month(&q, &events(&q)));
    assert!(j.rows.iter().all(|r| !r[6].as_str().unwrap().contains("a1")), "{:?}", j.rows);
}

#[test]
fn every_report_renders_as_table_json_and_csv() {
    let p = people();
    let e = events(&p);
    let rep = pareto::report(&pareto::pareto(&month(&p, &e), ParetoBy::Asset), ParetoBy::Asset);
    let table = render::render(&rep, render::Format::Table).unwrap();
    assert!(table.starts_with("asset     events  hours"), "{table}");
    let csv = render::render(&rep, render::Format::Csv).unwrap();
    assert_eq!(csv.lines().nth(1), Some("press-1,4,11.0,11000.0,3.0,0.957,0.957"));
    let json: serde_json::Value = serde_json::from_str(&render::render(&rep, render::Format::Json).unwrap()).unwrap();
    assert_eq!(json["columns"][0], "asset");
    assert_eq!(json["rows"][1][0], "filler-1");
}

#[test]
fn stats_quantiles_intervals_and_shrinkage() {
    use shiftlens_collector::report::stats::*;
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(shrink(10.0, 0, 2.0, 5.0), 2.0);
    assert_eq!(shrink(10.0, 5, 2.0, 5.0), 6.0);
    assert_eq!(mean_ci(&[3.0]), None);
    let (lo, hi) = mean_ci(&[2.0, 2.0, 2.0]).unwrap();
    assert_eq!((lo, hi), (2.0, 2.0));
    // Large samples use the normal approximation: 1000 values alternating 0 and 2 → 1 ± 1.96·σ/√n.
    let v: Vec<f64> = (0..1000).map(|i| f64::from(i % 2) * 2.0).collect();
    let (lo, hi) = mean_ci(&v).unwrap();
    let h = 1.96 * (1000.0f64 / 999.0).sqrt() / 1000f64.sqrt();
    assert!(close(lo, 1.0 - h) && close(hi, 1.0 + h));
}

#[test]
fn lapsed_certificates_are_listed_with_how_long_ago_and_projected_from_now() {
    let p = people();
    // Ten days after a2's vfd certificate lapsed (03-10 12:00), with nobody else on crew A holding vfd.
    let now = t("2026-03-20T12:00");
    let rows = recert::recert(&input(&p, &[], "2026-02-01T00:00", now));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.person.as_str(), r.cert_id.as_str(), r.expired), ("a2", "VFD-77", true));
    assert!(r.shifts > 0 && r.shifts_to_zero == r.shifts, "{r:?}");
    let rep = recert::report(&input(&p, &[], "2026-02-01T00:00", now), &rows);
    let col = |name: &str| rep.columns.iter().position(|c| c == name).unwrap();
    assert_eq!(
        (rep.rows[0][col("status")].as_str(), rep.rows[0][col("days_left")].as_i64()),
        (Some("expired"), Some(-10))
    );
    // Before the lapse the same certificate is expiring, five days ahead.
    let rep = recert::report(
        &input(&p, &[], "2026-02-01T00:00", t("2026-03-05T00:00")),
        &recert::recert(&input(&p, &[], "2026-02-01T00:00", t("2026-03-05T00:00"))),
    );
    assert_eq!(
        (rep.rows[0][col("status")].as_str(), rep.rows[0][col("days_left")].as_i64()),
        (Some("expiring"), Some(5))
    );
    // A renewal (a later assessment with a valid certificate) takes it off the list.
    let mut renewed = people();
    renewed.person_skills.push(PersonSkill {
        assessed_ms: t("2026-03-15T00:00"),
        cert_id: Some("VFD-78".into()),
        issued_ms: Some(t("2026-03-15T00:00")),
        expires_ms: Some(t("2028-03-15T00:00")),
        ..p.person_skills[2].clone()
    });
    let renewed = renewed.rebuilt();
    assert!(recert::recert(&input(&renewed, &[], "2026-02-01T00:00", now)).is_empty());
}

#[test]
fn days_left_read_as_words() {
    const D: i64 = 24 * H;
    for (expires, expired, words) in [
        (-30 * D - H, true, "expired 30 days ago"),
        (-D - H, true, "expired 1 day ago"),
        (-H, true, "expired within the last day"),
        (H, false, "expires within a day"),
        (D + H, false, "expires in 1 day"),
        (40 * D, false, "expires in 40 days"),
    ] {
        let d = recert::days_left(expires, 0);
        assert_eq!(recert::days_left_text(expired, d), words, "{expires}");
    }
}

#[test]
fn training_priorities_say_when_a_candidates_certificate_has_lapsed() {
    let mut p = people();
    // a2 was assessed again for s7, with a certificate that lapsed on 02-01, before the window.
    p.person_skills.push(PersonSkill {
        assessed_ms: t("2025-06-01T00:00"),
        cert_id: Some("S7-9".into()),
        issued_ms: Some(t("2025-06-01T00:00")),
        expires_ms: Some(t("2026-02-01T00:00")),
        ..p.person_skills[1].clone()
    });
    let p = p.rebuilt();
    let e = events(&p);
    let rows = priority::priorities(&month(&p, &e), 3);
    assert_eq!(rows[0].lapsed, [("a2".to_string(), t("2026-02-01T00:00"))]);
    let rep = priority::report(&month(&p, &e), &rows, false);
    let closest = rep.columns.iter().position(|c| c == "closest").unwrap();
    assert_eq!(rep.rows[0][closest], "a2 (level 2, certificate lapsed 2026-02-01)");
    let rep = priority::report(&month(&p, &e), &rows, true);
    let lapsed = rep.columns.iter().position(|c| c == "certificate_lapsed").unwrap();
    assert_eq!(rep.rows[0][lapsed], "2026-02-01");
    // Without a lapsed certificate the column is empty.
    let p = people();
    let rows = priority::priorities(&month(&p, &e), 3);
    assert_eq!(priority::report(&month(&p, &e), &rows, true).rows[0][lapsed], serde_json::Value::Null);
}

#[test]
fn weeks_are_calendar_weeks_of_the_site_time_zone() {
    let ms = |s: &str| t(s);
    let berlin = chrono_tz::Europe::Berlin;
    let sydney = chrono_tz::Australia::Sydney;
    for (tz, from, to, want) in [
        // Autumn change in Berlin (10-26): local midnight is 22:00 UTC before, 23:00 UTC after.
        (
            berlin,
            "2025-10-19T22:00",
            "2025-11-09T23:00",
            vec!["2025-10-19T22:00", "2025-10-26T23:00", "2025-11-02T23:00"],
        ),
        // Spring change (03-30): 23:00 UTC before, 22:00 UTC after.
        (berlin, "2025-03-23T23:00", "2025-04-06T22:00", vec!["2025-03-23T23:00", "2025-03-30T22:00"]),
        // A window starting mid-day starts its first week at that day's local midnight.
        (berlin, "2025-01-01T12:00", "2025-01-09T00:00", vec!["2024-12-31T23:00", "2025-01-07T23:00"]),
        // The southern hemisphere changes the other way (Sydney leaves summer time on 2025-04-06).
        (sydney, "2025-03-31T13:00", "2025-04-14T14:00", vec!["2025-03-31T13:00", "2025-04-07T14:00"]),
        // Short windows still have one week.
        (berlin, "2025-06-02T10:00", "2025-06-02T11:00", vec!["2025-06-01T22:00"]),
    ] {
        let got = week_starts(tz, ms(from), ms(to), 1000);
        assert_eq!(got, want.iter().map(|w| ms(w)).collect::<Vec<_>>(), "{tz} {from}..{to}");
    }
    assert_eq!(week_starts(berlin, ms("2025-01-01T00:00"), ms("2026-01-01T00:00"), 10).len(), 10);
}

#[test]
fn empty_alarm_load_and_empty_windows_explain_themselves() {
    let p = people();
    let day = input(&p, &[], "2026-03-05T00:00", t("2026-03-06T00:00"));
    let says = |p: &Personnel, needle: &str| {
        let inp = Input { people: p, ..day };
        let rep = alarm_load::report(&inp, &[], &alarm_load::alarm_load(&inp, &[], &[]));
        assert!(rep.notes.iter().any(|n| n.contains(needle)), "{needle}: {:?}", rep.notes);
    };
    says(&p, "all zeros: no alarm became active");
    let mut no_rota = people();
    no_rota.rotations.clear();
    no_rota.roster.clear();
    let no_rota = no_rota.rebuilt();
    says(&no_rota, "import rotation.csv");
    // Rounding never gives -0: an empty window reads 0.0.
    for (x, d) in [(-0.0, 1), (-0.04, 1), (-1e-12, 2)] {
        assert_eq!(num(x, d).to_string(), "0.0", "{x}");
    }
}

#[test]
fn a_shift_report_lists_its_stops_cost_crew_missing_skills_and_certificates() {
    let p = people();
    let e = events(&p);
    let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 6).unwrap();
    assert_eq!(shift::slot_names(&p), ["day", "night"]);
    let slots = shift::slots(&p, date, "day");
    assert_eq!(slots.iter().map(|s| s.crew.as_str()).collect::<Vec<_>>(), ["A"]);
    let now = t("2026-03-07T00:00");
    let r = shift::shift_report(&p, &e, &slots, now);
    // E4: press-1 at 10:00 for 5 h, uncovered (a1 absent), missing s7; 5 h × 1000/h.
    assert_eq!((r.start_ms, r.end_ms), (t("2026-03-06T06:00"), t("2026-03-06T18:00")));
    assert_eq!(r.stops, [3]);
    assert!(close(r.downtime_h, 5.0) && close(r.cost, 5000.0));
    assert_eq!((r.covered, r.uncovered), (0, 1));
    assert_eq!(r.on_shift, ["a2"]);
    assert_eq!(r.missing.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(), [("s7", 1)]);
    assert_eq!(r.not_held, ["s7"]);
    // a2's vfd certificate lapses on 03-10 12:00, 3.75 days after the shift ends.
    assert_eq!(
        r.certificates.iter().map(|c| (c.person.as_str(), c.skill.as_str())).collect::<Vec<_>>(),
        [("a2", "vfd")]
    );
    let (summary, rep) = shift::report(&p, &e, &r, now);
    assert_eq!(summary["certificates"][0]["days_left"], 3);
    assert_eq!(summary["cost"], 5000.0);
    assert_eq!(rep.rows.len(), 1);
    assert_eq!(rep.rows[0][0], "press-1");
    // The night shift of 03-05 (crew B) holds E5 (22:00, filler-1, vfd missing) and nothing else.
    let night = shift::shift_report(
        &p,
        &e,
        &shift::slots(&p, chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap(), "night"),
        now,
    );
    assert_eq!(night.stops, [4]);
    assert!(close(night.cost, 250.0));
    // An open stop counts until now.
    let mut open = e.clone();
    open[3].end_ms = None;
    assert!(close(shift::shift_report(&p, &open, &slots, t("2026-03-06T12:00")).downtime_h, 2.0));
    // The last completed shift: at 19:00 the day shift has ended, the night shift has not.
    assert_eq!(shift::last_completed(&p, t("2026-03-06T19:00")), Some((date, "day")));
    assert_eq!(
        shift::last_completed(&p, t("2026-03-07T06:00")),
        Some((date, "night")),
        "the night shift of 03-06 ends at 06:00 on 03-07"
    );
    // No slot: an empty report.
    assert!(shift::shift_report(&p, &e, &[], now).stops.is_empty());
}

#[test]
fn repeat_incidents_are_the_same_asset_and_first_out_within_n_days() {
    let fo = |d: Downtime, id: &str| {
        let mut d = with_class(d, "drive");
        d.first_out.as_mut().unwrap().id = id.into();
        d
    };
    let d = [
        fo(down("press-1", "2026-03-02T10:00", 1.0), "AL1"), // first: no earlier one
        fo(down("press-1", "2026-03-05T10:00", 1.0), "AL1"), // 3 days after the first ended: repeat
        fo(down("press-1", "2026-03-06T10:00", 1.0), "AL2"), // other alarm: not
        fo(down("filler-1", "2026-03-06T12:00", 1.0), "AL1"), // other asset: not
        down("press-1", "2026-03-07T10:00", 1.0),            // no first-out alarm: cannot repeat
        fo(down("press-1", "2026-03-12T11:00", 1.0), "AL1"), // 7 days after 03-05 11:00 ended: repeat (≤ N)
        fo(down("press-1", "2026-03-19T12:01", 1.0), "AL1"), // 7 days and 1 minute after 03-12 12:00: not
    ];
    let refs: Vec<&Downtime> = d.iter().collect();
    let flags = repeats::repeats(&refs, repeats::DEFAULT_WINDOW_MS);
    assert_eq!(flags, [Some(false), Some(true), Some(false), Some(false), None, Some(true), Some(false)]);
    // A shorter window (3 days) keeps only the second.
    assert_eq!(repeats::repeats(&refs, 3 * 24 * H).iter().filter(|f| **f == Some(true)).count(), 1);
    // Weekly share over a window that starts after the first stop: the first still counts as the earlier one.
    let scoped: Vec<(&Downtime, bool)> = d.iter().map(|x| (x, true)).collect();
    let (s, rep) = repeats::report(
        &scoped,
        repeats::DEFAULT_WINDOW_MS,
        chrono_tz::UTC,
        t("2026-03-03T00:00"),
        t("2026-03-24T00:00"),
    );
    assert_eq!(
        (s["events"].as_u64(), s["with_first_out"].as_u64(), s["repeats"].as_u64()),
        (Some(6), Some(5), Some(2))
    );
    assert_eq!(s["repeat_share"], 0.4);
    // Weeks from Tuesday 03-03: {03-05 R, 03-06, 03-06, 03-07 (no first-out)}, {03-12 R}, {03-19}.
    let weeks: Vec<(&str, u64, u64)> =
        rep.rows.iter().map(|r| (r[0].as_str().unwrap(), r[2].as_u64().unwrap(), r[3].as_u64().unwrap())).collect();
    assert_eq!(weeks, [("2026-03-03", 3, 1), ("2026-03-10", 1, 1), ("2026-03-17", 1, 0)]);
    // Trend: first half (to 03-13 12:00) 2 of 4, second half 0 of 1.
    assert_eq!((s["first_half_share"].as_f64(), s["second_half_share"].as_f64()), (Some(0.5), Some(0.0)));
    // Out of scope (another crew, asset): not counted, but still an earlier stop for the rest.
    let scoped: Vec<(&Downtime, bool)> = d.iter().enumerate().map(|(i, x)| (x, i != 1)).collect();
    let (s, _) = repeats::report(
        &scoped,
        repeats::DEFAULT_WINDOW_MS,
        chrono_tz::UTC,
        t("2026-03-03T00:00"),
        t("2026-03-24T00:00"),
    );
    assert_eq!(s["repeats"].as_u64(), Some(1));
}

#[test]
fn training_effect_compares_repairs_before_and_after_a_qualification_rose() {
    let mut p = people();
    // a2 rises from s7 level 2 to 3 on 03-04 00:00 (so covers press-1 from then on).
    p.person_skills.push(PersonSkill { level: 3, assessed_ms: t("2026-03-04T00:00"), ..p.person_skills[1].clone() });
    let p = p.rebuilt();
    let d = [
        down("press-1", "2026-03-02T10:00", 4.0), // before: a1 and a2 on the day shift
        down("press-1", "2026-03-03T10:00", 2.0), // before
        down("press-1", "2026-03-05T10:00", 1.0), // after
        down("press-1", "2026-03-06T10:00", 2.0), // after (a1 absent)
        down("press-1", "2026-03-04T20:00", 3.0), // night: a2 not on shift, not counted
    ];
    let e = join(&p, &d);
    let inp = month(&p, &e);
    let rows = training::effects(&inp);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let x = &rows[0];
    assert_eq!((x.person.as_str(), x.skill.as_str(), x.from_level, x.to_level), ("a2", "s7", 2, 3));
    let (mut b, mut a) = (x.before.clone(), x.after.clone());
    b.sort_by(f64::total_cmp);
    a.sort_by(f64::total_cmp);
    assert_eq!((b, a), (vec![2.0, 4.0], vec![1.0, 2.0]));
    // 2 events after × (3 h − 1.5 h).
    assert!(close(x.saved_h().unwrap(), 3.0));
    let rep = training::report(&inp, &rows);
    let col = |name: &str| rep.columns.iter().position(|c| c == name).unwrap();
    let r = &rep.rows[0];
    assert_eq!((r[col("before_n")].as_u64(), r[col("after_n")].as_u64()), (Some(2), Some(2)));
    assert_eq!((r[col("before_mttr_h")].as_f64(), r[col("after_mttr_h")].as_f64()), (Some(3.0), Some(1.5)));
    let (lo, hi) = (r[col("after_ci_low_h")].as_f64().unwrap(), r[col("after_ci_high_h")].as_f64().unwrap());
    assert!(lo >= 1.0 && hi <= 2.0 && lo <= 1.5 && 1.5 <= hi, "{lo} {hi}");
    assert_eq!(r[col("hours_saved")].as_f64(), Some(3.0));
    // Outside the window, or without a rise: nothing.
    assert!(training::effects(&input(&p, &e, "2026-03-05T00:00", t("2026-03-31T00:00"))).is_empty());
    assert!(training::effects(&month(&people(), &events(&people()))).is_empty());
}
