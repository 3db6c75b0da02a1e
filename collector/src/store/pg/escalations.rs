//! Escalation state in PostgreSQL (tables of `sql/pg/003_escalations_alarms.sql`): the statements of
//! `store::escalations` for SQLite, on a blocking [`Reader`], so the runner and the HTTP handlers use either
//! store through `store::escalations::Db`.
//!
//! Several collectors share the tables. Invariants:
//! - one message per stop per rung: a claim is an insert under `UNIQUE (stop_key, rung)`, committed before
//!   anything is sent, whichever collector makes it;
//! - only the site's owner claims and delivers: a claim, and the check before each delivery, hold only
//!   while the collector's store writer session (`pid`) holds the site's ownership lock
//!   ([`super::owner::HOLDS`]); a collector that lost the site leaves its undelivered rows `pending` for the
//!   new owner, which delivers them and goes on up the ladder from the stored claims;
//! - acknowledgements may come through any collector: the first one of a stop wins (`escalation_ack`'s key,
//!   the token row locked while it is used).

use super::read::Reader;
use super::{owner, PgError};
use crate::escalate::ladder::{Action, Claimed, History};
use crate::store::escalations::{AckOutcome, BoardMessage, Pending, TokenInfo, Wanted};
use crate::timeline::Downtime;
use std::collections::HashMap;
use tokio_postgres::GenericClient;

type Result<T> = std::result::Result<T, PgError>;

const TOKEN: &str = "SELECT e.id, e.stop_key, e.site, e.asset, e.start_ms, coalesce(e.person, ''), e.token_expires_ms,
        e.token_used_ms, a.person, a.ack_ms, d.end_ms IS NULL AND d.start_ms IS NOT NULL
    FROM escalation e
    LEFT JOIN escalation_ack a ON a.stop_key = e.stop_key
    LEFT JOIN downtime d ON d.site = e.site AND d.asset = e.asset AND d.start_ms = e.start_ms
    WHERE e.token_hash = $1";

fn token_info(r: &tokio_postgres::Row) -> TokenInfo {
    let ack: (Option<String>, Option<i64>) = (r.get(8), r.get(9));
    TokenInfo {
        id: r.get(0),
        stop_key: r.get(1),
        site: r.get(2),
        asset: r.get(3),
        start_ms: r.get(4),
        person: r.get(5),
        expires_ms: r.get::<_, Option<i64>>(6).unwrap_or(0),
        used_ms: r.get(7),
        acked: match ack {
            (Some(p), Some(t)) => Some((p, t)),
            _ => None,
        },
        stop_open: r.get::<_, Option<bool>>(10).unwrap_or(false),
    }
}

async fn token_row(
    c: &impl GenericClient,
    hash: &[u8; 32],
    lock: bool,
) -> std::result::Result<Option<TokenInfo>, tokio_postgres::Error> {
    let sql = if lock { format!("{TOKEN} FOR UPDATE OF e") } else { TOKEN.to_string() };
    Ok(c.query_opt(&sql, &[&hash.as_slice()]).await?.as_ref().map(token_info))
}

impl Reader {
    fn run<T>(&self, f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        self.rt.block_on(f).map_err(|e| self.target.sql_error(&e))
    }

    /// A new reader on the same database (after the connection was lost).
    ///
    /// # Errors
    /// Unreachable or refused.
    pub fn reopened(&self) -> Result<Reader> {
        Reader::open(&self.target)
    }

    /// Open downtime rows (no end), by start.
    ///
    /// # Errors
    /// Statement failures.
    pub fn open_downtime(&self) -> Result<Vec<Downtime>> {
        let rows = self.run(self.client.query(
            "SELECT site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap FROM downtime
             WHERE end_ms IS NULL ORDER BY start_ms, site, asset",
            &[],
        ))?;
        Ok(rows.iter().filter_map(super::sql::downtime_row).collect())
    }

    /// Whether the stop is still open and unacknowledged, and its site still owned by the writer session
    /// `pid`.
    ///
    /// # Errors
    /// Statement failures.
    pub fn still_wanted(&self, stop_key: &str, site: &str, asset: &str, start_ms: i64, pid: i32) -> Result<Wanted> {
        let sql = format!(
            "SELECT coalesce((SELECT end_ms IS NULL FROM downtime WHERE site = $2 AND asset = $3 AND start_ms = $4), false),
                    EXISTS (SELECT 1 FROM escalation_ack WHERE stop_key = $1),
                    {}",
            owner::holds(5, 2)
        );
        let r = self.run(self.client.query_one(&sql, &[&stop_key, &site, &asset, &start_ms, &pid]))?;
        let (open, acked, mine): (bool, bool, bool) = (r.get(0), r.get(1), r.get(2));
        Ok(if !mine {
            Wanted::NotOwner
        } else if open && !acked {
            Wanted::Yes
        } else {
            Wanted::No
        })
    }

