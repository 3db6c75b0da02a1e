//! `[escalation]`: parsed with serde (`deny_unknown_fields`), validated without I/O into [`Settings`]; every
//! problem located as `file:line:col`. Absent section = escalation off.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use std::path::PathBuf;
use std::time::Duration;

/// Who a rung asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The best-ranked qualified person not yet asked for this stop.
    Qualified,
    /// The site's on-call supervisor (`on-call.csv` rows with `role = supervisor`).
    Supervisor,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Qualified => "qualified",
            Target::Supervisor => "supervisor",
        }
    }
}

/// `[[escalation.rungs]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Time from the escalation's trigger (the stop's start, or its start + `covered_after`) to this rung.
    pub after: Spanned<HumanDuration>,
    pub to: Target,
}

/// `[escalation.rate_limit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Most messages to one person per `window`; past it the next qualified person is asked.
    #[serde(default = "default_per_person")]
    pub per_person: Spanned<u32>,
    /// Most messages for one site per `window`; past it rungs wait until the window has room.
    #[serde(default = "default_per_site")]
    pub per_site: Spanned<u32>,
    #[serde(default = "default_window")]
    pub window: Spanned<HumanDuration>,
}

fn default_per_person() -> Spanned<u32> {
    Spanned::new(0..0, 4)
}
fn default_per_site() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}
fn default_window() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(3600)))
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { per_person: default_per_person(), per_site: default_per_site(), window: default_window() }
    }
}

/// `[escalation.webhook]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://...`; `http://` only to a loopback address.
    pub url: Spanned<String>,
    /// A file whose content (trimmed) is the HMAC-SHA256 key; read at start.
    pub secret_file: Spanned<PathBuf>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587), required.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a loopback address (a local relay).
    None,
}

fn default_tls() -> Spanned<SmtpTls> {
    Spanned::new(0..0, SmtpTls::Starttls)
}

/// `[escalation.smtp]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: Spanned<String>,
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: Spanned<SmtpTls>,
    /// The sender mailbox.
    pub from: Spanned<String>,
    pub username: Option<String>,
    /// A file holding the password; read at start.
    pub password_file: Option<PathBuf>,
    /// A PEM file of extra CA certificates to trust (a plant CA); the system's roots are trusted as well.
    pub ca: Option<PathBuf>,
}

/// `[escalation.mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Publish on `shiftlens/v1/{site}/escalations` through the collector's broker connection.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `[escalation]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// The dashboard's address as recipients reach it (`https://shiftlens.plant.example`): the base of
    /// the acknowledge links.
    pub public_url: Spanned<String>,
    /// Sites escalated; empty = all.
    #[serde(default)]
    pub sites: Vec<Spanned<String>>,
    /// A covered stop on an asset costing at least `min_cost_per_hour` escalates once it has lasted this long.
    pub covered_after: Option<Spanned<HumanDuration>>,
    #[serde(default = "default_cost")]
    pub min_cost_per_hour: Spanned<f64>,
    /// People whose next shift starts within this are asked too (after those on shift and on call).
    #[serde(default = "default_next_shift_within")]
    pub next_shift_within: Spanned<HumanDuration>,
    /// How long an acknowledge link stays valid.
    #[serde(default = "default_ack_ttl")]
    pub ack_ttl: Spanned<HumanDuration>,
    /// Delivery attempts per message before it becomes a dead letter.
    #[serde(default = "default_attempts")]
    pub max_attempts: Spanned<u32>,
    /// First and longest pause between delivery attempts (doubling, with jitter).
    #[serde(default = "default_retry_min")]
    pub retry_min: Spanned<HumanDuration>,
    #[serde(default = "default_retry_max")]
    pub retry_max: Spanned<HumanDuration>,
    /// Replace person ids by pseudonyms and leave contact addresses out of webhook and MQTT bodies.
    #[serde(default)]
    pub pseudonymize: bool,
    /// The ladder; default: qualified at once, a second qualified after 10m, the supervisor after 20m.
    #[serde(default)]
    pub rungs: Vec<RungConfig>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    pub webhook: Option<WebhookConfig>,
    pub smtp: Option<SmtpConfig>,
    pub mqtt: Option<MqttConfig>,
}

