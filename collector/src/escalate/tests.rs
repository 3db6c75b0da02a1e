//! Table tests of the pure ladder.
#![allow(clippy::unwrap_used)]

use super::config::{Rung, Settings, Target};
use super::ladder::*;
use crate::people::*;

const H: i64 = 3_600_000;
const M: i64 = 60_000;
/// Monday 2025-03-03 00:00 UTC.
const DAY: i64 = 1_740_960_000_000;

fn person(id: &str) -> Person {
    Person { id: id.into(), name: id.into(), crew: "A".into(), discipline: "elec".into(), from_ms: None }
}

fn skill(p: &str, s: &str, level: u8, expires: Option<i64>) -> PersonSkill {
    PersonSkill {
        person: p.into(),
        skill: s.into(),
        level,
        assessed_ms: DAY - 400 * 24 * H,
        cert_id: expires.map(|_| format!("{p}-{s}")),
        issued_ms: expires.map(|_| DAY - 400 * 24 * H),
        expires_ms: expires,
    }
}

fn work(p: &str, from: i64, to: i64) -> RosterEntry {
    RosterEntry { person: p.into(), start_ms: from, end_ms: to, kind: RosterKind::Work, shift: Some("day".into()) }
}

fn absent(p: &str, from: i64, to: i64) -> RosterEntry {
    RosterEntry { person: p.into(), start_ms: from, end_ms: to, kind: RosterKind::Absent, shift: None }
}

fn contact(p: &str, site: Option<&str>) -> OnCall {
    OnCall {
        person: p.into(),
        channel: Channel::Email,
        address: format!("{p}@plant.example"),
        site: site.map(str::to_string),
        role: OnCallRole::Technician,
        start_ms: None,
        end_ms: None,
    }
}

fn on_call(p: &str, role: OnCallRole, from: i64, to: i64) -> OnCall {
    OnCall { role, start_ms: Some(from), end_ms: Some(to), channel: Channel::Webhook, ..contact(p, Some("a")) }
}

/// A plant: op1 and op2 operate (no PLC skill) on the day shift 06-18; tech-a (PLC 3, certificate valid,
/// site a), tech-b (PLC 4, no certificate needed... but holds none, site b) and tech-c (PLC 4, expired
/// certificate) are elsewhere on shift; nina (PLC 2) is on call; sam supervises; eve (PLC 4) is absent.
fn plant() -> Personnel {
    let mut p = Personnel::new(crate::people::Settings::default());
    for id in ["op1", "op2", "tech-a", "tech-b", "tech-c", "nina", "sam", "eve", "nick"] {
        p.people.push(person(id));
    }
    p.skills.push(Skill { id: "plc".into(), name: "PLC".into(), domain: "auto".into(), cert_required: false });
    p.skills.push(Skill { id: "hv".into(), name: "HV".into(), domain: "elec".into(), cert_required: true });
    p.person_skills.extend([
        skill("tech-a", "plc", 3, Some(DAY + 300 * 24 * H)),
        skill("tech-b", "plc", 4, None),
        skill("tech-c", "hv", 4, Some(DAY - 24 * H)),
        skill("tech-a", "hv", 3, Some(DAY + 300 * 24 * H)),
        skill("nina", "plc", 2, None),
        skill("eve", "plc", 4, None),
        skill("nick", "plc", 3, None),
    ]);
    let (six, six_pm) = (DAY + 6 * H, DAY + 18 * H);
    for id in ["op1", "op2", "tech-a", "tech-b", "tech-c", "eve"] {
        p.roster.push(work(id, six, six_pm));
    }
    p.roster.push(absent("eve", DAY, DAY + 24 * H));
    // nick works the night shift.
    p.roster.push(work("nick", six_pm, DAY + 30 * H));
    p.on_call.extend([
        contact("tech-a", Some("a")),
        contact("tech-b", Some("b")),
        contact("tech-c", None),
        contact("eve", None),
        contact("nick", Some("a")),
        on_call("nina", OnCallRole::Technician, DAY, DAY + 7 * 24 * H),
        on_call("sam", OnCallRole::Supervisor, DAY, DAY + 7 * 24 * H),
    ]);
    p.rebuilt()
}

fn req(s: &str, l: u8) -> Requirement {
    Requirement { skill: s.into(), min_level: l }
}

/// A stop on press-1 (site a) at 10:00 missing PLC at level 2.
fn stop() -> Stop {
    Stop {
        key: format!("a/press-1/{}", DAY + 10 * H),
        site: "a".into(),
        asset: "press-1".into(),
        start_ms: DAY + 10 * H,
        covered: Some(false),
        required: vec![req("plc", 2)],
        missing: vec!["plc".into()],
        on_shift: vec!["op1".into(), "op2".into()],
        cost_per_hour: 100.0,
    }
}

