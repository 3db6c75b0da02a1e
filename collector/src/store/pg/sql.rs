//! The PostgreSQL statements of the write path, mirroring `store::events` for SQLite. Rows go in as
//! arrays (one `unnest` statement for any number of rows, binary parameters), so a transaction of 20,000
//! events is one round trip.
//!
//! Invariant: `(site, gateway, epoch, seq)` is the primary key of `events`; rows go in by `COPY`, and
//! after a unique violation (the transaction starts again) with `ON CONFLICT DO NOTHING`, so a redelivered
//! event, even one stored by another collector, changes nothing and is reported as not new.

use crate::store::events::{DeadLetter, Rows};
use crate::timeline::{Downtime, FirstOut, Input};
use shiftlens_common::{status::Status, AssetId, Event, EventBody, GatewayId, SiteId};
use std::collections::HashSet;
use tokio_postgres::{GenericClient, Transaction};

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

const INSERT_EVENTS: &str = "INSERT INTO events (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms)
    SELECT site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[], $7::text[], $8::text[],
                $9::int8[]) WITH ORDINALITY AS t(site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms, ord)
    ORDER BY ord
    ON CONFLICT (site, gateway, epoch, seq) DO NOTHING
    RETURNING site, gateway, epoch, seq";

/// Sets up the writer's session: no JIT compilation. Its statements are short, but the planner's row
/// estimates for the `xid` range lookups of [`inputs_in`] are high enough to start JIT with inlining and
/// optimization, some 0.1-0.4 s of server CPU each, twice a second (measured with `EXPLAIN ANALYZE` on
/// PostgreSQL 15 from Debian, where JIT is on by default).
///
/// # Errors
/// Statement failures.
pub async fn writer_session(c: &tokio_postgres::Client) -> Result<()> {
    c.batch_execute("SET jit = off").await
}

/// Inserts the events of several batches (each with its receive time) in one statement, `ON CONFLICT DO
/// NOTHING`; returns, per batch and in order, whether each event was new. A seq twice in one transaction is
/// stored once: its first occurrence is the new one. The slow way in (a speculative insertion per row), for
/// a transaction whose [`copy_new`] met a key already stored.
///
/// # Errors
/// Statement failures.
pub async fn insert_batches(tx: &Transaction<'_>, batches: &[(&Rows, i64)]) -> Result<Vec<Vec<bool>>> {
    let n: usize = batches.iter().map(|(r, _)| r.len()).sum();
    let (mut site, mut gateway, mut epoch, mut seq) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut asset, mut ts, mut kind, mut body, mut received) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (rows, received_ms) in batches {
        let b = &rows.batch;
        for (i, e) in b.events.iter().enumerate() {
            site.push(b.site.as_str());
            gateway.push(b.gateway.as_str());
            epoch.push(b.epoch as i64);
            seq.push(e.seq as i64);
            asset.push(e.asset.as_str());
            ts.push(e.ts_ms);
            kind.push(crate::store::events::kind(&e.body));
            body.push(rows.body(i));
            received.push(*received_ms);
        }
    }
    if n == 0 {
        return Ok(batches.iter().map(|_| Vec::new()).collect());
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
        [&site, &gateway, &epoch, &seq, &asset, &ts, &kind, &body, &received];
    let inserted = tx.query(INSERT_EVENTS, &params).await?;
    // The (site, gateway) pairs of this transaction are few: index them, key the new rows by index.
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let pair_of =
        |pairs: &mut Vec<(&str, &str)>, s: &str, g: &str| pairs.iter().position(|&(ps, pg)| ps == s && pg == g);
    for (rows, _) in batches {
        let (s, g) = (rows.batch.site.as_str(), rows.batch.gateway.as_str());
        if pair_of(&mut pairs, s, g).is_none() {
            pairs.push((s, g));
        }
    }
    let mut new: HashSet<(usize, i64, i64)> = HashSet::with_capacity(inserted.len());
    for r in &inserted {
        let (s, g): (&str, &str) = (r.get(0), r.get(1));
        if let Some(p) = pair_of(&mut pairs, s, g) {
            new.insert((p, r.get(2), r.get(3)));
        }
    }
    Ok(batches
        .iter()
        .map(|(rows, _)| {
            let b = &rows.batch;
            let p = pair_of(&mut pairs, b.site.as_str(), b.gateway.as_str()).unwrap_or(usize::MAX);
            b.events.iter().map(|e| new.remove(&(p, b.epoch as i64, e.seq as i64))).collect()
        })
        .collect())
}

