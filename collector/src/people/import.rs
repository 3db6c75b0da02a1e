//! CSV imports: one file of one kind → typed, validated records, or every problem found, each named
//! `file:line:column: message` (line 1 is the header). Pure: the caller reads the file and stores the
//! records (all or nothing, see `store::people`). Formats are documented in `config/people.md`.
//!
//! Each record has a natural key within its kind; an import is the full current list of its kind, so a
//! re-import of the same file changes nothing and a changed row becomes a new version of its key.

use crate::people::model::*;
use crate::people::roster;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The kinds of personnel files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    People,
    Skills,
    PersonSkills,
    Roster,
    Rotation,
    Assets,
    AlarmClasses,
    Initiatives,
    WorkOrders,
    OnCall,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::People,
        Kind::Skills,
        Kind::PersonSkills,
        Kind::Roster,
        Kind::Rotation,
        Kind::Assets,
        Kind::AlarmClasses,
        Kind::Initiatives,
        Kind::WorkOrders,
        Kind::OnCall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::People => "people",
            Kind::Skills => "skills",
            Kind::PersonSkills => "person-skills",
            Kind::Roster => "roster",
            Kind::Rotation => "rotation",
            Kind::Assets => "assets",
            Kind::AlarmClasses => "alarm-classes",
            Kind::Initiatives => "initiatives",
            Kind::WorkOrders => "work-orders",
            Kind::OnCall => "on-call",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Required and optional columns.
    pub fn columns(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Kind::People => (&["id", "name", "crew", "discipline"], &["from"]),
            Kind::Skills => (&["id", "name", "domain", "certificate"], &[]),
            Kind::PersonSkills => (&["person", "skill", "level", "assessed"], &["certificate_id", "issued", "expires"]),
            Kind::Roster => (&["person", "start", "end", "kind"], &["shift"]),
            Kind::Rotation => (&["crew", "anchor", "cycle"], &[]),
            Kind::Assets => (&["id", "site", "line", "cost_per_hour", "requires"], &[]),
            Kind::AlarmClasses => (&["class", "requires"], &[]),
            Kind::Initiatives => (&["id", "name", "go_live", "needs"], &[]),
            Kind::WorkOrders => (&["ticket", "asset", "opened"], &["closed", "resolved_by"]),
            Kind::OnCall => (&["person", "channel", "address"], &["site", "role", "start", "end"]),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One located problem in a CSV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ImportError {
    pub file: String,
    pub line: u64,
    pub column: String,
    pub message: String,
}

/// A validated record: its natural key and its typed body as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub body: serde_json::Value,
}

