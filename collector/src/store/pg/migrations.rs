//! The PostgreSQL schema as an ordered list of migrations (`collector/src/store/sql/pg/`), tracked in
//! `shiftlens.schema_version`. Append new migrations; never edit one that has shipped. Collectors starting
//! together migrate one at a time (a transaction-scoped advisory lock), and a database at a version newer
//! than this build knows is refused rather than written with an older idea of the schema.

use super::{PgError, Target};
use tokio_postgres::Client;

/// All migrations in order; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../sql/pg/001_pg_schema.sql"),
    include_str!("../sql/pg/002_pg_downtime_view.sql"),
    include_str!("../sql/pg/003_escalations_alarms.sql"),
    include_str!("../sql/pg/004_ingest.sql"),
];

/// The version this build writes.
pub fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// Key of the advisory lock that serializes migrations ("SLmigrat").
const LOCK: i64 = 0x534c_6d69_6772_6174;

/// The schema version of the database (0 when it holds no ShiftLens schema yet).
///
/// # Errors
/// Statement failures.
pub async fn version(client: &Client, target: &Target) -> Result<i32, PgError> {
    let sql = |e: tokio_postgres::Error| target.sql_error(&e);
    let exists: bool =
        client.query_one("SELECT to_regclass('shiftlens.schema_version') IS NOT NULL", &[]).await.map_err(sql)?.get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> =
        client.query_one("SELECT max(version) FROM shiftlens.schema_version", &[]).await.map_err(sql)?.get(0);
    Ok(v.unwrap_or(0))
}

/// Applies the missing migrations, each in the same transaction as its version row.
///
/// # Errors
/// Statement failures, or a schema newer than [`latest`].
pub async fn to_latest(client: &mut Client, target: &Target) -> Result<(), PgError> {
    let sql = |e: tokio_postgres::Error| target.sql_error(&e);
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(sql)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS shiftlens;
         CREATE TABLE IF NOT EXISTS shiftlens.schema_version (
             version    integer PRIMARY KEY,
             applied_ms bigint  NOT NULL)",
    )
    .await
    .map_err(sql)?;
    let found: Option<i32> =
        tx.query_one("SELECT max(version) FROM shiftlens.schema_version", &[]).await.map_err(sql)?.get(0);
    let found = found.unwrap_or(0);
    if found > latest() {
        return Err(PgError::Newer { at: target.at().to_string(), found, known: latest() });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(m).await.map_err(sql)?;
        let v = i as i32 + 1;
        tx.execute(
            "INSERT INTO shiftlens.schema_version (version, applied_ms)
             VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
            &[&v],
        )
        .await
        .map_err(sql)?;
        tracing::info!(db = %target.at(), version = v, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(sql)
}