fn cfg() -> Settings {
    Settings::new("https://sl.example")
}

const ALL: [Channel; 3] = [Channel::Webhook, Channel::Email, Channel::Mqtt];

fn claimed(a: &Action, at: i64) -> Claimed {
    Claimed {
        stop_key: a.stop_key.clone(),
        site: a.site.clone(),
        rung: a.rung,
        person: a.to.as_ref().map_or(String::new(), |r| r.person.clone()),
        at_ms: at,
    }
}

fn who(plan: &Plan) -> Vec<(u32, Option<String>)> {
    plan.actions.iter().map(|a| (a.rung, a.to.as_ref().map(|r| r.person.clone()))).collect()
}

#[test]
fn an_uncovered_stop_first_asks_the_best_ranked_qualified_person_never_an_absent_or_expired_one() {
    let (p, s) = (plant(), stop());
    let c = candidates(&cfg(), &p, &s, &s.required, Reason::Uncovered, &ALL, s.start_ms);
    let ids: Vec<(&str, &str)> = c.iter().map(|c| (c.person.as_str(), c.availability.as_str())).collect();
    // tech-b has the highest level; tech-a holds a certificate and is on site a but level 3 < 4; nick (3,
    // site a, next shift) after tech-a (3, certificate, on shift); nina (2) last; eve is absent.
    assert_eq!(ids, [("tech-b", "on_shift"), ("tech-a", "on_shift"), ("nick", "next_shift"), ("nina", "on_call")]);
    let plan = plan(&cfg(), &p, std::slice::from_ref(&s), &History::default(), &ALL, s.start_ms + 500);
    assert_eq!(who(&plan), [(0, Some("tech-b".into()))]);
    let a = &plan.actions[0];
    assert_eq!((a.target, a.reason, a.skills.clone()), (Target::Qualified, Reason::Uncovered, vec!["plc".into()]));
    assert_eq!(a.to.as_ref().unwrap().address, "tech-b@plant.example");
    // The second rung is 10 minutes after the stop's start.
    assert_eq!(plan.next_due_ms, Some(s.start_ms + 10 * M));

    // An expired certificate never qualifies: HV needs one, tech-c's expired; tech-a's is valid.
    let hv = Stop { required: vec![req("hv", 2)], missing: vec!["hv".into()], ..stop() };
    let c = candidates(&cfg(), &p, &hv, &hv.required, Reason::Uncovered, &ALL, hv.start_ms);
    assert_eq!(c.iter().map(|c| c.person.as_str()).collect::<Vec<_>>(), ["tech-a"]);
}

#[test]
fn rungs_follow_their_delays_each_once_then_the_supervisor_and_stop_at_an_acknowledgement() {
    let (p, s) = (plant(), stop());
    let mut hist = History::default();
    let t0 = s.start_ms;
    let first = plan(&cfg(), &p, std::slice::from_ref(&s), &hist, &ALL, t0);
    hist.claimed.push(claimed(&first.actions[0], t0));
    // Nothing more before the second rung's delay, however often it is asked.
    for t in [t0, t0 + M, t0 + 10 * M - 1] {
        let again = plan(&cfg(), &p, std::slice::from_ref(&s), &hist, &ALL, t);
        assert!(again.actions.is_empty(), "at +{} ms", t - t0);
        assert_eq!(again.next_due_ms, Some(t0 + 10 * M));
    }
    let second = plan(&cfg(), &p, std::slice::from_ref(&s), &hist, &ALL, t0 + 10 * M);
    assert_eq!(who(&second), [(1, Some("tech-a".into()))]);
    hist.claimed.push(claimed(&second.actions[0], t0 + 10 * M));
    let third = plan(&cfg(), &p, std::slice::from_ref(&s), &hist, &ALL, t0 + 20 * M);
    assert_eq!(who(&third), [(2, Some("sam".into()))]);
    assert_eq!(third.actions[0].target, Target::Supervisor);
    hist.claimed.push(claimed(&third.actions[0], t0 + 20 * M));
    // The ladder is done.
    let after = plan(&cfg(), &p, std::slice::from_ref(&s), &hist, &ALL, t0 + 5 * H);
    assert_eq!(after, Plan::default());

    // Acknowledged after the first rung: nothing more.
    let mut acked = History { claimed: vec![claimed(&first.actions[0], t0)], ..History::default() };
    acked.acked.insert(s.key.clone());
    assert_eq!(plan(&cfg(), &p, std::slice::from_ref(&s), &acked, &ALL, t0 + 30 * M), Plan::default());
    // A closed stop is not among the open stops: nothing.
    assert_eq!(plan(&cfg(), &p, &[], &History::default(), &ALL, t0 + 30 * M), Plan::default());
}

