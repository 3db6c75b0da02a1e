//! The personnel data model as plain types, and the two questions everything else asks of it: who was on
//! shift at t, and was a person qualified for a skill at t.
//!
//! Invariants: instants are UTC milliseconds; intervals are half-open `[start, end)`. History is in the
//! data: a person's crew is the version with the latest `from` ≤ t, a skill level the assessment with the
//! latest `assessed` ≤ t, and a certificate counts while `issued` ≤ t < `expires`.

use crate::people::{roster, Settings};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One version of a person (`people.csv`). `from_ms` = when this version (crew) takes effect; `None` = always.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub crew: String,
    pub discipline: String,
    pub from_ms: Option<i64>,
}

/// A skill of the catalogue (`skills.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub cert_required: bool,
}

/// One assessment of a person in a skill (`person-skills.csv`), with its certificate if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonSkill {
    pub person: String,
    pub skill: String,
    /// 0 none, 1 awareness, 2 supervised, 3 independent, 4 expert.
    pub level: u8,
    pub assessed_ms: i64,
    pub cert_id: Option<String>,
    pub issued_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

/// A skill needed at a minimum level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub skill: String,
    pub min_level: u8,
}

/// An asset (`assets.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub site: String,
    pub line: String,
    pub cost_per_hour: f64,
    pub requires: Vec<Requirement>,
}

/// An alarm class that brings extra required skills (`alarm-classes.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmClass {
    pub class: String,
    pub requires: Vec<Requirement>,
}

/// A skill an initiative needs per shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Need {
    pub skill: String,
    pub min_level: u8,
    pub headcount: u32,
}

/// A planned technology initiative (`initiatives.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Initiative {
    pub id: String,
    pub name: String,
    pub go_live_ms: i64,
    pub needs: Vec<Need>,
}

/// A maintenance work order (`work-orders.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub ticket: String,
    pub asset: String,
    pub opened_ms: i64,
    pub closed_ms: Option<i64>,
    pub resolved_by: Option<String>,
}

/// Whether a roster row puts a person on shift or takes them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RosterKind {
    Work,
    Absent,
}

/// An explicit assignment or an absence (`roster.csv`). Absences override rotation shifts and assignments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub person: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: RosterKind,
    pub shift: Option<String>,
}

/// A crew on a repeating pattern (`rotation.csv`): day `i` after `anchor` works `cycle[i % len]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    pub crew: String,
    pub anchor: NaiveDate,
    pub cycle: String,
}

/// Everything imported, as plain data, with lookup indexes built by [`Personnel::new`].
#[derive(Debug, Clone, Default)]
pub struct Personnel {
    pub settings: Settings,
    pub people: Vec<Person>,
    pub skills: Vec<Skill>,
    pub person_skills: Vec<PersonSkill>,
    pub assets: Vec<Asset>,
    pub alarm_classes: Vec<AlarmClass>,
    pub initiatives: Vec<Initiative>,
    pub work_orders: Vec<WorkOrder>,
    pub roster: Vec<RosterEntry>,
    pub rotations: Vec<Rotation>,
    idx: Index,
}

/// FxHash (as in rustc): much faster than SipHash for the short id keys of these indexes, which come
/// from the operator's own CSVs, not from the network.
#[derive(Debug, Clone, Copy, Default)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A HashMap keyed by ids, hashed with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Debug, Clone, Default)]
struct Index {
    /// person → versions sorted by `from_ms` (None first).
    versions: FxMap<String, Vec<usize>>,
    /// person → skill → assessments sorted by `assessed_ms`.
    assessments: FxMap<String, FxMap<String, Vec<usize>>>,
    /// Crew membership from each instant where some person's crew changes: (from, crew → people).
    epochs: Vec<(i64, FxMap<String, Vec<String>>)>,
    skill: FxMap<String, usize>,
    asset: FxMap<String, usize>,
    class: FxMap<String, usize>,
    /// Work entries sorted by start, and the longest one.
    work: Vec<usize>,
    max_work_ms: i64,
    /// person → absences.
    absences: FxMap<String, Vec<usize>>,
    /// asset → work orders sorted by opened.
    orders: FxMap<String, Vec<usize>>,
    person_ids: Vec<String>,
    /// Rotation slots from the earliest anchor for [`SLOT_CACHE_DAYS`], sorted by start: (slot, rotation).
    slots: Vec<(roster::Slot, usize)>,
    slots_until: i64,
    /// Earliest rotation anchor (local midnight).
    first_anchor: Option<i64>,
}

/// How far past the latest rotation anchor slots are precomputed; later instants are computed on demand.
const SLOT_CACHE_DAYS: i64 = 3 * 366;
/// Longer than any shift (13 h on a DST night): how far back a covering slot can start.
const MAX_SHIFT_MS: i64 = 14 * 3_600_000;

/// A person on shift at an instant, with the crew and shift that put them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnShift<'a> {
    pub person: &'a str,
    pub crew: Option<&'a str>,
    pub shift: Option<&'a str>,
}