/// `COPY ... FROM STDIN BINARY` of every event of `batches` straight into `events`: the cheapest way in,
/// failing whole (a unique violation, which aborts the transaction) on any key already stored.
///
/// # Errors
/// Statement failures; `UNIQUE_VIOLATION` for a key already stored or twice in `batches`.
pub async fn copy_new(tx: &Transaction<'_>, batches: &[(&Rows, i64)]) -> Result<()> {
    use tokio_postgres::types::Type;
    let sink = tx
        .copy_in("COPY events (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms) FROM STDIN BINARY")
        .await?;
    let types =
        [Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::INT8];
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    for (rows, received_ms) in batches {
        let b = &rows.batch;
        let epoch = b.epoch as i64;
        for (i, e) in b.events.iter().enumerate() {
            let seq = e.seq as i64;
            let kind = crate::store::events::kind(&e.body);
            writer
                .as_mut()
                .write(&[
                    &b.site.as_str(),
                    &b.gateway.as_str(),
                    &epoch,
                    &seq,
                    &e.asset.as_str(),
                    &e.ts_ms,
                    &kind,
                    &rows.body(i),
                    received_ms,
                ])
                .await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

/// # Errors
/// Statement failures.
pub async fn insert_dead_letter(tx: &Transaction<'_>, d: &DeadLetter) -> Result<()> {
    tx.execute(
        "INSERT INTO dead_letters (topic, received_ms, kind, reason, size, head) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&d.topic, &d.received_ms, &d.kind, &d.reason, &(d.size as i64), &d.head],
    )
    .await?;
    Ok(())
}

/// Keeps only the newest `max` dead letters; returns how many were deleted.
///
/// # Errors
/// Statement failures.
pub async fn bound_dead_letters(tx: &Transaction<'_>, max: usize) -> Result<u64> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    tx.execute("DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - $1", &[&max]).await
}

/// # Errors
/// Statement failures.
pub async fn prune_dead_letters(tx: &Transaction<'_>, cutoff_ms: i64) -> Result<u64> {
    tx.execute("DELETE FROM dead_letters WHERE received_ms < $1", &[&cutoff_ms]).await
}

/// Records a status message; returns true when it is a transition to offline (a last will to apply).
///
/// # Errors
/// Statement failures.
pub async fn upsert_status(
    tx: &Transaction<'_>,
    site: &SiteId,
    gateway: &GatewayId,
    status: &Status,
    received_ms: i64,
) -> Result<bool> {
    let (site, gateway) = (site.as_str(), gateway.as_str());
    let was_online: Option<bool> = tx
        .query_opt("SELECT online FROM gateways WHERE site = $1 AND gateway = $2 FOR UPDATE", &[&site, &gateway])
        .await?
        .map(|r| r.get(0));
    let json = serde_json::to_string(status).unwrap_or_default();
    tx.execute(
        "INSERT INTO gateways (site, gateway, online, last_seen_ms, status) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (site, gateway) DO UPDATE SET online = $3, last_seen_ms = $4, status = $5",
        &[&site, &gateway, &status.online, &received_ms, &json],
    )
    .await?;
    let went_offline = !status.online && was_online != Some(false);
    if went_offline {
        tx.execute(
            "INSERT INTO gateway_offline (site, gateway, ts_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&site, &gateway, &received_ms],
        )
        .await?;
    }
    Ok(went_offline)
}

/// Marks offline, at `now_ms`, every gateway online whose last status arrived before `cutoff_ms`; returns
/// them.
///
/// # Errors
/// Statement failures.
pub async fn mark_overdue(tx: &Transaction<'_>, cutoff_ms: i64, now_ms: i64) -> Result<Vec<(SiteId, GatewayId)>> {
    let rows = tx
        .query(
            "WITH gone AS (UPDATE gateways SET online = false WHERE online AND last_seen_ms < $1
                           RETURNING site, gateway),
                  marked AS (INSERT INTO gateway_offline (site, gateway, ts_ms) SELECT site, gateway, $2 FROM gone
                             ON CONFLICT DO NOTHING)
             SELECT site, gateway FROM gone",
            &[&cutoff_ms, &now_ms],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| match (SiteId::parse(r.get::<_, String>(0)), GatewayId::parse(r.get::<_, String>(1))) {
            (Ok(s), Ok(g)) => Some((s, g)),
            _ => None,
        })
        .collect())
}

/// Writes the downtime rows the timeline changed: `upserts` replace rows by key, `deletes` remove keys.
///
/// # Errors
/// Statement failures.
pub async fn write_downtime(tx: &Transaction<'_>, upserts: &[&Downtime], deletes: &[&Downtime]) -> Result<()> {
    if !deletes.is_empty() {
        let site: Vec<&str> = deletes.iter().map(|d| d.site.as_str()).collect();
        let asset: Vec<&str> = deletes.iter().map(|d| d.asset.as_str()).collect();
        let start: Vec<i64> = deletes.iter().map(|d| d.start_ms).collect();
        tx.execute(
            "DELETE FROM downtime d USING unnest($1::text[], $2::text[], $3::int8[]) AS k(site, asset, start_ms)
             WHERE d.site = k.site AND d.asset = k.asset AND d.start_ms = k.start_ms",
            &[&site, &asset, &start],
        )
        .await?;
    }
    if !upserts.is_empty() {
        let site: Vec<&str> = upserts.iter().map(|d| d.site.as_str()).collect();
        let asset: Vec<&str> = upserts.iter().map(|d| d.asset.as_str()).collect();
        let start: Vec<i64> = upserts.iter().map(|d| d.start_ms).collect();
        let end: Vec<Option<i64>> = upserts.iter().map(|d| d.end_ms).collect();
        let gateway: Vec<&str> = upserts.iter().map(|d| d.gateway.as_str()).collect();
        let reason: Vec<Option<&str>> = upserts.iter().map(|d| d.reason.as_deref()).collect();
        let first_out: Vec<Option<String>> =
            upserts.iter().map(|d| d.first_out.as_ref().and_then(|f| serde_json::to_string(f).ok())).collect();
        let gap: Vec<bool> = upserts.iter().map(|d| d.data_gap).collect();
        tx.execute(
            "INSERT INTO downtime (site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[],
                                      $7::text[], $8::bool[])
                 ON CONFLICT (site, asset, start_ms) DO UPDATE SET end_ms = EXCLUDED.end_ms,
                   gateway = EXCLUDED.gateway, reason = EXCLUDED.reason, first_out = EXCLUDED.first_out,
                   data_gap = EXCLUDED.data_gap",
            &[&site, &asset, &start, &end, &gateway, &reason, &first_out, &gap],
        )
        .await?;
    }
    Ok(())
}