fn default_cost() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}
fn default_next_shift_within() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(12 * 3600)))
}
fn default_ack_ttl() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(12 * 3600)))
}
fn default_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 6)
}
fn default_retry_min() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(1)))
}
fn default_retry_max() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(60)))
}

/// One rung, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub after_ms: i64,
    pub to: Target,
}

/// `[escalation]` with defaults applied and values checked: what the ladder and the runner use.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub public_url: String,
    pub sites: Vec<String>,
    pub covered_after_ms: Option<i64>,
    pub min_cost_per_hour: f64,
    pub next_shift_within_ms: i64,
    pub ack_ttl_ms: i64,
    pub max_attempts: u32,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub pseudonymize: bool,
    pub rungs: Vec<Rung>,
    pub per_person: u32,
    pub per_site: u32,
    pub window_ms: i64,
    pub webhook: Option<(String, PathBuf)>,
    pub smtp: Option<SmtpConfig>,
    pub mqtt: bool,
}

impl Settings {
    /// Settings for tests and defaults: the default ladder, every channel off.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            sites: Vec::new(),
            covered_after_ms: None,
            min_cost_per_hour: 0.0,
            next_shift_within_ms: ms(default_next_shift_within().get_ref().0),
            ack_ttl_ms: ms(default_ack_ttl().get_ref().0),
            max_attempts: *default_attempts().get_ref(),
            retry_min: default_retry_min().get_ref().0,
            retry_max: default_retry_max().get_ref().0,
            pseudonymize: false,
            rungs: default_rungs(),
            per_person: *default_per_person().get_ref(),
            per_site: *default_per_site().get_ref(),
            window_ms: ms(default_window().get_ref().0),
            webhook: None,
            smtp: None,
            mqtt: false,
        }
    }

    /// Whether `site` is escalated.
    pub fn site_enabled(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s == site)
    }
}

