//! Personnel model, rotation roster, the join, CSV imports and their SQLite store, against hand-computed
//! fixtures (see people_fixture.rs).
#![allow(clippy::unwrap_used)]

#[path = "people_fixture.rs"]
mod fixture;

use fixture::*;
use shiftlens_collector::people::import::{self, Kind};
use shiftlens_collector::people::*;
use shiftlens_collector::report::join::{join_one, Baselines};
use shiftlens_collector::store::people as db;

fn ids(p: &Personnel, at: &str) -> Vec<String> {
    p.on_shift(t(at)).into_iter().map(|o| o.person.to_string()).collect()
}

#[test]
fn on_shift_follows_the_rotation_including_a_night_that_started_the_day_before() {
    let p = plant();
    assert_eq!(ids(&p, "2026-03-05T10:00"), ["a1", "a2"]);
    assert_eq!(ids(&p, "2026-03-05T20:00"), ["b1"]);
    assert_eq!(ids(&p, "2026-03-06T05:59"), ["b1"]);
    // start ≤ t < end: at 18:00 the night crew is on, the day crew is not.
    assert_eq!(ids(&p, "2026-03-05T18:00"), ["b1"]);
    let o = &p.on_shift(t("2026-03-05T10:00"))[0];
    assert_eq!((o.crew, o.shift), (Some("A"), Some("day")));
}

#[test]
fn an_absence_takes_a_person_off_their_rotation_shift() {
    let p = plant();
    assert_eq!(ids(&p, "2026-03-06T10:00"), ["a2"]);
}

#[test]
fn a_level_exactly_at_the_minimum_qualifies_and_one_below_does_not() {
    let p = plant();
    let s7 = Requirement { skill: "s7".into(), min_level: 3 };
    assert!(p.qualified("b1", &s7, t("2026-03-05T20:00")));
    assert!(!p.qualified("a2", &s7, t("2026-03-05T10:00")));
    // Before the assessment nobody is qualified.
    assert!(!p.qualified("b1", &s7, t("2024-12-31T00:00")));
}

#[test]
fn a_certificate_that_expires_mid_shift_covers_the_first_half_only() {
    let p = plant();
    let before = join_one(&p, &down("filler-1", "2026-03-10T11:00", 1.0));
    assert_eq!(before.covered, Some(true));
    assert_eq!(before.required[0].qualified, ["a2"]);
    let after = join_one(&p, &down("filler-1", "2026-03-10T12:00", 1.0));
    assert_eq!(after.covered, Some(false));
    assert_eq!(after.missing, ["vfd"]);
    assert_eq!(after.shift.as_deref(), Some("day"));
}

#[test]
fn a_shift_change_during_an_event_uses_the_people_on_shift_at_its_start() {
    let p = plant();
    // 17:30-18:45: crew A at the start, crew B takes over at 18:00.
    let e = join_one(&p, &down("filler-1", "2026-03-05T17:30", 1.25));
    assert_eq!(e.on_shift, ["a1", "a2"]);
    assert_eq!(e.crew.as_deref(), Some("A"));
    assert_eq!(e.covered, Some(true));
    let e = join_one(&p, &down("filler-1", "2026-03-05T18:15", 0.5));
    assert_eq!((e.on_shift.clone(), e.covered), (vec!["b1".to_string()], Some(false)));
}

#[test]
fn an_event_with_no_roster_is_neither_covered_nor_uncovered() {
    let p = plant();
    let e = join_one(&p, &down("press-1", "2025-12-01T10:00", 1.0));
    assert!(!e.roster_known);
    assert_eq!(e.covered, None);
    assert!(e.on_shift.is_empty());
    assert_eq!(e.missing, ["s7"]);
    // And it never counts as avoidable.
    assert_eq!(Baselines::new(std::slice::from_ref(&e), 1).avoidable_h(&e), 0.0);
}

#[test]
fn the_first_out_alarm_class_adds_required_skills_and_the_higher_level_wins() {
    let p = plant();
    let e = join_one(&p, &with_class(down("press-1", "2026-03-05T10:00", 1.0), "drive"));
    let req: Vec<(&str, u8)> = e.required.iter().map(|c| (c.skill.as_str(), c.min_level)).collect();
    assert_eq!(req, [("s7", 3), ("vfd", 3)]);
    assert_eq!(e.first_out_class.as_deref(), Some("drive"));
    assert_eq!(e.covered, Some(true));
    // At night: b1 has s7 but nobody has vfd.
    let e = join_one(&p, &with_class(down("press-1", "2026-03-05T22:00", 1.0), "drive"));
    assert_eq!(e.missing, ["vfd"]);
}