/// Deletes raw events received before `cutoff_ms`, keeping those of open downtime (as SQLite's
/// `prune_events`); returns how many.
///
/// # Errors
/// Statement failures.
pub async fn prune_events(tx: &Transaction<'_>, cutoff_ms: i64) -> Result<u64> {
    tx.execute(
        "WITH open AS MATERIALIZED (
           SELECT site, asset, min(start_ms) AS start_ms FROM downtime WHERE end_ms IS NULL GROUP BY site, asset)
         DELETE FROM events e WHERE e.received_ms < $1 AND NOT EXISTS (
           SELECT 1 FROM open o WHERE o.site = e.site AND o.asset = e.asset
             AND e.ts_ms >= o.start_ms - CASE WHEN e.kind = 'alarm' THEN 86400000 ELSE 0 END)",
        &[&cutoff_ms],
    )
    .await
}

/// Every stored event and offline mark of the sites `only` (all sites when `None`) as timeline inputs.
///
/// # Errors
/// Statement failures; rows that no longer parse are skipped with a warning.
pub async fn load_inputs(c: &impl GenericClient, only: Option<&[String]>) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let all = only.is_none();
    let sites: Vec<String> = only.map(<[String]>::to_vec).unwrap_or_default();
    let rows = c
        .query(
            "SELECT site, gateway, epoch, seq, asset, ts_ms, body FROM events WHERE $1 OR site = ANY($2)",
            &[&all, &sites],
        )
        .await?;
    for r in rows {
        let parsed = (
            SiteId::parse(r.get::<_, String>(0)),
            GatewayId::parse(r.get::<_, String>(1)),
            AssetId::parse(r.get::<_, String>(4)),
            serde_json::from_str::<EventBody>(r.get::<_, &str>(6)),
        );
        let (Ok(site), Ok(gateway), Ok(asset), Ok(body)) = parsed else {
            tracing::warn!("skipping an unreadable stored event");
            continue;
        };
        let event = Event { seq: r.get::<_, i64>(3) as u64, ts_ms: r.get(5), asset, body };
        out.push(Input::Event { site, gateway, epoch: r.get::<_, i64>(2) as u64, event });
    }
    let rows =
        c.query("SELECT site, gateway, ts_ms FROM gateway_offline WHERE $1 OR site = ANY($2)", &[&all, &sites]).await?;
    for r in rows {
        if let (Ok(site), Ok(gateway)) = (SiteId::parse(r.get::<_, String>(0)), GatewayId::parse(r.get::<_, String>(1)))
        {
            out.push(Input::Offline { site, gateway, ts_ms: r.get(2) });
        }
    }
    Ok(out)
}

/// Downtime rows, as stored (for comparisons and the read side).
///
/// # Errors
/// Statement failures.
pub async fn all_downtime(c: &impl GenericClient) -> Result<Vec<Downtime>> {
    let rows = c
        .query(
            "SELECT site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap FROM downtime
             ORDER BY start_ms, site, asset",
            &[],
        )
        .await?;
    Ok(rows.iter().filter_map(downtime_row).collect())
}