/// Qualified at once, a second qualified person after 10 min, the supervisor after 20 min.
pub fn default_rungs() -> Vec<Rung> {
    vec![
        Rung { after_ms: 0, to: Target::Qualified },
        Rung { after_ms: 600_000, to: Target::Qualified },
        Rung { after_ms: 1_200_000, to: Target::Supervisor },
    ]
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a URL's host is a loopback address (`127.x`, `[::1]`, `localhost`).
pub fn host_is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host[:port]/path` split into (https?, host, port, path-and-query); `None` unless http(s).
pub fn split_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (tls, rest) =
        if let Some(r) = url.strip_prefix("https://") { (true, r) } else { (false, url.strip_prefix("http://")?) };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match crate::http::guard::split_host(authority) {
        Some((h, p)) => (h, p.unwrap_or(if tls { 443 } else { 80 })),
        None => return None,
    };
    Some((tls, host, port, path.to_string()))
}

impl EscalationConfig {
    /// The checked settings, or `None` with every problem added to `errors`. `hosts` are the dashboard's
    /// names: the acknowledge links' host must be one of them, or the Host check would refuse every link.
    pub fn validated(
        &self,
        file: &ConfigFile,
        hosts: &crate::http::guard::Hosts,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Settings> {
        let s = self.settings(file).map_err(|e| errors.extend(e)).ok()?;
        let authority = split_url(&s.public_url).map(|(_, host, port, _)| format!("{host}:{port}"));
        if authority.as_deref().is_some_and(|a| !hosts.allows(a)) {
            errors.push(file.error_at(
                self.public_url.span(),
                format!(
                    "public_url {:?}: its host is not one of the dashboard's names, so every acknowledge link would be refused: add it to [http] public_names",
                    self.public_url.get_ref()
                ),
            ));
            return None;
        }
        Some(s)
    }

    /// The checked settings.
    ///
    /// # Errors
    /// Every bad value, located in `file`.
    pub fn settings(&self, file: &ConfigFile) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, msg: String| errors.push(file.error_at(span, msg));
        let mut s = Settings::new(self.public_url.get_ref());
        match split_url(self.public_url.get_ref()) {
            Some((_, _, _, path)) if !path.contains(['?', '#']) => {}
            _ => err(
                self.public_url.span(),
                format!(
                    "public_url {:?} is not an http(s) address such as \"https://shiftlens.plant.example\"",
                    self.public_url.get_ref()
                ),
            ),
        }
        for site in &self.sites {
            if let Err(e) = shiftlens_common::SiteId::parse(site.get_ref().clone()) {
                err(site.span(), e.to_string());
            }
            s.sites.push(site.get_ref().clone());
        }
        if let Some(c) = &self.covered_after {
            if c.get_ref().0 < Duration::from_secs(1) {
                err(c.span(), "covered_after must be at least 1s".into());
            }
            s.covered_after_ms = Some(ms(c.get_ref().0));
        }
        let cost = *self.min_cost_per_hour.get_ref();
        if !cost.is_finite() || cost < 0.0 {
            err(self.min_cost_per_hour.span(), format!("min_cost_per_hour {cost} must be a non-negative number"));
        }
        s.min_cost_per_hour = cost;
        let mut range = |d: &Spanned<HumanDuration>, name: &str, lo: Duration, hi: Duration| {
            let v = d.get_ref().0;
            if v < lo || v > hi {
                err(d.span(), format!("{name} must be between {} and {}", human(lo), human(hi)));
            }
            ms(v)
        };
        let hour = Duration::from_secs(3600);
        s.next_shift_within_ms = range(&self.next_shift_within, "next_shift_within", Duration::ZERO, 48 * hour);
        s.ack_ttl_ms = range(&self.ack_ttl, "ack_ttl", Duration::from_secs(60), 7 * 24 * hour);
        s.retry_min = Duration::from_millis(
            range(&self.retry_min, "retry_min", Duration::from_millis(10), hour).try_into().unwrap_or(1000),
        );
        s.retry_max = Duration::from_millis(
            range(&self.retry_max, "retry_max", Duration::from_millis(10), hour).try_into().unwrap_or(60_000),
        );
        s.window_ms = range(&self.rate_limit.window, "window", Duration::from_secs(60), 7 * 24 * hour);
        if s.retry_max < s.retry_min {
            err(self.retry_max.span(), "retry_max must not be shorter than retry_min".into());
        }
        let attempts = *self.max_attempts.get_ref();
        if !(1..=100).contains(&attempts) {
            err(self.max_attempts.span(), format!("max_attempts {attempts} is out of range (1-100)"));
        }
        s.max_attempts = attempts;
        for (v, name) in [(&self.rate_limit.per_person, "per_person"), (&self.rate_limit.per_site, "per_site")] {
            if *v.get_ref() == 0 {
                err(v.span(), format!("{name} must be at least 1"));
            }
        }
        s.per_person = *self.rate_limit.per_person.get_ref();
        s.per_site = *self.rate_limit.per_site.get_ref();
        s.pseudonymize = self.pseudonymize;
        if !self.rungs.is_empty() {
            s.rungs.clear();
            let mut last = 0;
            for r in &self.rungs {
                let after = ms(r.after.get_ref().0);
                if after < last {
                    err(r.after.span(), "rungs must be in order: each after at least the one before".into());
                }
                if after > ms(7 * 24 * hour) {
                    err(r.after.span(), "a rung's after must be at most 7d".into());
                }
                last = after;
                s.rungs.push(Rung { after_ms: after, to: r.to });
            }
            if self.rungs.len() > 10 {
                err(self.rungs[10].after.span(), "at most 10 rungs".into());
            }
        }
        if let Some(w) = &self.webhook {
            match split_url(w.url.get_ref()) {
                Some((false, host, _, _)) if !host_is_loopback(&host) => err(
                    w.url.span(),
                    format!("plaintext http to {host} is refused: use https:// (http only to a loopback address)"),
                ),
                Some(_) => {}
                None => err(w.url.span(), format!("webhook url {:?} is not an http(s) URL", w.url.get_ref())),
            }
            s.webhook = Some((w.url.get_ref().clone(), w.secret_file.get_ref().clone()));
        }
        if let Some(m) = &self.smtp {
            if *m.tls.get_ref() == SmtpTls::None && !host_is_loopback(m.host.get_ref()) {
                err(
                    m.tls.span(),
                    format!(
                        "SMTP without TLS to {} is refused: use starttls or tls (none only to a loopback address)",
                        m.host.get_ref()
                    ),
                );
            }
            if !m.from.get_ref().contains('@') {
                err(m.from.span(), format!("from {:?} is not an e-mail address", m.from.get_ref()));
            }
            s.smtp = Some(m.clone());
        }
        s.mqtt = self.mqtt.as_ref().is_some_and(|m| m.enabled);
        if s.webhook.is_none() && s.smtp.is_none() && !s.mqtt {
            err(
                self.public_url.span(),
                "[escalation] has no channel: configure [escalation.webhook], [escalation.smtp] or [escalation.mqtt]"
                    .into(),
            );
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.is_zero() => "0s".into(),
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use shiftlens_common::config::ConfigFile;

    fn load(text: &str) -> Result<crate::Config, String> {
        crate::Config::from_file(&ConfigFile::from_text("c.toml", text.to_string())).map_err(|e| e.to_string())
    }

    #[test]
    fn escalation_is_off_unless_configured_and_its_defaults_are_the_documented_ladder() {
        assert!(load("").unwrap().escalation.is_none());
        let c = load("[http]\npublic_names = [\"sl.example\"]\n[escalation]\npublic_url = \"https://sl.example\"\n[escalation.mqtt]\n")
            .unwrap();
        let s = c.escalation.unwrap();
        assert_eq!(s.rungs, super::default_rungs());
        assert!(s.mqtt && s.webhook.is_none());
        assert_eq!((s.per_person, s.per_site, s.window_ms), (4, 30, 3_600_000));
    }

    #[test]
    fn bad_escalation_values_are_each_reported_where_written() {
        let e = load(
            "[escalation]\npublic_url = \"ftp://x\"\nsites = [\"Bad Site\"]\nmax_attempts = 0\n\
             [[escalation.rungs]]\nafter = \"10m\"\nto = \"qualified\"\n[[escalation.rungs]]\nafter = \"1m\"\nto = \"supervisor\"\n\
             [escalation.webhook]\nurl = \"http://alerts.example/x\"\nsecret_file = \"/s\"\n\
             [escalation.smtp]\nhost = \"mail.example\"\ntls = \"none\"\nfrom = \"sl@example.org\"\n",
        )
        .unwrap_err();
        for want in [
            "c.toml:2:14: public_url \"ftp://x\" is not an http(s) address",
            "c.toml:3:10: ",
            "c.toml:4:16: max_attempts 0 is out of range (1-100)",
            "c.toml:9:9: rungs must be in order",
            "c.toml:12:7: plaintext http to alerts.example is refused",
            "c.toml:16:7: SMTP without TLS to mail.example is refused",
        ] {
            assert!(e.contains(want), "missing {want:?} in\n{e}");
        }
        let e = load("[escalation]\npublic_url = \"https://sl.example\"\n").unwrap_err();
        assert!(e.contains("c.toml:2:14: [escalation] has no channel"), "{e}");
        assert!(load("[escalation]\npublic_url = \"https://sl.example\"\nbogus = 1\n[escalation.mqtt]\n").is_err());
        // The links' host must be a name of the dashboard.
        let e = load("[escalation]\npublic_url = \"https://other.example/sl\"\n[escalation.mqtt]\n").unwrap_err();
        assert!(
            e.contains(
                "c.toml:2:14: public_url \"https://other.example/sl\": its host is not one of the dashboard's names"
            ),
            "{e}"
        );
    }
}