#[test]
fn overlapping_assignments_count_a_person_once() {
    let mut p = plant();
    p.people.push(Person {
        id: "x1".into(),
        name: "X".into(),
        crew: String::new(),
        discipline: "IT".into(),
        from_ms: None,
    });
    for (s, e) in [("2026-03-05T08:00", "2026-03-05T14:00"), ("2026-03-05T12:00", "2026-03-05T16:00")] {
        p.roster.push(RosterEntry {
            person: "x1".into(),
            start_ms: t(s),
            end_ms: t(e),
            kind: RosterKind::Work,
            shift: Some("support".into()),
        });
    }
    let p = p.rebuilt();
    assert_eq!(ids(&p, "2026-03-05T13:00"), ["a1", "a2", "x1"]);
    assert_eq!(ids(&p, "2026-03-05T15:00"), ["a1", "a2", "x1"]);
    assert_eq!(ids(&p, "2026-03-05T16:00"), ["a1", "a2"]);
}

#[test]
fn a_crew_change_takes_effect_from_its_date() {
    let mut p = plant();
    p.people.push(Person {
        id: "b1".into(),
        name: "B1".into(),
        crew: "A".into(),
        discipline: "OT".into(),
        from_ms: Some(t("2026-04-01T00:00")),
    });
    let p = p.rebuilt();
    assert_eq!(ids(&p, "2026-03-31T20:00"), ["b1"]);
    assert_eq!(ids(&p, "2026-04-01T20:00"), Vec::<String>::new());
    assert_eq!(ids(&p, "2026-04-01T10:00"), ["a1", "a2", "b1"]);
}

#[test]
fn a_dst_change_inside_a_rotation_keeps_wall_clock_shift_times() {
    let settings = Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() };
    let p = plant_with(settings.clone());
    let night = &p.rotations[1];
    // Spring forward (2026-03-29 02:00 → 03:00): the night 28th 18:00 → 29th 06:00 local lasts 11 h.
    let s = roster::slot_on(&settings, night, chrono::NaiveDate::from_ymd_opt(2026, 3, 28).unwrap()).unwrap();
    assert_eq!((s.start_ms, s.end_ms), (t("2026-03-28T17:00"), t("2026-03-29T04:00")));
    // Fall back (2026-10-25 03:00 → 02:00): that night lasts 13 h.
    let s = roster::slot_on(&settings, night, chrono::NaiveDate::from_ymd_opt(2026, 10, 24).unwrap()).unwrap();
    assert_eq!((s.start_ms, s.end_ms), (t("2026-10-24T16:00"), t("2026-10-25T05:00")));
    // 04:30 UTC on the 29th is 06:30 CEST: the day crew, not the night crew.
    assert_eq!(ids(&p, "2026-03-29T04:30"), ["a1", "a2"]);
    assert_eq!(ids(&p, "2026-03-29T03:59"), ["b1"]);
}

#[test]
fn the_resolver_comes_from_the_work_order_on_the_same_asset_and_time() {
    let mut p = plant();
    let wo = |ticket: &str, asset: &str, opened: &str, by: &str| WorkOrder {
        ticket: ticket.into(),
        asset: asset.into(),
        opened_ms: t(opened),
        closed_ms: None,
        resolved_by: Some(by.into()),
    };
    p.work_orders = vec![
        wo("WO-1", "press-1", "2026-03-05T10:05", "a1"),
        wo("WO-2", "filler-1", "2026-03-05T10:01", "a2"),
        wo("WO-3", "press-1", "2026-03-05T13:00", "b1"),
    ];
    let p = p.rebuilt();
    let e = join_one(&p, &down("press-1", "2026-03-05T10:00", 1.0));
    assert_eq!((e.work_order.as_deref(), e.resolver.as_deref()), (Some("WO-1"), Some("a1")));
    let e = join_one(&p, &down("press-1", "2026-03-05T16:00", 1.0));
    assert_eq!(e.resolver, None);
}