/// Parses `text` (named `file` in errors) as a CSV of `kind`. `known` is the data already stored, used to
/// check references (skills, people, crews).
///
/// # Errors
/// Every problem found, in file order; nothing is returned half-validated.
pub fn parse(kind: Kind, file: &str, text: &str, known: &Personnel) -> Result<Vec<Record>, Vec<ImportError>> {
    let mut errors = Vec::new();
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(text.as_bytes());
    let err = |line: u64, column: &str, message: String| ImportError {
        file: file.to_string(),
        line,
        column: column.to_string(),
        message,
    };
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err(vec![err(1, "-", format!("unreadable header: {e}"))]),
    };
    let (required, optional) = kind.columns();
    for c in required {
        if !headers.iter().any(|h| h == c) {
            errors.push(err(1, c, format!("missing column {c:?} (required: {})", required.join(", "))));
        }
    }
    for h in &headers {
        if !required.contains(&h.as_str()) && !optional.contains(&h.as_str()) {
            errors.push(err(1, h, format!("unknown column {h:?}")));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let ctx = Ctx::new(known);
    let mut out = Vec::new();
    let mut keys: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(err(line, "-", format!("bad CSV row: {e}")));
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let mut row = Row { file, line, headers: &headers, rec: &rec, tz: known.settings.tz, errors: Vec::new() };
        let parsed = ctx.record(kind, &mut row);
        errors.append(&mut row.errors);
        if let Some(r) = parsed {
            if let Some(first) = keys.insert(r.key.clone(), line) {
                errors.push(err(line, kind.columns().0[0], format!("duplicate of line {first} (key {:?})", r.key)));
            }
            out.push(r);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The references a file may use.
struct Ctx<'a> {
    skills: HashSet<&'a str>,
    people: HashSet<&'a str>,
    crews: HashSet<&'a str>,
}

impl<'a> Ctx<'a> {
    fn new(known: &'a Personnel) -> Self {
        Self {
            skills: known.skills.iter().map(|s| s.id.as_str()).collect(),
            people: known.people.iter().map(|p| p.id.as_str()).collect(),
            crews: known.rotations.iter().map(|r| r.crew.as_str()).collect(),
        }
    }

    fn record(&self, kind: Kind, r: &mut Row) -> Option<Record> {
        match kind {
            Kind::People => {
                let crew = r.get("crew").to_string();
                if !crew.is_empty() && !self.crews.is_empty() && !self.crews.contains(crew.as_str()) {
                    let mut list: Vec<_> = self.crews.iter().copied().collect();
                    list.sort();
                    r.bad("crew", format!("unknown crew {crew:?} (rotation crews: {})", list.join(", ")));
                }
                let p = Person {
                    id: r.id("id")?,
                    name: r.required("name")?,
                    crew,
                    discipline: r.required("discipline")?,
                    from_ms: r.opt_time("from")?,
                };
                let key = format!("{}@{}", p.id, p.from_ms.map_or(String::new(), |t| t.to_string()));
                emit(key, &p)
            }
            Kind::Skills => {
                let certificate = r.bool("certificate")?;
                let sk = Skill {
                    id: r.id("id")?,
                    name: r.required("name")?,
                    domain: r.required("domain")?,
                    cert_required: certificate,
                };
                emit(sk.id.clone(), &sk)
            }
            Kind::PersonSkills => {
                let person = self.person(r, "person");
                let skill = self.skill(r, "skill");
                let level = r.level("level");
                let assessed_ms = r.time("assessed");
                let cert_id = Some(r.get("certificate_id").to_string()).filter(|c| !c.is_empty());
                let issued_ms = r.opt_time("issued")?;
                let expires_ms = r.opt_time("expires")?;
                if let (Some(i), Some(e)) = (issued_ms, expires_ms) {
                    if e <= i {
                        r.bad("expires", "expires must be after issued".into());
                    }
                }
                if cert_id.is_none() && (issued_ms.is_some() || expires_ms.is_some()) {
                    r.bad("certificate_id", "issued/expires given without a certificate_id".into());
                }
                let ps = PersonSkill {
                    person: person?,
                    skill: skill?,
                    level: level?,
                    assessed_ms: assessed_ms?,
                    cert_id,
                    issued_ms,
                    expires_ms,
                };
                emit(format!("{}/{}@{}", ps.person, ps.skill, ps.assessed_ms), &ps)
            }
            Kind::Roster => {
                let person = self.person(r, "person");
                let start_ms = r.time("start");
                let end_ms = r.time("end");
                let kind = match r.get("kind") {
                    "work" => Some(RosterKind::Work),
                    "absent" => Some(RosterKind::Absent),
                    other => r.fail("kind", format!("unknown kind {other:?}: expected work or absent")),
                };
                let (start_ms, end_ms) = (start_ms?, end_ms?);
                if end_ms <= start_ms {
                    r.bad("end", "end must be after start".into());
                }
                let shift = Some(r.get("shift").to_string()).filter(|c| !c.is_empty());
                let e = RosterEntry { person: person?, start_ms, end_ms, kind: kind?, shift };
                emit(format!("{}@{}:{}", e.person, e.start_ms, r.get("kind")), &e)
            }
            Kind::Rotation => {
                let crew = r.required("crew")?;
                let anchor = r.date("anchor");
                let cycle = r.get("cycle").to_string();
                if let Err(m) = roster::valid_cycle(&cycle) {
                    r.bad("cycle", m);
                }
                let rot = Rotation { crew, anchor: anchor?, cycle };
                emit(rot.crew.clone(), &rot)
            }
            Kind::Assets => {
                let id = r.asset_id("id");
                let site = r.required("site");
                let line = r.required("line");
                let cost = r.number("cost_per_hour");
                let requires = self.requirements(r, "requires", false).map(|v| v.into_iter().map(|(q, _)| q).collect());
                let a = Asset { id: id?, site: site?, line: line?, cost_per_hour: cost?, requires: requires? };
                emit(a.id.clone(), &a)
            }
            Kind::AlarmClasses => {
                let class = r.required("class");
                let requires = self.requirements(r, "requires", false).map(|v| v.into_iter().map(|(q, _)| q).collect());
                let c = AlarmClass { class: class?, requires: requires? };
                emit(c.class.clone(), &c)
            }
            Kind::Initiatives => {
                let id = r.id("id");
                let name = r.required("name");
                let go_live_ms = r.time("go_live");
                let needs = self.requirements(r, "needs", true).map(|v| {
                    v.into_iter().map(|(q, h)| Need { skill: q.skill, min_level: q.min_level, headcount: h }).collect()
                });
                let i = Initiative { id: id?, name: name?, go_live_ms: go_live_ms?, needs: needs? };
                emit(i.id.clone(), &i)
            }
            Kind::WorkOrders => {
                let ticket = r.required("ticket");
                let asset = r.asset_id("asset");
                let opened_ms = r.time("opened");
                let closed_ms = r.opt_time("closed")?;
                let resolved_by = Some(r.get("resolved_by").to_string()).filter(|c| !c.is_empty());
                if let Some(p) = &resolved_by {
                    if !self.people.contains(p.as_str()) {
                        r.bad("resolved_by", format!("unknown person {p:?}"));
                    }
                }
                let w = WorkOrder { ticket: ticket?, asset: asset?, opened_ms: opened_ms?, closed_ms, resolved_by };
                if w.closed_ms.is_some_and(|c| c < w.opened_ms) {
                    r.bad("closed", "closed is before opened".into());
                }
                emit(w.ticket.clone(), &w)
            }
            Kind::OnCall => {
                let person = self.person(r, "person");
                let channel = match r.get("channel") {
                    "webhook" => Some(Channel::Webhook),
                    "email" => Some(Channel::Email),
                    "mqtt" => Some(Channel::Mqtt),
                    other => r.fail("channel", format!("unknown channel {other:?}: expected webhook, email or mqtt")),
                };
                let address = r.required("address");
                if let (Some(Channel::Email), Some(a)) = (channel, &address) {
                    if !valid_mailbox(a) {
                        // The address itself is personal data: not repeated in the message.
                        r.bad("address", "not an e-mail address (name@domain)".into());
                    }
                }
                if address.as_ref().is_some_and(|a| a.len() > 256 || a.chars().any(char::is_control)) {
                    r.bad("address", "must be at most 256 characters without control characters".into());
                }
                let role = match r.get("role") {
                    "" | "technician" => Some(OnCallRole::Technician),
                    "supervisor" => Some(OnCallRole::Supervisor),
                    other => r.fail("role", format!("unknown role {other:?}: expected technician or supervisor")),
                };
                let site = Some(r.get("site").to_string()).filter(|s| !s.is_empty());
                if let Some(s) = &site {
                    if let Err(e) = shiftlens_common::SiteId::parse(s.clone()) {
                        r.bad("site", e.to_string());
                    }
                }
                let start_ms = r.opt_time("start")?;
                let end_ms = r.opt_time("end")?;
                match (start_ms, end_ms) {
                    (Some(s), Some(e)) if e <= s => r.bad("end", "end must be after start".into()),
                    (Some(_), None) => r.bad("end", "an on-call window needs both start and end".into()),
                    (None, Some(_)) => r.bad("start", "an on-call window needs both start and end".into()),
                    _ => {}
                }
                let c = OnCall {
                    person: person?,
                    channel: channel?,
                    address: address?,
                    site,
                    role: role?,
                    start_ms,
                    end_ms,
                };
                let key = format!(
                    "{}/{}/{}@{}",
                    c.person,
                    c.channel.as_str(),
                    c.site.as_deref().unwrap_or("*"),
                    start_ms.map_or(String::new(), |t| t.to_string())
                );
                emit(key, &c)
            }
        }
    }

    fn person(&self, r: &mut Row, col: &str) -> Option<String> {
        let p = r.required(col)?;
        if !self.people.contains(p.as_str()) {
            return r.fail(col, format!("unknown person {p:?}: import people first"));
        }
        Some(p)
    }

    fn skill(&self, r: &mut Row, col: &str) -> Option<String> {
        let s = r.required(col)?;
        if !self.skills.contains(s.as_str()) {
            return r.fail(col, format!("unknown skill {s:?}: import skills first"));
        }
        Some(s)
    }

    /// `skill:level;skill:level` (or `skill:level:headcount` with `headcount`); may be empty.
    fn requirements(&self, r: &mut Row, col: &str, headcount: bool) -> Option<Vec<(Requirement, u32)>> {
        let text = r.get(col).to_string();
        let mut out = Vec::new();
        let mut ok = true;
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = item.split(':').map(str::trim).collect();
            let want = if headcount { 3 } else { 2 };
            let form = if headcount { "skill:level:headcount" } else { "skill:level" };
            let level = parts.get(1).and_then(|l| l.parse::<u8>().ok()).filter(|l| *l <= 4);
            let count =
                if headcount { parts.get(2).and_then(|h| h.parse::<u32>().ok()).filter(|h| *h > 0) } else { Some(1) };
            match (parts.len() == want, level, count) {
                (true, Some(level), Some(count)) => {
                    if !self.skills.contains(parts[0]) {
                        r.bad(col, format!("unknown skill {:?}: import skills first", parts[0]));
                        ok = false;
                    }
                    out.push((Requirement { skill: parts[0].to_string(), min_level: level }, count));
                }
                _ => {
                    r.bad(col, format!("invalid item {item:?}: expected {form} with level 0-4, items separated by ;"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

fn emit<T: Serialize>(key: String, v: &T) -> Option<Record> {
    serde_json::to_value(v).ok().map(|body| Record { key, body })
}

/// One CSV row being validated; problems are collected, not returned early.
struct Row<'a> {
    file: &'a str,
    line: u64,
    headers: &'a [String],
    rec: &'a csv::StringRecord,
    tz: chrono_tz::Tz,
    errors: Vec<ImportError>,
}

impl Row<'_> {
    fn get(&self, col: &str) -> &str {
        self.headers.iter().position(|h| h == col).and_then(|i| self.rec.get(i)).unwrap_or("")
    }

    fn fail<T>(&mut self, col: &str, message: String) -> Option<T> {
        self.bad(col, message);
        None
    }

    fn bad(&mut self, col: &str, message: String) {
        self.errors.push(ImportError {
            file: self.file.to_string(),
            line: self.line,
            column: col.to_string(),
            message,
        });
    }

    fn required(&mut self, col: &str) -> Option<String> {
        match self.get(col) {
            "" => self.fail(col, "must not be empty".into()),
            v => Some(v.to_string()),
        }
    }

    fn id(&mut self, col: &str) -> Option<String> {
        let v = self.required(col)?;
        if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return self.fail(col, format!("invalid id {v:?}: use up to 64 of a-z A-Z 0-9 _ - ."));
        }
        Some(v)
    }

    fn asset_id(&mut self, col: &str) -> Option<String> {
        let v = self.required(col)?;
        match shiftlens_common::AssetId::parse(v.clone()) {
            Ok(_) => Some(v),
            Err(e) => self.fail(col, e.to_string()),
        }
    }

    fn bool(&mut self, col: &str) -> Option<bool> {
        match self.get(col).to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" | "y" => Some(true),
            "no" | "false" | "0" | "n" | "" => Some(false),
            v => self.fail(col, format!("invalid {v:?}: expected yes or no")),
        }
    }

    fn level(&mut self, col: &str) -> Option<u8> {
        let v = self.get(col).to_string();
        match v.parse::<u8>() {
            Ok(l) if l <= 4 => Some(l),
            _ => self.fail(col, format!("invalid level {v:?}: expected 0-4")),
        }
    }

    fn number(&mut self, col: &str) -> Option<f64> {
        let v = self.get(col).to_string();
        match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => self.fail(col, format!("invalid number {v:?}: expected a non-negative number")),
        }
    }

    fn date(&mut self, col: &str) -> Option<NaiveDate> {
        let v = self.get(col).to_string();
        match NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => self.fail(col, format!("invalid date {v:?}: expected YYYY-MM-DD")),
        }
    }

    fn time(&mut self, col: &str) -> Option<i64> {
        match self.opt_time(col)? {
            Some(t) => Some(t),
            None => self.fail(col, "must not be empty".into()),
        }
    }

    /// Empty → `Some(None)`; invalid → error and `None`.
    fn opt_time(&mut self, col: &str) -> Option<Option<i64>> {
        let v = self.get(col).to_string();
        if v.is_empty() {
            return Some(None);
        }
        match parse_time(self.tz, &v) {
            Some(t) => Some(Some(t)),
            None => self.fail(
                col,
                format!("invalid time {v:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM (site time) or RFC 3339"),
            ),
        }
    }
}

/// A plain check of `local@domain` (no spaces, one `@`, a dot in the domain); the SMTP server has the last word.
fn valid_mailbox(a: &str) -> bool {
    match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !a.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
                && !domain.contains('@')
        }
        None => false,
    }
}

