//! The ladder, pure: open stops + personnel (roster, competencies, on-call rota) + what was already sent →
//! the messages due now. No I/O and no clock: the runner passes `now_ms` and does the sending.
//!
//! Rules (docs/escalation.md):
//! - A stop escalates when it opened **uncovered** (the join found a required skill with nobody qualified
//!   on shift at its start), from its start; or, when `covered_after` is set, when it lasted that long on an
//!   asset costing at least `min_cost_per_hour`, from then. A stop with no roster known is neither.
//! - Rung `i` is due `rungs[i].after` after that trigger, and only once rung `i - 1` has been claimed, the
//!   stop is still open and nobody has acknowledged. One message per stop per rung.
//! - A `qualified` rung asks the best-ranked person qualified **now** for the skills the stop lacks (for a
//!   long covered stop: its required skills), not yet asked for this stop, and reachable: on shift now,
//!   on call now, or on shift within `next_shift_within` (qualified and present then). Never a person
//!   absent at that time or whose level or certificate does not qualify (an expired certificate does not).
//!   Ranked by: skills covered, then level summed over them, then valid certificates held for them, then
//!   same site, then on shift before on call before next shift, then person id.
//! - A `supervisor` rung asks the on-call supervisor of the stop's site.
//! - Rate limits: a person at `per_person` messages within `window` is passed over; a site at `per_site`
//!   holds its rungs until the window has room.
//! - A rung with nobody to ask is recorded as skipped, so the ladder moves on and the board says so.

use super::config::{Settings, Target};
use crate::people::{cert_valid_at, Channel, OnCall, OnCallRole, Personnel, Requirement};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a stop is escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It opened with a required skill nobody on shift was qualified for.
    Uncovered,
    /// Covered, but it has lasted `covered_after` on a costly asset.
    Long,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Uncovered => "uncovered",
            Reason::Long => "long_stop",
        }
    }
}

/// An open stop as the ladder needs it (from the downtime row and its join).
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// `site/asset/start_ms` (as the join's key).
    pub key: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    /// The join's verdict at the start: `None` when no roster is known.
    pub covered: Option<bool>,
    /// Required skills with their minimum levels.
    pub required: Vec<Requirement>,
    /// Skill ids nobody on shift was qualified for at the start.
    pub missing: Vec<String>,
    /// Who was on shift at the start.
    pub on_shift: Vec<String>,
    pub cost_per_hour: f64,
}

/// A message already claimed (sent, in delivery, dead, or a skipped rung: `person` empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub stop_key: String,
    pub site: String,
    pub rung: u32,
    pub person: String,
    pub at_ms: i64,
}

/// What the store knows of past escalations: claimed rungs (at least those within the rate window and all
/// of the open stops) and the stops already acknowledged.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub claimed: Vec<Claimed>,
    pub acked: HashSet<String>,
}

/// How a candidate can be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Availability {
    OnShift,
    OnCall,
    /// On shift from this instant.
    NextShift(i64),
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::OnShift => "on_shift",
            Availability::OnCall => "on_call",
            Availability::NextShift(_) => "next_shift",
        }
    }
}

/// A person the ladder may ask, ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub person: String,
    pub availability: Availability,
    /// The skills (of those sought) this person is qualified for.
    pub skills: Vec<String>,
    pub contact: OnCall,
    pub same_site: bool,
    rank: (usize, u32, usize),
}

/// One message to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub stop_key: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    pub rung: u32,
    pub target: Target,
    pub reason: Reason,
    /// The skills sought.
    pub skills: Vec<String>,
    /// `None`: nobody to ask on this rung (recorded as skipped).
    pub to: Option<Recipient>,
    pub due_ms: i64,
}

/// Who a message goes to and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub person: String,
    pub channel: Channel,
    /// Personal data: never logged.
    pub address: String,
    pub availability: &'static str,
}

/// The outcome of one planning pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest instant something later becomes due (a rung's delay, a rate window's room).
    pub next_due_ms: Option<i64>,
}

/// When the escalation of `s` starts, and why; `None` when it never escalates.
pub fn trigger(cfg: &Settings, s: &Stop) -> Option<(i64, Reason)> {
    if !cfg.site_enabled(&s.site) {
        return None;
    }
    match s.covered {
        Some(false) => Some((s.start_ms, Reason::Uncovered)),
        Some(true) => {
            let after = cfg.covered_after_ms?;
            (s.cost_per_hour >= cfg.min_cost_per_hour).then_some((s.start_ms.saturating_add(after), Reason::Long))
        }
        None => None,
    }
}