// ---- CSV imports ----

fn parse(kind: Kind, file: &str, text: &str, known: &Personnel) -> Result<Vec<import::Record>, Vec<String>> {
    import::parse(kind, file, text, known).map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let known = plant();
    let text = "id,name,crew,discipline\np1,Ana,A,IT\np2,Ben,E,OT\np3,,B,mechanical\n";
    let errs = parse(Kind::People, "people.csv", text, &known).unwrap_err();
    assert_eq!(
        errs,
        [
            "people.csv:3:crew: unknown crew \"E\" (rotation crews: A, B)".to_string(),
            "people.csv:4:name: must not be empty".to_string(),
        ]
    );
    let text =
        "person,skill,level,assessed,certificate_id,issued,expires\na1,s7,5,2026-01-01,,,\na1,plc,2,2026-13-01,,,\n";
    let errs = parse(Kind::PersonSkills, "person-skills.csv", text, &known).unwrap_err();
    assert_eq!(errs[0], "person-skills.csv:2:level: invalid level \"5\": expected 0-4");
    assert_eq!(errs[1], "person-skills.csv:3:skill: unknown skill \"plc\": import skills first");
    assert!(errs[2].starts_with("person-skills.csv:3:assessed: invalid time \"2026-13-01\""), "{}", errs[2]);
    let errs =
        parse(Kind::Assets, "assets.csv", "id,site,line,cost_per_hour,requires\npress-2,plant-a,l1,-3,s7:9\n", &known)
            .unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("assets.csv:2:cost_per_hour:"));
    assert!(errs[1].starts_with("assets.csv:2:requires: invalid item \"s7:9\""));
    let errs = parse(Kind::Skills, "skills.csv", "id,name\ns7,S7\n", &known).unwrap_err();
    assert_eq!(errs[0], "skills.csv:1:domain: missing column \"domain\" (required: id, name, domain, certificate)");
    let errs = parse(Kind::Rotation, "rotation.csv", "crew,anchor,cycle\nA,2026-01-01,DDX\nA,2026-01-01,DD\n", &known)
        .unwrap_err();
    assert!(errs[0].starts_with("rotation.csv:2:cycle: unknown shift code 'X'"), "{}", errs[0]);
    assert_eq!(errs[1], "rotation.csv:3:crew: duplicate of line 2 (key \"A\")");
}

#[test]
fn local_times_in_csvs_are_read_in_the_site_time_zone() {
    let tz = chrono_tz::Europe::Berlin;
    assert_eq!(import::parse_time(tz, "2026-03-05"), Some(t("2026-03-04T23:00")));
    assert_eq!(import::parse_time(tz, "2026-07-05T06:00"), Some(t("2026-07-05T04:00")));
    assert_eq!(import::parse_time(tz, "2026-07-05T06:00:00Z"), Some(t("2026-07-05T06:00")));
    assert_eq!(import::parse_time(tz, "05.07.2026"), None);
}

fn store() -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = db::open(&dir.path().join("collector.db")).unwrap();
    (dir, conn)
}

fn import_text(conn: &mut rusqlite::Connection, kind: Kind, text: &str) -> Result<db::ImportSummary, Vec<String>> {
    let known = db::load(conn, Settings::default()).unwrap();
    let recs = parse(kind, &format!("{kind}.csv"), text, &known)?;
    Ok(db::import(conn, kind, &format!("{kind}.csv"), &recs, 1).unwrap())
}

const SKILLS: &str = "id,name,domain,certificate\ns7,S7 networking,IT,no\nvfd,VFD drives,electrical,yes\n";
const PEOPLE: &str = "id,name,crew,discipline\na1,Ana,A,IT\nb1,Ben,B,OT\n";