/// A downtime row selected as (site, asset, start_ms, end_ms, gateway, reason, first_out, data_gap); `None` for ids that do not parse (as SQLite's
/// `events::downtime_row`).
pub fn downtime_row(r: &tokio_postgres::Row) -> Option<Downtime> {
    let (Ok(site), Ok(asset), Ok(gateway)) = (
        SiteId::parse(r.get::<_, &str>(0)),
        AssetId::parse(r.get::<_, &str>(1)),
        GatewayId::parse(r.get::<_, &str>(4)),
    ) else {
        return None;
    };
    let first_out: Option<&str> = r.get(6);
    Some(Downtime {
        site,
        gateway,
        asset,
        start_ms: r.get(2),
        end_ms: r.get(3),
        reason: r.get(5),
        first_out: first_out.and_then(|f| serde_json::from_str::<FirstOut>(f).ok()),
        data_gap: r.get(7),
    })
}

/// The id of the current transaction (assigned now if it has none yet): rows it writes carry it in `xid`.
///
/// # Errors
/// Statement failures.
pub async fn current_xid(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await?.get(0))
}

/// Every transaction with an id below the returned one has ended: rows they committed are all visible
/// to any later statement, and no row with a smaller `xid` can appear any more.
///
/// # Errors
/// Statement failures.
pub async fn settled_xid(c: &impl GenericClient) -> Result<i64> {
    Ok(c.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[]).await?.get(0))
}

/// Records the sites of this transaction's batches (the candidates for ownership).
///
/// # Errors
/// Statement failures.
pub async fn note_sites(tx: &Transaction<'_>, sites: &[&str]) -> Result<()> {
    if !sites.is_empty() {
        tx.execute("INSERT INTO sites (site) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", &[&sites]).await?;
    }
    Ok(())
}

/// Every site that has sent events.
///
/// # Errors
/// Statement failures.
pub async fn all_sites(c: &impl GenericClient) -> Result<Vec<String>> {
    Ok(c.query("SELECT site FROM sites ORDER BY site", &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// Takes `site`'s ownership lock on this session if no other session holds it; true when held now.
///
/// # Errors
/// Statement failures.
pub async fn try_own(c: &impl GenericClient, site: &str) -> Result<bool> {
    Ok(c.query_one("SELECT pg_try_advisory_lock(hashtextextended('shiftlens.site:' || $1, 0))", &[&site]).await?.get(0))
}

/// Timeline inputs of `site` committed in the `xid` ranges `[lo, hi)` given (events and offline marks), in
/// commit order as far as it is known (by xid, then as stored).
///
/// # Errors
/// Statement failures; unreadable rows are skipped with a warning.
pub async fn inputs_in(c: &impl GenericClient, site: &str, lo: &[i64], hi: &[i64]) -> Result<Vec<Input>> {
    let rows = c
        .query(
            "SELECT e.gateway, e.epoch, e.seq, e.asset, e.ts_ms, e.body, e.xid, 0 AS k
               FROM unnest($2::int8[], $3::int8[]) AS r(lo, hi)
               JOIN events e ON e.site = $1 AND e.xid >= r.lo AND e.xid < r.hi
             UNION ALL
             SELECT o.gateway, 0, 0, '', o.ts_ms, NULL, o.xid, 1
               FROM unnest($2::int8[], $3::int8[]) AS r(lo, hi)
               JOIN gateway_offline o ON o.site = $1 AND o.xid >= r.lo AND o.xid < r.hi
             ORDER BY 7, 8",
            &[&site, &lo, &hi],
        )
        .await?;
    let Ok(site) = SiteId::parse(site) else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let Ok(gateway) = GatewayId::parse(r.get::<_, String>(0)) else { continue };
        if r.get::<_, i32>(7) == 1 {
            out.push(Input::Offline { site: site.clone(), gateway, ts_ms: r.get(4) });
            continue;
        }
        let body: Option<&str> = r.get(5);
        let (Ok(asset), Some(Ok(body))) =
            (AssetId::parse(r.get::<_, String>(3)), body.map(serde_json::from_str::<EventBody>))
        else {
            tracing::warn!("skipping an unreadable stored event");
            continue;
        };
        let event = Event { seq: r.get::<_, i64>(2) as u64, ts_ms: r.get(4), asset, body };
        out.push(Input::Event { site: site.clone(), gateway, epoch: r.get::<_, i64>(1) as u64, event });
    }
    Ok(out)
}

/// The downtime rows of one site.
///
/// # Errors
/// Statement failures.
pub async fn site_downtime(c: &impl GenericClient, site: &str) -> Result<Vec<Downtime>> {
    Ok(all_downtime(c).await?.into_iter().filter(|d| d.site.as_str() == site).collect())
}