/// Plans the messages due at `now_ms` for `stops` (open stops only: a closed stop gets nothing).
/// `channels` are the configured channels: a contact on another one cannot be reached.
pub fn plan(cfg: &Settings, p: &Personnel, stops: &[Stop], hist: &History, channels: &[Channel], now_ms: i64) -> Plan {
    let mut out = Plan::default();
    let window_from = now_ms.saturating_sub(cfg.window_ms);
    let mut per_person: HashMap<String, u32> = HashMap::new();
    let mut per_site: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut asked: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut next_rung: HashMap<&str, u32> = HashMap::new();
    for c in &hist.claimed {
        let n = next_rung.entry(c.stop_key.as_str()).or_insert(0);
        *n = (*n).max(c.rung + 1);
        if !c.person.is_empty() {
            asked.entry(c.stop_key.as_str()).or_default().insert(c.person.as_str());
            if c.at_ms > window_from {
                *per_person.entry(c.person.clone()).or_insert(0) += 1;
                per_site.entry(c.site.as_str()).or_default().push(c.at_ms);
            }
        }
    }
    let due_at = |t: i64, out: &mut Plan| out.next_due_ms = Some(out.next_due_ms.map_or(t, |d| d.min(t)));
    let mut ordered: Vec<&Stop> = stops.iter().collect();
    ordered.sort_by(|a, b| (a.start_ms, &a.key).cmp(&(b.start_ms, &b.key)));
    for s in ordered {
        if hist.acked.contains(&s.key) {
            continue;
        }
        let Some((trigger_ms, reason)) = trigger(cfg, s) else { continue };
        let rung = next_rung.get(s.key.as_str()).copied().unwrap_or(0);
        let Some(spec) = cfg.rungs.get(rung as usize) else { continue };
        let due = trigger_ms.saturating_add(spec.after_ms);
        if due > now_ms {
            due_at(due, &mut out);
            continue;
        }
        let skills: Vec<Requirement> = match reason {
            Reason::Uncovered => s.required.iter().filter(|r| s.missing.contains(&r.skill)).cloned().collect(),
            Reason::Long => s.required.clone(),
        };
        let sent = per_site.entry(s.site.as_str()).or_default();
        if sent.len() >= cfg.per_site as usize {
            sent.sort_unstable();
            // Room again once the oldest message in the window leaves it.
            let room = sent[sent.len() - cfg.per_site as usize] + cfg.window_ms + 1;
            due_at(room, &mut out);
            continue;
        }
        let to = match spec.to {
            Target::Qualified => {
                let exclude = asked.get(s.key.as_str());
                candidates(cfg, p, s, &skills, reason, channels, now_ms).into_iter().find(|c| {
                    exclude.is_none_or(|e| !e.contains(c.person.as_str()))
                        && per_person.get(c.person.as_str()).is_none_or(|n| *n < cfg.per_person)
                })
            }
            Target::Supervisor => supervisor(p, &s.site, channels, now_ms)
                .filter(|c| per_person.get(c.person.as_str()).is_none_or(|n| *n < cfg.per_person)),
        };
        let to = to.map(|c| Recipient {
            person: c.person,
            channel: c.contact.channel,
            address: c.contact.address,
            availability: c.availability.as_str(),
        });
        if let Some(r) = &to {
            // Counted at once, so one pass does not ask a person beyond the limit either.
            sent.push(now_ms);
            *per_person.entry(r.person.clone()).or_insert(0) += 1;
        }
        out.actions.push(Action {
            stop_key: s.key.clone(),
            site: s.site.clone(),
            asset: s.asset.clone(),
            start_ms: s.start_ms,
            rung,
            target: spec.to,
            reason,
            skills: skills.into_iter().map(|r| r.skill).collect(),
            to,
            due_ms: due,
        });
        // The next rung's time, so the runner wakes for it.
        if let Some(n) = cfg.rungs.get(rung as usize + 1) {
            due_at(trigger_ms.saturating_add(n.after_ms).max(now_ms), &mut out);
        }
    }
    out
}