#[test]
fn an_import_with_one_bad_row_stores_nothing() {
    let (_dir, mut conn) = store();
    import_text(&mut conn, Kind::Skills, SKILLS).unwrap();
    let rev = db::data_revision(&conn).unwrap();
    let bad = "id,name,domain,certificate\nopc,OPC UA,IT,no\nprofinet,Profinet,OT,maybe\n";
    let errs = import_text(&mut conn, Kind::Skills, bad).unwrap_err();
    assert_eq!(errs, ["skills.csv:3:certificate: invalid \"maybe\": expected yes or no"]);
    assert_eq!(db::data_revision(&conn).unwrap(), rev);
    let p = db::load(&conn, Settings::default()).unwrap();
    assert_eq!(p.skills.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s7", "vfd"]);
}

#[test]
fn re_importing_the_same_file_changes_nothing() {
    let (_dir, mut conn) = store();
    let first = import_text(&mut conn, Kind::Skills, SKILLS).unwrap();
    assert_eq!((first.added, first.import_id), (2, Some(1)));
    let again = import_text(&mut conn, Kind::Skills, SKILLS).unwrap();
    assert_eq!(again, db::ImportSummary { import_id: None, added: 0, changed: 0, removed: 0, unchanged: 2 });
    assert_eq!(db::data_revision(&conn).unwrap(), 1);
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM people_record", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_changed_record_is_a_new_version_and_the_old_one_is_kept() {
    let (_dir, mut conn) = store();
    import_text(&mut conn, Kind::Skills, SKILLS).unwrap();
    import_text(&mut conn, Kind::People, PEOPLE).unwrap();
    let ps1 = "person,skill,level,assessed,certificate_id,issued,expires\na1,s7,2,2025-01-01,,,\n";
    import_text(&mut conn, Kind::PersonSkills, ps1).unwrap();
    // A correction of the same assessment, and a later assessment: two different keys.
    let ps2 =
        "person,skill,level,assessed,certificate_id,issued,expires\na1,s7,3,2025-01-01,,,\na1,s7,4,2026-02-01,,,\n";
    let s = import_text(&mut conn, Kind::PersonSkills, ps2).unwrap();
    assert_eq!((s.added, s.changed, s.removed), (1, 1, 0));
    let key = format!("a1/s7@{}", t("2025-01-01T00:00"));
    let h = db::history(&conn, Kind::PersonSkills, &key).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].1, s.import_id, "the old version is closed by the new import");
    assert!(h[0].2.contains("\"level\":2") && h[1].2.contains("\"level\":3"));
    let p = db::load(&conn, Settings::default()).unwrap();
    assert_eq!(p.level_at("a1", "s7", t("2026-01-15T00:00")), 3);
    assert_eq!(p.level_at("a1", "s7", t("2026-02-15T00:00")), 4);
    // Dropping a row removes it from the current data but not from history.
    let s = import_text(&mut conn, Kind::People, "id,name,crew,discipline\na1,Ana,A,IT\n").unwrap();
    assert_eq!(s.removed, 1);
    assert_eq!(db::load(&conn, Settings::default()).unwrap().people.len(), 1);
    assert_eq!(db::history(&conn, Kind::People, "b1@").unwrap().len(), 1);
}

#[test]
fn join_snapshots_are_immutable_and_a_correction_is_a_new_revision() {
    let (_dir, mut conn) = store();
    import_text(&mut conn, Kind::Skills, SKILLS).unwrap();
    import_text(&mut conn, Kind::Rotation, "crew,anchor,cycle\nA,2026-01-01,D\nB,2026-01-01,N\n").unwrap();
    import_text(&mut conn, Kind::People, PEOPLE).unwrap();
    import_text(&mut conn, Kind::Assets, "id,site,line,cost_per_hour,requires\npress-1,plant-a,line1,1000,s7:3\n")
        .unwrap();
    import_text(&mut conn, Kind::PersonSkills, "person,skill,level,assessed\na1,s7,2,2025-01-01\n").unwrap();
    let ev = [down("press-1", "2026-03-05T10:00", 2.0)];
    let p = db::load(&conn, Settings::default()).unwrap();
    let j1 = shiftlens_collector::report::join(&p, &ev);
    assert_eq!(j1[0].covered, Some(false));
    let rev1 = db::data_revision(&conn).unwrap();
    let s = db::save_snapshots(&mut conn, rev1, &j1, 10).unwrap();
    assert_eq!((s.new, s.revised), (1, 0));
    // Same data again: nothing new.
    assert_eq!(db::save_snapshots(&mut conn, rev1, &j1, 11).unwrap().unchanged, 1);
    // HR corrects a1's level: the join changes and becomes revision 2; revision 1 stays as it was.
    import_text(&mut conn, Kind::PersonSkills, "person,skill,level,assessed\na1,s7,3,2025-01-01\n").unwrap();
    let p = db::load(&conn, Settings::default()).unwrap();
    let j2 = shiftlens_collector::report::join(&p, &ev);
    assert_eq!(j2[0].covered, Some(true));
    let rev2 = db::data_revision(&conn).unwrap();
    assert_eq!(db::save_snapshots(&mut conn, rev2, &j2, 20).unwrap().revised, 1);
    let snaps = db::snapshots(&conn, &j1[0].key).unwrap();
    assert_eq!(
        snaps.iter().map(|s| (s.revision, s.data_rev, s.event.covered)).collect::<Vec<_>>(),
        [(1, rev1, Some(false)), (2, rev2, Some(true))]
    );
    assert_eq!(db::latest_snapshots(&conn).unwrap(), j2);
    let err = conn.execute("UPDATE join_snapshot SET body = '{}'", []).unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert!(conn.execute("DELETE FROM join_snapshot", []).is_err());
}