impl Personnel {
    /// An empty data set; fill the vectors, then call [`Personnel::rebuilt`].
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Rebuilds the lookup indexes from the vectors.
    pub fn rebuilt(mut self) -> Self {
        let mut idx = Index::default();
        for (i, p) in self.people.iter().enumerate() {
            idx.versions.entry(p.id.clone()).or_default().push(i);
        }
        for v in idx.versions.values_mut() {
            v.sort_by_key(|&i| self.people[i].from_ms.unwrap_or(i64::MIN));
        }
        let mut ids: Vec<String> = idx.versions.keys().cloned().collect();
        ids.sort();
        idx.person_ids = ids;
        for (i, ps) in self.person_skills.iter().enumerate() {
            idx.assessments.entry(ps.person.clone()).or_default().entry(ps.skill.clone()).or_default().push(i);
        }
        for v in idx.assessments.values_mut().flat_map(|m| m.values_mut()) {
            v.sort_by_key(|&i| self.person_skills[i].assessed_ms);
        }
        idx.skill = self.skills.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        idx.asset = self.assets.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        idx.class = self.alarm_classes.iter().enumerate().map(|(i, c)| (c.class.clone(), i)).collect();
        for (i, r) in self.roster.iter().enumerate() {
            match r.kind {
                RosterKind::Work => {
                    idx.work.push(i);
                    idx.max_work_ms = idx.max_work_ms.max(r.end_ms - r.start_ms);
                }
                RosterKind::Absent => idx.absences.entry(r.person.clone()).or_default().push(i),
            }
        }
        idx.work.sort_by_key(|&i| self.roster[i].start_ms);
        for (i, w) in self.work_orders.iter().enumerate() {
            idx.orders.entry(w.asset.clone()).or_default().push(i);
        }
        for v in idx.orders.values_mut() {
            v.sort_by_key(|&i| self.work_orders[i].opened_ms);
        }
        let mut starts: Vec<i64> = self.people.iter().filter_map(|p| p.from_ms).collect();
        starts.push(i64::MIN);
        starts.sort_unstable();
        starts.dedup();
        self.idx = idx;
        let epochs = starts
            .into_iter()
            .map(|t| {
                let mut m: FxMap<String, Vec<String>> = FxMap::default();
                for id in &self.idx.person_ids {
                    if let Some(p) = self.person_at(id, t) {
                        m.entry(p.crew.clone()).or_default().push(id.clone());
                    }
                }
                (t, m)
            })
            .collect();
        self.idx.epochs = epochs;
        let tz = self.settings.tz;
        self.idx.first_anchor = self.rotations.iter().map(|r| roster::local_midnight(tz, r.anchor)).min();
        if let (Some(from), Some(last)) = (self.idx.first_anchor, self.rotations.iter().map(|r| r.anchor).max()) {
            let until = roster::local_midnight(tz, last + chrono::Duration::days(SLOT_CACHE_DAYS));
            let mut slots: Vec<(roster::Slot, usize)> = self
                .rotations
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    roster::slots_between(&self.settings, r, from, until).into_iter().map(move |s| (s, i))
                })
                .collect();
            slots.sort_by_key(|(s, _)| s.start_ms);
            self.idx.slots = slots;
            self.idx.slots_until = until - MAX_SHIFT_MS;
        }
        self
    }

    /// The rotation slots covering t, with their rotation.
    pub fn slots_at(&self, t: i64) -> Vec<(roster::Slot, &Rotation)> {
        let first = self.idx.first_anchor.unwrap_or(i64::MAX);
        if t >= first && t < self.idx.slots_until {
            let v = &self.idx.slots;
            let hi = v.partition_point(|(s, _)| s.start_ms <= t);
            let lo = v.partition_point(|(s, _)| s.start_ms <= t - MAX_SHIFT_MS);
            return v[lo..hi]
                .iter()
                .filter(|(s, _)| t < s.end_ms)
                .map(|(s, i)| (s.clone(), &self.rotations[*i]))
                .collect();
        }
        self.rotations.iter().filter_map(|r| roster::shift_at(&self.settings, r, t).map(|s| (s, r))).collect()
    }

    /// Every person id, sorted.
    pub fn person_ids(&self) -> &[String] {
        &self.idx.person_ids
    }

    /// The version of a person valid at t (the first version when t precedes them all).
    pub fn person_at(&self, id: &str, t: i64) -> Option<&Person> {
        let v = self.idx.versions.get(id)?;
        let pos = v.partition_point(|&i| self.people[i].from_ms.unwrap_or(i64::MIN) <= t);
        v.get(pos.saturating_sub(1)).map(|&i| &self.people[i])
    }

    /// People whose crew at t is `crew`.
    pub fn crew_members(&self, crew: &str, t: i64) -> &[String] {
        let e = &self.idx.epochs;
        let pos = e.partition_point(|(from, _)| *from <= t);
        pos.checked_sub(1).and_then(|p| e[p].1.get(crew)).map_or(&[], |v| v.as_slice())
    }

    /// All crews named by people or rotations, sorted.
    pub fn crews(&self) -> Vec<String> {
        let mut c: Vec<String> =
            self.people.iter().map(|p| p.crew.clone()).chain(self.rotations.iter().map(|r| r.crew.clone())).collect();
        c.sort();
        c.dedup();
        c
    }

    pub fn skill(&self, id: &str) -> Option<&Skill> {
        self.idx.skill.get(id).map(|&i| &self.skills[i])
    }

    pub fn asset(&self, id: &str) -> Option<&Asset> {
        self.idx.asset.get(id).map(|&i| &self.assets[i])
    }

    /// The line of `asset` at `site`: the rule [`crate::feed::LineMap::line`] follows for the live feed.
    pub fn line_of(&self, site: &str, asset: &str) -> Option<&str> {
        self.asset(asset).filter(|a| a.site == site).map(|a| a.line.as_str())
    }

    pub fn alarm_class(&self, class: &str) -> Option<&AlarmClass> {
        self.idx.class.get(class).map(|&i| &self.alarm_classes[i])
    }

    /// The assessment of (person, skill) valid at t.
    pub fn assessment_at(&self, person: &str, skill: &str, t: i64) -> Option<&PersonSkill> {
        let v = self.idx.assessments.get(person)?.get(skill)?;
        let pos = v.partition_point(|&i| self.person_skills[i].assessed_ms <= t);
        pos.checked_sub(1).and_then(|p| v.get(p)).map(|&i| &self.person_skills[i])
    }

    /// Level of (person, skill) at t, 0 when never assessed.
    pub fn level_at(&self, person: &str, skill: &str, t: i64) -> u8 {
        self.assessment_at(person, skill, t).map_or(0, |a| a.level)
    }

    /// Qualified for `req` at t: level ≥ minimum and, where the skill needs a certificate, one valid at t.
    pub fn qualified(&self, person: &str, req: &Requirement, t: i64) -> bool {
        let Some(a) = self.assessment_at(person, &req.skill, t) else { return false };
        if a.level < req.min_level {
            return false;
        }
        let cert_required = self.skill(&req.skill).is_some_and(|s| s.cert_required);
        !cert_required || cert_valid_at(a, t)
    }

    /// Whether the person has an absence covering t.
    pub fn absent(&self, person: &str, t: i64) -> bool {
        self.idx
            .absences
            .get(person)
            .is_some_and(|v| v.iter().any(|&i| self.roster[i].start_ms <= t && t < self.roster[i].end_ms))
    }

    /// Whether any roster source says anything about t: a rotation anchored at or before it, or an
    /// explicit work assignment covering it.
    pub fn roster_known(&self, t: i64) -> bool {
        self.idx.first_anchor.is_some_and(|a| a <= t) || !self.work_at(t).is_empty()
    }

    fn work_at(&self, t: i64) -> Vec<&RosterEntry> {
        let w = &self.idx.work;
        let hi = w.partition_point(|&i| self.roster[i].start_ms <= t);
        let lo = w.partition_point(|&i| self.roster[i].start_ms < t - self.idx.max_work_ms);
        w[lo..hi].iter().map(|&i| &self.roster[i]).filter(|r| t < r.end_ms).collect()
    }

    /// Who was on shift at t: members of crews whose rotation shift covers t, plus explicit assignments,
    /// minus absences. Each person once, sorted by id.
    pub fn on_shift(&self, t: i64) -> Vec<OnShift<'_>> {
        let mut out: Vec<OnShift> = Vec::new();
        for (s, r) in self.slots_at(t) {
            for p in self.crew_members(&r.crew, t) {
                out.push(OnShift { person: p, crew: Some(&r.crew), shift: Some(s.name) });
            }
        }
        for w in self.work_at(t) {
            let crew = self.person_at(&w.person, t).map(|p| p.crew.as_str());
            out.push(OnShift { person: &w.person, crew, shift: w.shift.as_deref() });
        }
        out.retain(|o| !self.absent(o.person, t));
        out.sort_by(|a, b| a.person.cmp(b.person));
        out.dedup_by(|a, b| a.person == b.person);
        out
    }

    /// The work order on `asset` opened nearest after `start - window` and before `end`.
    pub fn work_order_for(&self, asset: &str, start: i64, end: Option<i64>) -> Option<&WorkOrder> {
        let v = self.idx.orders.get(asset)?;
        let from = start - self.settings.work_order_window_ms;
        let lo = v.partition_point(|&i| self.work_orders[i].opened_ms < from);
        v[lo..]
            .iter()
            .map(|&i| &self.work_orders[i])
            .take_while(|w| end.is_none_or(|e| w.opened_ms < e))
            .min_by_key(|w| (w.opened_ms - start).abs())
    }
}

/// A certificate valid at t: `issued` ≤ t (or unset) and t < `expires` (or unset), and a certificate id.
pub fn cert_valid_at(a: &PersonSkill, t: i64) -> bool {
    a.cert_id.is_some() && a.issued_ms.is_none_or(|i| i <= t) && a.expires_ms.is_none_or(|e| t < e)
}
