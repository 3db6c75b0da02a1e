//! The escalation task: wakes when a downtime change is committed (ingest's watch) or when the plan's next
//! rung is due (at the latest every [`RECHECK`]), plans with [`ladder::plan`] from what the store holds, claims
//! each due rung in the store, and only then delivers it on its channel, retrying with backoff; a message
//! whose every attempt failed is kept as a dead letter (`state = 'dead'`, with the last error).
//!
//! Restart safety: the plan is rebuilt from the store (open downtime rows, claimed rungs, acknowledgements)
//! at every pass, so a pending rung survives a restart; claims are committed before sending, and each pass
//! delivers the rows still `pending` that no delivery of this process has in hand (after a restart: those
//! claimed before it), with a new acknowledge token (only the old one's hash was kept). See
//! `store::escalations` for why this gives one message per rung.
//!
//! Several collectors on one PostgreSQL store: each runs the ladders of the sites its store writer owns
//! (`store::pg::owner`) and no others. Claims and the check before each delivery hold only while the
//! writer's session still holds the site's lock, so when the owner dies, the site's next owner takes its
//! pending rows and goes on up the ladder from the claims stored, without repeating a rung.

use super::channels::{self, smtp::Smtp, webhook::Webhook, Message, To};
use super::config::Settings;
use super::ladder::{self, Action, Stop};
use crate::ingest::Uplink as Publisher;
use crate::people::{Channel, Personnel};
use crate::report::join;
use crate::store::escalations::{Db, Wanted};
use crate::store::pg::owner::OwnedSites;
use crate::store::reads::ReadError;
use crate::store::{StoreConfig, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest sleep between planning passes (picks up people imports and rate windows).
pub const RECHECK: Duration = Duration::from_secs(5);

/// Why escalation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("escalation webhook: {0}")]
    Webhook(#[from] channels::webhook::WebhookError),
    #[error("escalation SMTP: {0}")]
    Smtp(String),
    #[error("escalation: [escalation.mqtt] needs the collector's broker connection")]
    NoBroker,
    #[error("escalation store: {0}")]
    Db(#[from] ReadError),
    #[error("escalation: opening the store failed: {0}")]
    Task(String),
}

struct Inner {
    cfg: Settings,
    conn: Mutex<Db>,
    /// PostgreSQL: the sites this collector owns (`None`: every site, SQLite).
    owned: Option<OwnedSites>,
    /// Rows whose delivery a task of this process has in hand (a pass does not resume them).
    inflight: Mutex<HashSet<i64>>,
    /// Several collectors share the store (PostgreSQL).
    shared: bool,
    people: Mutex<(i64, Arc<Personnel>)>,
    people_settings: crate::people::Settings,
    webhook: Option<Webhook>,
    smtp: Option<Smtp>,
    mqtt: Option<Publisher>,
    channels: Vec<Channel>,
}

/// One message to deliver.
struct Job {
    id: i64,
    message: Message,
    channel: Channel,
    address: String,
    stop: (String, String, String, i64),
    attempts: u32,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new acknowledge token (64 hex digits) and its SHA-256.
pub fn new_token() -> (String, [u8; 32]) {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Starts escalation: opens its store connection, sets up the channels and spawns the planning loop, which
/// also delivers pending rows. `wake` changes when downtime changes are committed; `owned` (PostgreSQL) are
/// the sites this collector owns, as its store writer publishes them.
///
/// # Errors
/// The store cannot be opened, a channel cannot be set up (secret file, SMTP settings).
pub async fn start(
    cfg: Settings,
    store: &StoreConfig,
    people_settings: crate::people::Settings,
    mqtt: Option<Publisher>,
    mut wake: tokio::sync::watch::Receiver<u64>,
    owned: Option<OwnedSites>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let store = store.clone();
    let (conn, pending) = tokio::task::spawn_blocking(move || -> Result<_, ReadError> {
        let conn = Db::open(&store)?;
        let pending = conn.pending()?.len();
        Ok((conn, pending))
    })
    .await
    .map_err(|e| StartError::Task(e.to_string()))??;
    let webhook = cfg.webhook.as_ref().map(|(url, secret)| Webhook::new(url, secret)).transpose()?;
    let smtp = cfg.smtp.as_ref().map(Smtp::new).transpose().map_err(StartError::Smtp)?;
    let mqtt = if cfg.mqtt { Some(mqtt.ok_or(StartError::NoBroker)?) } else { None };
    let mut channels = Vec::new();
    if webhook.is_some() {
        channels.push(Channel::Webhook);
    }
    if smtp.is_some() {
        channels.push(Channel::Email);
    }
    if mqtt.is_some() {
        channels.push(Channel::Mqtt);
    }
    let shared = conn.is_shared();
    let inner = Arc::new(Inner {
        shared,
        cfg,
        conn: Mutex::new(conn),
        owned: owned.clone(),
        inflight: Mutex::new(HashSet::new()),
        people: Mutex::new((-1, Arc::new(Personnel::default()))),
        people_settings,
        webhook,
        smtp,
        mqtt,
        channels,
    });
    tracing::info!(channels = ?inner.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(), pending, "escalation started");
    let mut owned = owned;
    Ok(tokio::spawn(async move {
        let mut open = true;
        loop {
            let next = match inner.clone().pass().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "escalation pass failed; retrying");
                    None
                }
            };
            let wait =
                next.map_or(RECHECK, |t| Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)).min(RECHECK));
            // A site taken over (its owner died) is looked at at once.
            let taken = async {
                let changed = match owned.as_mut() {
                    Some(o) => o.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    std::future::pending::<()>().await;
                }
            };
            if open {
                tokio::select! {
                    r = wake.changed() => open = r.is_ok(),
                    () = taken => {}
                    () = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::select! {
                    () = taken => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }))
}

/// Delivers `job` on a task of its own; the row stays in [`Inner::inflight`] until the task ends.
fn spawn_delivery(inner: Arc<Inner>, job: Job) {
    tokio::spawn(async move {
        let id = job.id;
        inner.clone().deliver(job).await;
        inner.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    });
}

/// Which sites this collector escalates: `pid` is its store writer's session (PostgreSQL), `sites` the
/// sites that session holds (`None`: every site).
struct Scope {
    pid: i32,
    sites: Option<BTreeSet<String>>,
}

impl Scope {
    fn mine(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|s| s.contains(site))
    }
}

impl Inner {
    /// Runs `f` on the store connection, reconnecting first if PostgreSQL's was lost.
    fn with_db<R>(&self, f: impl FnOnce(&mut Db) -> Result<R, ReadError>) -> Result<R, ReadError> {
        let mut c = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.reconnect_if_lost()?;
        f(&mut c)
    }

    fn scope(&self) -> Scope {
        match &self.owned {
            None => Scope { pid: 0, sites: None },
            Some(o) => {
                let o = o.borrow();
                Scope { pid: o.pid, sites: Some(o.sites.clone()) }
            }
        }
    }

    /// The personnel data, reloaded when an import changed it.
    fn personnel(&self, conn: &Db) -> Result<Arc<Personnel>, ReadError> {
        let rev = conn.people_revision()?;
        let mut p = self.people.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if p.0 != rev {
            let loaded = conn.people(self.people_settings.clone())?;
            *p = (rev, Arc::new(loaded));
        }
        Ok(p.1.clone())
    }

    /// Marks `id` as in hand; false when a delivery already has it.
    fn take(&self, id: i64) -> bool {
        self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id)
    }

    /// Pending rows of this collector's sites that no delivery has in hand (claimed before a restart, or by
    /// a collector that owned the site before): each gets a new token and is delivered again.
    fn resume(&self, conn: &Db, p: &Personnel, scope: &Scope) -> Result<Vec<Job>, ReadError> {
        let rows = conn.pending()?;
        let mut jobs = Vec::new();
        for r in rows.into_iter().filter(|r| scope.mine(&r.site)) {
            let Some(channel) = channel_of(&r.channel) else {
                conn.finish(r.id, "dead", now_ms(), Some("unknown channel"))?;
                continue;
            };
            if !self.take(r.id) {
                continue;
            }
            let (token, hash) = new_token();
            let expires = now_ms().saturating_add(self.cfg.ack_ttl_ms);
            if let Err(e) = conn.renew_token(r.id, &hash, expires) {
                self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&r.id);
                return Err(e);
            }
            tracing::info!(stop = %r.stop_key, rung = r.rung, "delivering an escalation claimed earlier and not sent");
            let a = Action {
                stop_key: r.stop_key,
                site: r.site,
                asset: r.asset,
                start_ms: r.start_ms,
                rung: r.rung,
                target: if r.target == "supervisor" { super::Target::Supervisor } else { super::Target::Qualified },
                reason: if r.reason == "long_stop" { ladder::Reason::Long } else { ladder::Reason::Uncovered },
                skills: r.skills,
                to: Some(ladder::Recipient {
                    person: r.person,
                    channel,
                    address: r.address,
                    availability: availability_str(&r.availability),
                }),
                due_ms: r.start_ms,
            };
            jobs.extend(self.job(p, r.id, &a, &token, expires, r.attempts));
        }
        Ok(jobs)
    }

    /// One planning pass: delivers the pending rows nobody has in hand, claims what is due and spawns its
    /// deliveries; returns when to look again.
    async fn pass(self: Arc<Self>) -> Result<Option<i64>, String> {
        let me = self.clone();
        let (jobs, next) = tokio::task::spawn_blocking(move || {
            me.with_db(|conn| -> Result<(Vec<Job>, Option<i64>), ReadError> {
                let scope = me.scope();
                let p = me.personnel(conn)?;
                let mut jobs = me.resume(conn, &p, &scope)?;
                let now = now_ms();
                let open = conn.open_downtime()?;
                let stops: Vec<Stop> = open
                    .iter()
                    .filter(|d| scope.mine(d.site.as_str()))
                    .map(|d| {
                        let j = join::join_one(&p, d);
                        Stop {
                            key: j.key,
                            site: j.site,
                            asset: j.asset,
                            start_ms: j.start_ms,
                            covered: j.covered,
                            required: join::required_skills(&p, d),
                            missing: j.missing,
                            on_shift: j.on_shift,
                            cost_per_hour: p.asset(d.asset.as_str()).map_or(0.0, |a| a.cost_per_hour),
                        }
                    })
                    .collect();
                let keys: Vec<String> = stops.iter().map(|s| s.key.clone()).collect();
                let hist = conn.history(now.saturating_sub(me.cfg.window_ms), &keys)?;
                let plan = ladder::plan(&me.cfg, &p, &stops, &hist, &me.channels, now);
                for a in &plan.actions {
                    let (token, hash) = new_token();
                    let expires = now.saturating_add(me.cfg.ack_ttl_ms);
                    let Some(id) = conn.claim(a, now, &hash, expires, scope.pid)? else {
                        continue;
                    };
                    match &a.to {
                        Some(_) => {
                            me.take(id);
                            jobs.extend(me.job(&p, id, a, &token, expires, 0));
                        }
                        None => tracing::warn!(stop = %a.stop_key, rung = a.rung, target = a.target.as_str(), skills = ?a.skills, "escalation rung skipped: nobody reachable and qualified"),
                    }
                }
                Ok((jobs, plan.next_due_ms))
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for j in jobs {
            spawn_delivery(self.clone(), j);
        }
        Ok(next)
    }

    fn job(&self, p: &Personnel, id: i64, a: &Action, token: &str, expires: i64, attempts: u32) -> Option<Job> {
        let to = a.to.as_ref()?;
        let availability =
            if a.target == super::Target::Supervisor { "supervisor".to_string() } else { to.availability.to_string() };
        let message = Message {
            schema: channels::SCHEMA,
            id: format!("{}#{}", a.stop_key, a.rung),
            site: a.site.clone(),
            asset: a.asset.clone(),
            line: p.asset(&a.asset).map(|x| x.line.clone()),
            stop_start: channels::time(a.start_ms),
            reason: a.reason.as_str().to_string(),
            skills: a.skills.clone(),
            rung: a.rung,
            target: a.target.as_str().to_string(),
            to: To {
                person: if self.cfg.pseudonymize {
                    crate::report::privacy::pseudonym(&to.person)
                } else {
                    to.person.clone()
                },
                channel: to.channel.as_str().to_string(),
                address: (!self.cfg.pseudonymize).then(|| to.address.clone()),
                availability,
            },
            ack_url: format!("{}/ack/{token}", self.cfg.public_url),
            ack_expires: channels::time(expires),
        };
        Some(Job {
            id,
            message,
            channel: to.channel,
            address: to.address.clone(),
            stop: (a.stop_key.clone(), a.site.clone(), a.asset.clone(), a.start_ms),
            attempts,
        })
    }

    /// Delivers one message: before each attempt the stop must still be open and unacknowledged; retried
    /// with doubling, jittered pauses; after `max_attempts` failures it is a dead letter.
    async fn deliver(self: Arc<Self>, job: Job) {
        let mut delay = self.cfg.retry_min;
        let mut attempt = job.attempts;
        let (key, site, asset, start) = job.stop.clone();
        loop {
            let me = self.clone();
            let (k, s, a) = (key.clone(), site.clone(), asset.clone());
            let pid = self.scope().pid;
            let wanted = tokio::task::spawn_blocking(move || me.with_db(|c| c.still_wanted(&k, &s, &a, start, pid)))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match wanted {
                Ok(Wanted::Yes) => {}
                Ok(Wanted::No) => {
                    self.finish(job.id, "cancelled", None).await;
                    tracing::info!(stop = %key, rung = job.message.rung, "escalation not sent: the stop closed or was acknowledged");
                    return;
                }
                Ok(Wanted::NotOwner) => {
                    tracing::info!(stop = %key, rung = job.message.rung, "escalation left to the site's new owner");
                    return;
                }
                // Another collector may own the site by now: its pass delivers the row, or ours once the
                // store answers again.
                Err(e) if self.shared => {
                    tracing::warn!(error = %e, stop = %key, "cannot check the stop before sending; left pending");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the stop before sending; sending anyway"),
            }
            attempt += 1;
            match self.send(&job).await {
                Ok(()) => {
                    self.finish(job.id, "sent", None).await;
                    tracing::info!(stop = %key, rung = job.message.rung, channel = job.channel.as_str(), attempt, "escalation sent");
                    return;
                }
                Err(e) => {
                    let me = self.clone();
                    let err = e.clone();
                    let _ = tokio::task::spawn_blocking(move || me.with_db(|c| c.attempt_failed(job.id, &err))).await;
                    if attempt >= self.cfg.max_attempts {
                        self.finish(job.id, "dead", Some(e.clone())).await;
                        tracing::error!(stop = %key, rung = job.message.rung, channel = job.channel.as_str(), attempts = attempt, error = %e, "escalation not delivered after every attempt: kept as a dead letter, someone must call");
                        return;
                    }
                    tracing::warn!(stop = %key, rung = job.message.rung, channel = job.channel.as_str(), attempt, error = %e, "escalation delivery failed; retrying");
                    // Doubling up to retry_max, each pause drawn from its upper half (jitter).
                    let jitter = 0.5 + 0.5 * (rand::rng().next_u32() as f64 / f64::from(u32::MAX));
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = (delay * 2).min(self.cfg.retry_max);
                }
            }
        }
    }

    async fn send(&self, job: &Job) -> Result<(), String> {
        let body = || serde_json::to_vec(&job.message).map_err(|e| e.to_string());
        match job.channel {
            Channel::Webhook => match &self.webhook {
                Some(w) => w.post(body()?).await,
                None => Err("no webhook configured".into()),
            },
            Channel::Email => match &self.smtp {
                Some(s) => s.send(&job.address, &job.message.subject(), job.message.text()).await,
                None => Err("no SMTP configured".into()),
            },
            Channel::Mqtt => match &self.mqtt {
                Some(p) => channels::mqtt::publish(p, &job.message.site, body()?).await,
                None => Err("no MQTT configured".into()),
            },
        }
    }

    async fn finish(self: &Arc<Self>, id: i64, state: &'static str, error: Option<String>) {
        let me = self.clone();
        let r =
            tokio::task::spawn_blocking(move || me.with_db(|c| c.finish(id, state, now_ms(), error.as_deref()))).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!(id, state, "cannot record an escalation's outcome");
        }
    }
}

fn channel_of(s: &str) -> Option<Channel> {
    match s {
        "webhook" => Some(Channel::Webhook),
        "email" => Some(Channel::Email),
        "mqtt" => Some(Channel::Mqtt),
        _ => None,
    }
}

fn availability_str(s: &str) -> &'static str {
    match s {
        "on_shift" => "on_shift",
        "on_call" => "on_call",
        _ => "next_shift",
    }
}