#[test]
fn the_cli_imports_the_samples_and_prints_reports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    let db_path = dir.path().join("c.db");
    std::fs::write(
        &cfg,
        format!("[store]\npath = {:?}\n\n[people]\ntimezone = \"Europe/Berlin\"\n", db_path.to_str().unwrap()),
    )
    .unwrap();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let bin = env!("CARGO_BIN_EXE_shiftlens-collector");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).arg("--config").arg(&cfg).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for kind in [
        "skills",
        "rotation",
        "people",
        "person-skills",
        "roster",
        "assets",
        "alarm-classes",
        "initiatives",
        "work-orders",
        "on-call",
    ] {
        let file = samples.join(format!("{kind}.csv"));
        let (ok, out, err) = run(&["import", kind, file.to_str().unwrap()]);
        assert!(ok, "import {kind}: {err}");
        assert!(out.starts_with(kind), "{out}");
        let (ok, out, _) = run(&["import", kind, file.to_str().unwrap()]);
        assert!(ok && out.contains("no changes"), "re-import {kind}: {out}");
    }
    let bad = dir.path().join("people.csv");
    std::fs::write(&bad, "id,name,crew,discipline\np99,Zed,E,IT\n").unwrap();
    let (ok, _, err) = run(&["import", "people", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("people.csv:2:crew: unknown crew \"E\""), "{err}");
    let downtime = samples.join("downtime.jsonl");
    let (ok, out, err) = run(&[
        "report",
        "coverage",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-09",
        "--downtime",
        downtime.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("shift") && out.contains("s7-net"), "{out}");
    let (ok, out, err) = run(&[
        "report",
        "mttr",
        "--format",
        "json",
        "--from",
        "2026-03-01",
        "--to",
        "2026-04-01",
        "--downtime",
        downtime.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "mttr");
    let (ok, out, err) = run(&[
        "report",
        "join",
        "--format",
        "csv",
        "--from",
        "2026-03-01",
        "--to",
        "2026-04-01",
        "--downtime",
        downtime.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("event,asset,start"), "{out}");
}

#[test]
fn cached_rotation_slots_agree_with_the_direct_computation_inside_and_beyond_the_cache() {
    let settings = Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() };
    let mut p = plant_with(settings.clone());
    p.rotations.push(Rotation {
        crew: "C".into(),
        anchor: chrono::NaiveDate::from_ymd_opt(2026, 1, 3).unwrap(),
        cycle: "NNNN---DDD-NNN---DDDD-------".into(),
    });
    let p = p.rebuilt();
    for start in ["2026-03-25T00:00", "2026-10-20T00:00", "2032-03-25T00:00"] {
        for k in 0..(10 * 48) {
            let at = t(start) + k * 1_800_000 + 7;
            let cached: Vec<(i64, i64, String)> =
                p.slots_at(at).into_iter().map(|(s, r)| (s.start_ms, s.end_ms, r.crew.clone())).collect();
            let direct: Vec<(i64, i64, String)> = p
                .rotations
                .iter()
                .filter_map(|r| roster::shift_at(&settings, r, at).map(|s| (s.start_ms, s.end_ms, r.crew.clone())))
                .collect();
            let (mut a, mut b) = (cached, direct);
            a.sort();
            b.sort();
            assert_eq!(a, b, "at {at}");
        }
    }
}