/// People qualified now (or on their next shift) for at least one of `skills`, reachable on a configured
/// channel, best first. Absent people and those whose qualification lapsed are never candidates.
pub fn candidates(
    cfg: &Settings,
    p: &Personnel,
    s: &Stop,
    skills: &[Requirement],
    reason: Reason,
    channels: &[Channel],
    now_ms: i64,
) -> Vec<Candidate> {
    let on_now: HashSet<&str> = p.on_shift(now_ms).into_iter().map(|o| o.person).collect();
    let next = next_shifts(p, now_ms, cfg.next_shift_within_ms);
    let mut out = Vec::new();
    for id in p.person_ids() {
        // For a long covered stop the people already there are not asked again.
        if reason == Reason::Long && s.on_shift.iter().any(|o| o == id) {
            continue;
        }
        let contacts: Vec<&OnCall> = p
            .on_call
            .iter()
            .filter(|c| c.person == *id && c.role == OnCallRole::Technician && channels.contains(&c.channel))
            .collect();
        let on_call = contacts.iter().find(|c| c.on_call_at(now_ms) && c.serves(&s.site)).copied();
        let (availability, at) = if on_now.contains(id.as_str()) {
            (Availability::OnShift, now_ms)
        } else if on_call.is_some() {
            (Availability::OnCall, now_ms)
        } else if let Some(&t) = next.get(id.as_str()) {
            (Availability::NextShift(t), t)
        } else {
            continue;
        };
        if p.absent(id, at) || p.absent(id, now_ms) {
            continue;
        }
        let qualified: Vec<&Requirement> = skills.iter().filter(|r| p.qualified(id, r, at)).collect();
        if qualified.is_empty() {
            continue;
        }
        // The on-call row when on call; otherwise a standing contact, the one of this site first (a standing
        // contact's site is the person's home site, not a restriction).
        let contact = on_call.or_else(|| {
            let mut standing: Vec<&OnCall> = contacts.iter().filter(|c| c.start_ms.is_none()).copied().collect();
            standing.sort_by_key(|c| c.site.as_deref() != Some(s.site.as_str()));
            standing.first().copied()
        });
        let Some(contact) = contact else { continue };
        let levels: u32 = qualified.iter().map(|r| u32::from(p.level_at(id, &r.skill, at))).sum();
        let certs = qualified
            .iter()
            .filter(|r| p.assessment_at(id, &r.skill, at).is_some_and(|a| cert_valid_at(a, at)))
            .count();
        out.push(Candidate {
            person: id.clone(),
            availability,
            skills: qualified.iter().map(|r| r.skill.clone()).collect(),
            contact: contact.clone(),
            same_site: contact.site.as_deref() == Some(s.site.as_str()),
            rank: (qualified.len(), levels, certs),
        });
    }
    out.sort_by(|a, b| {
        (b.rank.0, b.rank.1, b.rank.2, !b.same_site)
            .cmp(&(a.rank.0, a.rank.1, a.rank.2, !a.same_site))
            .then_with(|| (a.availability, &a.person).cmp(&(b.availability, &b.person)))
    });
    out
}

/// The on-call supervisor for `site` at t (a site-specific row before an any-site row, then by person id).
pub fn supervisor(p: &Personnel, site: &str, channels: &[Channel], t: i64) -> Option<Candidate> {
    let mut rows: Vec<&OnCall> = p
        .on_call
        .iter()
        .filter(|c| c.role == OnCallRole::Supervisor && c.on_call_at(t) && c.serves(site))
        .filter(|c| channels.contains(&c.channel) && !p.absent(&c.person, t))
        .collect();
    rows.sort_by(|a, b| (a.site.is_none(), &a.person).cmp(&(b.site.is_none(), &b.person)));
    rows.first().map(|c| Candidate {
        person: c.person.clone(),
        availability: Availability::OnCall,
        skills: Vec::new(),
        contact: (*c).clone(),
        same_site: c.site.as_deref() == Some(site),
        rank: (0, 0, 0),
    })
}

/// Step of the search for the next shift: shifts start on the quarter hour or coarser.
const NEXT_STEP_MS: i64 = 15 * 60_000;

/// For each person not on shift at `now`, the first instant within `within` at which they are.
fn next_shifts(p: &Personnel, now: i64, within: i64) -> BTreeMap<&str, i64> {
    let mut out = BTreeMap::new();
    if within <= 0 {
        return out;
    }
    let on_now: HashSet<&str> = p.on_shift(now).into_iter().map(|o| o.person).collect();
    // From the next quarter hour boundary on; work rows may start anywhere, so their starts are added.
    let first = (now / NEXT_STEP_MS + 1) * NEXT_STEP_MS;
    let mut instants: Vec<i64> = (0..).map(|i| first + i * NEXT_STEP_MS).take_while(|t| *t <= now + within).collect();
    instants.extend(p.roster.iter().map(|r| r.start_ms).filter(|t| *t > now && *t <= now + within));
    instants.sort_unstable();
    instants.dedup();
    for t in instants {
        for o in p.on_shift(t) {
            if !on_now.contains(o.person) {
                out.entry(o.person).or_insert(t);
            }
        }
    }
    out
}