/// A date (local midnight), a local date-time, or an RFC 3339 instant, as UTC ms.
pub fn parse_time(tz: chrono_tz::Tz, v: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(v) {
        return Some(d.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return Some(roster::resolve_local(tz, t));
        }
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().map(|d| roster::local_midnight(tz, d))
}

/// Puts the bodies of `records` of `kind` into `p` (replacing that kind). Bodies were produced by [`parse`].
///
/// # Errors
/// A body that does not deserialize (a store written by another version).
pub fn load_into(p: &mut Personnel, kind: Kind, bodies: Vec<serde_json::Value>) -> Result<(), serde_json::Error> {
    fn de<T: serde::de::DeserializeOwned>(b: Vec<serde_json::Value>) -> Result<Vec<T>, serde_json::Error> {
        b.into_iter().map(serde_json::from_value).collect()
    }
    match kind {
        Kind::People => p.people = de(bodies)?,
        Kind::Skills => p.skills = de(bodies)?,
        Kind::PersonSkills => p.person_skills = de(bodies)?,
        Kind::Roster => p.roster = de(bodies)?,
        Kind::Rotation => p.rotations = de(bodies)?,
        Kind::Assets => p.assets = de(bodies)?,
        Kind::AlarmClasses => p.alarm_classes = de(bodies)?,
        Kind::Initiatives => p.initiatives = de(bodies)?,
        Kind::WorkOrders => p.work_orders = de(bodies)?,
        Kind::OnCall => p.on_call = de(bodies)?,
    }
    Ok(())
}