#[test]
fn covered_stops_escalate_only_on_costly_assets_after_the_configured_duration() {
    let p = plant();
    let mut c = cfg();
    c.covered_after_ms = Some(30 * M);
    c.min_cost_per_hour = 500.0;
    let covered = Stop { covered: Some(true), missing: vec![], cost_per_hour: 800.0, ..stop() };
    let t0 = covered.start_ms;
    let early = plan(&c, &p, std::slice::from_ref(&covered), &History::default(), &ALL, t0 + 29 * M);
    assert!(early.actions.is_empty());
    assert_eq!(early.next_due_ms, Some(t0 + 30 * M));
    let due = plan(&c, &p, std::slice::from_ref(&covered), &History::default(), &ALL, t0 + 30 * M);
    assert_eq!(due.actions.len(), 1);
    assert_eq!((due.actions[0].reason, due.actions[0].skills.clone()), (Reason::Long, vec!["plc".into()]));
    let cheap = Stop { cost_per_hour: 100.0, ..covered.clone() };
    assert_eq!(plan(&c, &p, &[cheap], &History::default(), &ALL, t0 + 5 * H), Plan::default());
    // Without covered_after, or without a known roster, nothing.
    assert_eq!(plan(&cfg(), &p, &[covered], &History::default(), &ALL, t0 + 5 * H), Plan::default());
    let unknown = Stop { covered: None, ..stop() };
    assert_eq!(plan(&cfg(), &p, &[unknown], &History::default(), &ALL, t0 + 5 * H), Plan::default());
    // A site not listed is not escalated.
    let mut only_b = cfg();
    only_b.sites = vec!["b".into()];
    assert_eq!(plan(&only_b, &p, &[stop()], &History::default(), &ALL, t0), Plan::default());
}

#[test]
fn rate_limits_pass_over_a_busy_person_and_hold_a_busy_site() {
    let p = plant();
    let mut c = cfg();
    c.per_person = 1;
    c.rungs = vec![Rung { after_ms: 0, to: Target::Qualified }];
    let s1 = stop();
    let s2 = Stop { key: "a/press-2/x".into(), asset: "press-2".into(), start_ms: s1.start_ms + 1, ..stop() };
    let t = s1.start_ms + M;
    // One pass over two stops: tech-b gets the first, the second goes to the next person.
    let both = plan(&c, &p, &[s1.clone(), s2.clone()], &History::default(), &ALL, t);
    assert_eq!(who(&both), [(0, Some("tech-b".into())), (0, Some("tech-a".into()))]);
    // tech-b was messaged 59 minutes ago for another stop: passed over.
    let busy = History {
        claimed: vec![Claimed {
            stop_key: "a/x/1".into(),
            site: "a".into(),
            rung: 0,
            person: "tech-b".into(),
            at_ms: t - 59 * M,
        }],
        ..History::default()
    };
    assert_eq!(who(&plan(&c, &p, std::slice::from_ref(&s1), &busy, &ALL, t)), [(0, Some("tech-a".into()))]);
    // A site at its limit waits until the oldest message leaves the window.
    c.per_person = 10;
    c.per_site = 1;
    let site_busy = History {
        claimed: vec![Claimed {
            stop_key: "a/x/1".into(),
            site: "a".into(),
            rung: 0,
            person: "op1".into(),
            at_ms: t - 59 * M,
        }],
        ..History::default()
    };
    let held = plan(&c, &p, std::slice::from_ref(&s1), &site_busy, &ALL, t);
    assert!(held.actions.is_empty());
    assert_eq!(held.next_due_ms, Some(t - 59 * M + H + 1));
    assert_eq!(who(&plan(&c, &p, &[s1], &site_busy, &ALL, t + M + 1)), [(0, Some("tech-b".into()))]);
}

#[test]
fn a_rung_with_nobody_reachable_is_recorded_as_skipped_and_the_ladder_moves_on() {
    let p = plant();
    let s = Stop { required: vec![req("welding", 1)], missing: vec!["welding".into()], ..stop() };
    let first = plan(&cfg(), &p, std::slice::from_ref(&s), &History::default(), &ALL, s.start_ms);
    assert_eq!(who(&first), [(0, None)]);
    // Contacts on a channel that is not configured cannot be reached: with e-mail only, nina (webhook,
    // on call) is not a candidate.
    let c = candidates(&cfg(), &p, &stop(), &stop().required, Reason::Uncovered, &[Channel::Email], s.start_ms);
    assert!(c.iter().all(|c| c.person != "nina"), "{c:?}");
    // The supervisor's rung without a supervisor on call: skipped too.
    let mut late = History::default();
    for r in 0..2 {
        late.claimed.push(Claimed {
            stop_key: s.key.clone(),
            site: "a".into(),
            rung: r,
            person: String::new(),
            at_ms: 0,
        });
    }
    let sup = plan(&cfg(), &p, std::slice::from_ref(&s), &late, &[Channel::Email], s.start_ms + H);
    assert_eq!(who(&sup), [(2, None)]);
}