    /// Claimed rungs since `since_ms` and all rungs of `keys`, and which of `keys` are acknowledged.
    ///
    /// # Errors
    /// Statement failures.
    pub fn history(&self, since_ms: i64, keys: &[String]) -> Result<History> {
        let (claims, acked) = self.run(async {
            let claims = self
                .client
                .query(
                    "SELECT stop_key, site, rung, coalesce(person, ''), claimed_ms FROM escalation
                     WHERE claimed_ms > $1 OR stop_key = ANY($2) ORDER BY id",
                    &[&since_ms, &keys],
                )
                .await?;
            let acked =
                self.client.query("SELECT stop_key FROM escalation_ack WHERE stop_key = ANY($1)", &[&keys]).await?;
            Ok((claims, acked))
        })?;
        Ok(History {
            claimed: claims
                .iter()
                .map(|r| Claimed {
                    stop_key: r.get(0),
                    site: r.get(1),
                    rung: r.get::<_, i32>(2) as u32,
                    person: r.get(3),
                    at_ms: r.get(4),
                })
                .collect(),
            acked: acked.iter().map(|r| r.get(0)).collect(),
        })
    }

    /// Claims `a`'s rung with a token hash, only while the writer session `pid` owns `a`'s site;
    /// `Ok(None)` when the rung was already claimed or the site is not owned (nothing to send).
    ///
    /// # Errors
    /// Statement failures.
    pub fn claim(
        &self,
        a: &Action,
        now_ms: i64,
        token_hash: &[u8; 32],
        expires_ms: i64,
        pid: i32,
    ) -> Result<Option<i64>> {
        let to = a.to.as_ref();
        let sql = format!(
            "INSERT INTO escalation (stop_key, site, asset, start_ms, rung, target, reason, skills, person,
               channel, address, availability, claimed_ms, state, token_hash, token_expires_ms)
             SELECT $1::text, $2::text, $3::text, $4::int8, $5::int4, $6::text, $7::text, $8::text, $9::text,
                    $10::text, $11::text, $12::text, $13::int8, $14::text, $15::bytea, $16::int8
             WHERE {}
             ON CONFLICT (stop_key, rung) DO NOTHING RETURNING id",
            owner::holds(17, 2)
        );
        let rung = a.rung as i32;
        let skills = a.skills.join(" ");
        let (person, channel, address, availability) = (
            to.map(|r| r.person.as_str()),
            to.map(|r| r.channel.as_str()),
            to.map(|r| r.address.as_str()),
            to.map(|r| r.availability),
        );
        let state = if to.is_some() { "pending" } else { "skipped" };
        let (hash, expires) = (to.map(|_| token_hash.as_slice()), to.map(|_| expires_ms));
        let row = self.run(self.client.query_opt(
            &sql,
            &[
                &a.stop_key,
                &a.site,
                &a.asset,
                &a.start_ms,
                &rung,
                &a.target.as_str(),
                &a.reason.as_str(),
                &skills,
                &person,
                &channel,
                &address,
                &availability,
                &now_ms,
                &state,
                &hash,
                &expires,
                &pid,
            ],
        ))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every row still `pending` (to deliver after a restart or a change of owner), oldest first.
    ///
    /// # Errors
    /// Statement failures.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let rows = self.run(self.client.query(
            "SELECT id, stop_key, site, asset, start_ms, rung, target, reason, skills, person, channel, address,
                    availability, attempts
             FROM escalation WHERE state = 'pending' ORDER BY id",
            &[],
        ))?;
        Ok(rows
            .iter()
            .map(|r| Pending {
                id: r.get(0),
                stop_key: r.get(1),
                site: r.get(2),
                asset: r.get(3),
                start_ms: r.get(4),
                rung: r.get::<_, i32>(5) as u32,
                target: r.get(6),
                reason: r.get(7),
                skills: r.get::<_, String>(8).split_whitespace().map(str::to_string).collect(),
                person: r.get::<_, Option<String>>(9).unwrap_or_default(),
                channel: r.get::<_, Option<String>>(10).unwrap_or_default(),
                address: r.get::<_, Option<String>>(11).unwrap_or_default(),
                availability: r.get::<_, Option<String>>(12).unwrap_or_default(),
                attempts: r.get::<_, i32>(13) as u32,
            })
            .collect())
    }

    /// A new token for a pending row (the old one is unknown: only its hash was stored).
    ///
    /// # Errors
    /// Statement failures.
    pub fn renew_token(&self, id: i64, token_hash: &[u8; 32], expires_ms: i64) -> Result<()> {
        self.run(self.client.execute(
            "UPDATE escalation SET token_hash = $2, token_expires_ms = $3 WHERE id = $1 AND state = 'pending'",
            &[&id, &token_hash.as_slice(), &expires_ms],
        ))
        .map(drop)
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// Statement failures.
    pub fn attempt_failed(&self, id: i64, error: &str) -> Result<()> {
        self.run(
            self.client
                .execute("UPDATE escalation SET attempts = attempts + 1, error = $2 WHERE id = $1", &[&id, &error]),
        )
        .map(drop)
    }

    /// Ends a pending row (`sent`, `dead` or `cancelled`) and clears its address.
    ///
    /// # Errors
    /// Statement failures.
    pub fn finish(&self, id: i64, state: &str, now_ms: i64, error: Option<&str>) -> Result<()> {
        self.run(self.client.execute(
            "UPDATE escalation SET state = $2, address = NULL,
               sent_ms = CASE WHEN $2 = 'sent' THEN $3 ELSE sent_ms END,
               attempts = attempts + CASE WHEN $2 = 'sent' THEN 1 ELSE 0 END,
               error = coalesce($4, error)
             WHERE id = $1 AND state = 'pending'",
            &[&id, &state, &now_ms, &error],
        ))
        .map(drop)
    }

    /// Looks a token up by its hash.
    ///
    /// # Errors
    /// Statement failures.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenInfo>> {
        self.run(token_row(&self.client, hash, false))
    }

    /// Uses a token (as `store::escalations::acknowledge`), in one transaction with the token's row locked;
    /// of two acknowledgements of one stop through different collectors, the first is the stop's.
    ///
    /// # Errors
    /// Statement failures (nothing is then recorded).
    pub fn acknowledge(&mut self, hash: &[u8; 32], via: &str, now_ms: i64) -> Result<AckOutcome> {
        let (rt, client) = (&self.rt, &mut self.client);
        let outcome = rt.block_on(async {
            let tx = client.transaction().await?;
            let Some(t) = token_row(&tx, hash, true).await? else { return Ok(AckOutcome::Unknown) };
            if let Some(refused) = t.refusal(now_ms) {
                return Ok(refused);
            }
            tx.execute("UPDATE escalation SET token_used_ms = $2 WHERE id = $1", &[&t.id, &now_ms]).await?;
            let inserted = match t.acked {
                Some(_) => 0,
                None => {
                    tx.execute(
                        "INSERT INTO escalation_ack (stop_key, site, asset, start_ms, escalation_id, person, via, ack_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (stop_key) DO NOTHING",
                        &[&t.stop_key, &t.site, &t.asset, &t.start_ms, &t.id, &t.person, &via, &now_ms],
                    )
                    .await?
                }
            };
            let outcome = if inserted == 1 {
                AckOutcome::Acknowledged { person: t.person, response_ms: now_ms - t.start_ms, stop_key: t.stop_key }
            } else {
                // Acknowledged before, or just now through another collector.
                let r = tx
                    .query_one("SELECT person, ack_ms FROM escalation_ack WHERE stop_key = $1", &[&t.stop_key])
                    .await?;
                AckOutcome::AlreadyAcknowledged { by: r.get(0), at_ms: r.get(1) }
            };
            tx.commit().await?;
            Ok(outcome)
        });
        outcome.map_err(|e: tokio_postgres::Error| self.target.sql_error(&e))
    }

    /// Acknowledgement instants of stops, by `site/asset/start_ms` key.
    ///
    /// # Errors
    /// Statement failures.
    pub fn ack_times(&self) -> Result<HashMap<String, i64>> {
        let rows = self.run(self.client.query("SELECT stop_key, ack_ms FROM escalation_ack", &[]))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Messages of each stop in `keys`, by rung, and their acknowledgements (person, via, when).
    ///
    /// # Errors
    /// Statement failures.
    #[allow(clippy::type_complexity)]
    pub fn board(
        &self,
        keys: &[String],
    ) -> Result<(HashMap<String, Vec<BoardMessage>>, HashMap<String, (String, String, i64)>)> {
        let (msgs, acks) = self.run(async {
            let m = self
                .client
                .query(
                    "SELECT stop_key, rung, target, person, channel, availability, state, claimed_ms, sent_ms, attempts,
                            error
                     FROM escalation WHERE stop_key = ANY($1) ORDER BY stop_key, rung",
                    &[&keys],
                )
                .await?;
            let a = self
                .client
                .query("SELECT stop_key, person, via, ack_ms FROM escalation_ack WHERE stop_key = ANY($1)", &[&keys])
                .await?;
            Ok((m, a))
        })?;
        let mut out: HashMap<String, Vec<BoardMessage>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in &msgs {
            out.entry(r.get(0)).or_default().push(BoardMessage {
                rung: r.get::<_, i32>(1) as u32,
                target: r.get(2),
                person: r.get(3),
                channel: r.get(4),
                availability: r.get(5),
                state: r.get(6),
                claimed_ms: r.get(7),
                sent_ms: r.get(8),
                attempts: r.get::<_, i32>(9) as u32,
                error: r.get(10),
            });
        }
        let acks = acks.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect();
        Ok((out, acks))
    }
}