#[test]
fn the_on_call_csv_is_parsed_with_located_errors_that_never_repeat_an_address() {
    use crate::people::import::{parse, Kind};
    let known = plant();
    let ok = "person,channel,address,site,role,start,end\n\
              nina,webhook,pager-17,a,,2025-03-03T00:00:00Z,2025-03-10T00:00:00Z\n\
              sam,email,sam@plant.example,,supervisor,,\n";
    let r = parse(Kind::OnCall, "on-call.csv", ok, &known).unwrap();
    let rows: Vec<OnCall> = r.into_iter().map(|r| serde_json::from_value(r.body).unwrap()).collect();
    assert_eq!(rows[0].start_ms, Some(DAY));
    assert!(rows[0].on_call_at(DAY) && !rows[0].on_call_at(DAY + 7 * 24 * H) && rows[0].serves("a"));
    assert_eq!((rows[1].role, rows[1].channel, rows[1].start_ms), (OnCallRole::Supervisor, Channel::Email, None));
    let bad = "person,channel,address,site,role,start,end\n\
               ghost,pager,x,a,,,\n\
               nina,email,nina at plant,,boss,2025-03-03,\n\
               sam,mqtt,sam-1,Bad Site,,2025-03-04,2025-03-03\n";
    let e: Vec<String> =
        parse(Kind::OnCall, "on-call.csv", bad, &known).unwrap_err().iter().map(|e| e.to_string()).collect();
    for want in [
        "on-call.csv:2:person: unknown person \"ghost\"",
        "on-call.csv:2:channel: unknown channel \"pager\"",
        "on-call.csv:3:address: not an e-mail address (name@domain)",
        "on-call.csv:3:role: unknown role \"boss\"",
        "on-call.csv:3:end: an on-call window needs both start and end",
        "on-call.csv:4:site: ",
        "on-call.csv:4:end: end must be after start",
    ] {
        assert!(e.iter().any(|x| x.starts_with(want)), "missing {want:?} in {e:#?}");
    }
    assert!(e.iter().all(|x| !x.contains("nina at plant")), "{e:#?}");
}

#[test]
fn acknowledged_stops_split_mttr_into_response_and_repair() {
    use crate::report::{join, mttr, Input};
    use crate::timeline::Downtime;
    use shiftlens_common::{AssetId, GatewayId, SiteId};
    let mut p = plant();
    p.assets.push(Asset {
        id: "press-1".into(),
        site: "a".into(),
        line: "l1".into(),
        cost_per_hour: 100.0,
        requires: vec![req("plc", 2)],
    });
    let p = p.rebuilt();
    let d = |start: i64, end: i64| Downtime {
        site: SiteId::parse("a").unwrap(),
        gateway: GatewayId::parse("gw").unwrap(),
        asset: AssetId::parse("press-1").unwrap(),
        start_ms: start,
        end_ms: Some(end),
        reason: None,
        first_out: None,
        data_gap: false,
    };
    let stops = [d(DAY + 7 * H, DAY + 9 * H), d(DAY + 12 * H, DAY + 13 * H), d(DAY + 14 * H, DAY + 15 * H)];
    let mut events = join::join(&p, &stops);
    // Acknowledged after 30 and 10 minutes; the third never was.
    events[0].ack_ms = Some(DAY + 7 * H + 30 * M);
    events[1].ack_ms = Some(DAY + 12 * H + 10 * M);
    assert_eq!(events[0].response_repair_h(), Some((0.5, 1.5)));
    let inp = Input { people: &p, events: &events, from_ms: DAY, to_ms: DAY + 24 * H };
    let r = mttr::report(&inp, mttr::Dim::Asset);
    let col = |name: &str| r.columns.iter().position(|c| c == name).unwrap();
    let row = &r.rows[0];
    assert_eq!(row[col("acknowledged_n")], 2);
    // Response (0.5 + 1/6) / 2 = 0.33 h; repair (1.5 + 5/6) / 2 = 1.17 h.
    assert_eq!((row[col("response_mean_h")].as_f64(), row[col("repair_mean_h")].as_f64()), (Some(0.33), Some(1.17)));
    // The feed record carries the same split.
    let rec = crate::feed::Record::new(&stops[0], None).with_ack(&stops[0], events[0].ack_ms);
    assert_eq!((rec.response_s, rec.repair_s), (Some(1800.0), Some(5400.0)));
    let plain = serde_json::to_value(crate::feed::Record::new(&stops[2], None)).unwrap();
    assert!(plain["response_s"].is_null() && plain["acknowledged"].is_null(), "null when not acknowledged: {plain}");
}
