//! `shiftlens-collector migrate --from <collector.db> --to <config or url>`: copies a SQLite store into
//! PostgreSQL, table by table, in chunks taken in key order (keyset: `WHERE (key) > (last key) ORDER BY key
//! LIMIT n`). Each chunk is inserted with `ON CONFLICT DO NOTHING` and the last key copied is saved in
//! `migrate_progress` in the same PostgreSQL transaction, so a copy that is interrupted (or run twice)
//! resumes where it stopped and never copies a row twice. Tables whose rows change in place (downtime,
//! gateways, people records) are small next to the events and are copied whole by every run, replacing
//! rows by key. At the end every table's row count in
//! PostgreSQL is compared with SQLite's; a difference is an error.

use super::{PgError, Target};
use rusqlite::types::ValueRef;
use std::path::Path;
use tokio_postgres::types::ToSql;

/// How a column is stored in PostgreSQL.
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Text,
    Int,
    Bool,
    Bytes,
}

struct Table {
    name: &'static str,
    /// Columns, with their PostgreSQL types; the key columns first.
    cols: &'static [(&'static str, Ty)],
    /// How many of `cols` (from the first) form the key.
    key: usize,
    /// The table has an identity column `id` always generated: inserts override it.
    overriding: bool,
    /// Rows are updated in place (downtime closes, a gateway's status, a superseded person record): every
    /// run copies the whole table again, replacing rows by key. Other tables only ever gain rows (or lose
    /// old ones to retention), so a run resumes after the last key copied.
    mutable: bool,
}

use Ty::*;

/// Every table of the data model, parents before children.
const TABLES: &[Table] = &[
    Table {
        name: "events",
        cols: &[
            ("site", Text),
            ("gateway", Text),
            ("epoch", Int),
            ("seq", Int),
            ("asset", Text),
            ("ts_ms", Int),
            ("kind", Text),
            ("body", Text),
            ("received_ms", Int),
        ],
        key: 4,
        overriding: false,
        mutable: false,
    },
    Table {
        name: "gateways",
        cols: &[("site", Text), ("gateway", Text), ("online", Bool), ("last_seen_ms", Int), ("status", Text)],
        key: 2,
        overriding: false,
        mutable: true,
    },
    Table {
        name: "gateway_offline",
        cols: &[("site", Text), ("gateway", Text), ("ts_ms", Int)],
        key: 3,
        overriding: false,
        mutable: false,
    },
    Table {
        name: "downtime",
        cols: &[
            ("site", Text),
            ("asset", Text),
            ("start_ms", Int),
            ("end_ms", Int),
            ("gateway", Text),
            ("reason", Text),
            ("first_out", Text),
            ("data_gap", Bool),
        ],
        key: 3,
        overriding: false,
        mutable: true,
    },
    Table {
        name: "dead_letters",
        cols: &[
            ("id", Int),
            ("topic", Text),
            ("received_ms", Int),
            ("kind", Text),
            ("reason", Text),
            ("size", Int),
            ("head", Bytes),
        ],
        key: 1,
        overriding: true,
        mutable: false,
    },
    Table {
        name: "people_import",
        cols: &[
            ("id", Int),
            ("kind", Text),
            ("file", Text),
            ("imported_ms", Int),
            ("added", Int),
            ("changed", Int),
            ("removed", Int),
        ],
        key: 1,
        overriding: false,
        mutable: false,
    },
    Table {
        name: "people_record",
        cols: &[("id", Int), ("kind", Text), ("key", Text), ("body", Text), ("import_id", Int), ("superseded_by", Int)],
        key: 1,
        overriding: false,
        mutable: true,
    },
    Table {
        name: "join_snapshot",
        cols: &[("event_key", Text), ("revision", Int), ("data_rev", Int), ("computed_ms", Int), ("body", Text)],
        key: 2,
        overriding: false,
        mutable: false,
    },
    Table {
        name: "escalation",
        cols: &[
            ("id", Int),
            ("stop_key", Text),
            ("site", Text),
            ("asset", Text),
            ("start_ms", Int),
            ("rung", Int),
            ("target", Text),
            ("reason", Text),
            ("skills", Text),
            ("person", Text),
            ("channel", Text),
            ("address", Text),
            ("availability", Text),
            ("claimed_ms", Int),
            ("state", Text),
            ("attempts", Int),
            ("sent_ms", Int),
            ("error", Text),
            ("token_hash", Bytes),
            ("token_expires_ms", Int),
            ("token_used_ms", Int),
        ],
        key: 1,
        overriding: true,
        // A pending message is sent, a token used, later.
        mutable: true,
    },
    Table {
        name: "escalation_ack",
        cols: &[
            ("stop_key", Text),
            ("site", Text),
            ("asset", Text),
            ("start_ms", Int),
            ("escalation_id", Int),
            ("person", Text),
            ("via", Text),
            ("ack_ms", Int),
        ],
        key: 1,
        overriding: false,
        mutable: false,
    },
];

/// Rows per chunk (one PostgreSQL transaction each).
const CHUNK: usize = 10_000;

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("SQLite store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("count check failed: {0}")]
    Count(String),
}

/// One table's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    /// Rows in SQLite.
    pub source: i64,
    /// Rows in PostgreSQL after the copy.
    pub target: i64,
    /// Rows copied by this run (0 for a table finished by an earlier run).
    pub this_run: i64,
}

/// A cell read from SQLite, ready to bind.
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

fn cell(v: ValueRef<'_>, ty: Ty) -> Cell {
    let int = match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) => Some(f as i64),
        _ => None,
    };
    match ty {
        Text => Cell::Text(match v {
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Null => None,
            _ => int.map(|i| i.to_string()),
        }),
        Int => Cell::Int(int),
        Bool => Cell::Bool(int.map(|i| i != 0)),
        Bytes => Cell::Bytes(match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
            _ => None,
        }),
    }
}

/// A key as saved in `migrate_progress`: a JSON array of its values.
fn key_json(cells: &[Cell]) -> String {
    let vals: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| match c {
            Cell::Text(t) => t.clone().map_or(serde_json::Value::Null, serde_json::Value::String),
            Cell::Int(i) => i.map_or(serde_json::Value::Null, serde_json::Value::from),
            Cell::Bool(b) => b.map_or(serde_json::Value::Null, serde_json::Value::Bool),
            Cell::Bytes(_) => serde_json::Value::Null,
        })
        .collect();
    serde_json::Value::Array(vals).to_string()
}

fn json_to_sqlite(v: &serde_json::Value) -> rusqlite::types::Value {
    match v {
        serde_json::Value::String(s) => rusqlite::types::Value::Text(s.clone()),
        serde_json::Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().unwrap_or(0)),
        _ => rusqlite::types::Value::Null,
    }
}

/// Copies every table of the SQLite store at `from` into `to`'s database (migrated to the current schema
/// first), resuming an earlier interrupted run; `progress` is called after each chunk.
///
/// # Errors
/// Unreadable source, unreachable or refusing target, or a count that differs at the end.
pub async fn run(from: &Path, to: &Target, mut progress: impl FnMut(&str, i64)) -> Result<Vec<Copied>, MigrateError> {
    let path = from.display().to_string();
    let lite = |source| MigrateError::Sqlite { path: path.clone(), source };
    if !from.is_file() {
        return Err(lite(rusqlite::Error::InvalidPath(from.to_path_buf())));
    }
    let src = crate::store::open_reader(from).map_err(|e| MigrateError::Sqlite {
        path: path.clone(),
        source: match e {
            crate::store::StoreError::Open { source, .. } => source,
            _ => rusqlite::Error::InvalidPath(from.to_path_buf()),
        },
    })?;
    let source_name = std::fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf()).display().to_string();
    let mut client = super::open(to).await?;
    let pg = |e: tokio_postgres::Error| MigrateError::Pg(to.sql_error(&e));
    let mut out = Vec::new();
    for t in TABLES {
        let row = client
            .query_opt(
                "SELECT last_key, rows FROM migrate_progress WHERE source = $1 AND tbl = $2",
                &[&source_name, &t.name],
            )
            .await
            .map_err(pg)?;
        // A table finished by an earlier run is still asked for rows past its last key (the source may have
        // grown since).
        let (mut last, mut copied) = match row {
            Some(r) if !t.mutable => (Some(r.get::<_, String>(0)).filter(|k| k != "[]"), r.get::<_, i64>(1)),
            _ => (None, 0),
        };
        let mut this_run = 0;
        let names: Vec<&str> = t.cols.iter().map(|c| c.0).collect();
        let keys = names[..t.key].join(", ");
        let marks = vec!["?"; t.key].join(", ");
        let select = |after: bool| {
            format!(
                "SELECT {} FROM {} {} ORDER BY {keys} LIMIT {CHUNK}",
                names.join(", "),
                t.name,
                if after { format!("WHERE ({keys}) > ({marks})") } else { String::new() }
            )
        };
        let casts: Vec<String> = t
            .cols
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                let ty = match ty {
                    Text => "text",
                    Int => "int8",
                    Bool => "bool",
                    Bytes => "bytea",
                };
                format!("${}::{ty}[]", i + 1)
            })
            .collect();
        let on_conflict = if t.mutable {
            let set: Vec<String> = names[t.key..].iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
            format!("({keys}) DO UPDATE SET {}", set.join(", "))
        } else {
            "DO NOTHING".to_string()
        };
        let insert = format!(
            "INSERT INTO {} ({}) {} SELECT * FROM unnest({}) ON CONFLICT {on_conflict}",
            t.name,
            names.join(", "),
            if t.overriding { "OVERRIDING SYSTEM VALUE" } else { "" },
            casts.join(", ")
        );
        loop {
            let params: Vec<rusqlite::types::Value> = match &last {
                Some(k) => serde_json::from_str::<Vec<serde_json::Value>>(k)
                    .unwrap_or_default()
                    .iter()
                    .map(json_to_sqlite)
                    .collect(),
                None => Vec::new(),
            };
            let mut stmt = src.prepare(&select(last.is_some())).map_err(lite)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter())).map_err(lite)?;
            let mut columns: Vec<Vec<Cell>> = t.cols.iter().map(|_| Vec::new()).collect();
            let mut n = 0usize;
            let mut last_key: Vec<Cell> = Vec::new();
            while let Some(r) = rows.next().map_err(lite)? {
                n += 1;
                for (i, (_, ty)) in t.cols.iter().enumerate() {
                    columns[i].push(cell(r.get_ref(i).map_err(lite)?, *ty));
                }
                last_key = (0..t.key).map(|i| cell(r.get_ref(i).unwrap_or(ValueRef::Null), t.cols[i].1)).collect();
            }
            drop(rows);
            drop(stmt);
            let finished = n < CHUNK;
            let arrays: Vec<Box<dyn ToSql + Sync + Send>> = columns.into_iter().map(to_array).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            let tx = client.transaction().await.map_err(pg)?;
            if n > 0 {
                tx.execute(&insert, &refs).await.map_err(pg)?;
                last = Some(key_json(&last_key));
            }
            copied += n as i64;
            this_run += n as i64;
            tx.execute(
                "INSERT INTO migrate_progress (source, tbl, last_key, rows, done) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source, tbl) DO UPDATE SET last_key = $3, rows = $4, done = $5",
                &[&source_name, &t.name, &last.clone().unwrap_or_else(|| "[]".into()), &copied, &finished],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            progress(t.name, copied);
            if finished {
                break;
            }
        }
        if t.cols[0].0 == "id" {
            // Identity columns continue after the copied ids.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('shiftlens.{0}', 'id'), GREATEST((SELECT max(id) FROM {0}), 1))",
                t.name
            );
            client.execute(&sql, &[]).await.map_err(pg)?;
        }
        let source: i64 = src.query_row(&format!("SELECT COUNT(*) FROM {}", t.name), [], |r| r.get(0)).map_err(lite)?;
        let target: i64 = client.query_one(&format!("SELECT count(*) FROM {}", t.name), &[]).await.map_err(pg)?.get(0);
        out.push(Copied { table: t.name, source, target, this_run });
    }
    let bad: Vec<String> = out
        .iter()
        .filter(|c| c.source != c.target)
        .map(|c| format!("{}: {} rows in SQLite, {} in PostgreSQL", c.table, c.source, c.target))
        .collect();
    if !bad.is_empty() {
        return Err(MigrateError::Count(bad.join("; ")));
    }
    Ok(out)
}

fn to_array(cells: Vec<Cell>) -> Box<dyn ToSql + Sync + Send> {
    let ty = cells.first().map_or(0, |c| match c {
        Cell::Text(_) => 0,
        Cell::Int(_) => 1,
        Cell::Bool(_) => 2,
        Cell::Bytes(_) => 3,
    });
    let mut text = Vec::new();
    let mut int = Vec::new();
    let mut boolean = Vec::new();
    let mut bytes = Vec::new();
    for c in cells {
        match c {
            Cell::Text(v) => text.push(v),
            Cell::Int(v) => int.push(v),
            Cell::Bool(v) => boolean.push(v),
            Cell::Bytes(v) => bytes.push(v),
        }
    }
    match ty {
        1 => Box::new(int),
        2 => Box::new(boolean),
        3 => Box::new(bytes),
        _ => Box::new(text),
    }
}

/// `shiftlens-collector migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The SQLite store to copy (a collector's `[store] path`); stop that collector first.
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// A collector config with `[store] backend = "postgres"`, or a url `postgresql://user@host/db`.
    #[arg(long)]
    pub to: String,
    /// With a url: the file holding the password.
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
    /// With a url: the CA of the server's certificate (TLS); without it the connection is plaintext, which
    /// needs a loopback host or --insecure.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    #[arg(long)]
    pub insecure: bool,
}

impl MigrateArgs {
    /// Runs the copy; returns the per-table summary.
    ///
    /// # Errors
    /// Bad arguments, or see [`run`].
    pub fn run(self) -> anyhow::Result<String> {
        let target = if self.to.contains("://") || self.to.contains('=') {
            let t = Target::new(&self.to, self.password_file.as_deref(), self.ca.as_deref())?;
            if self.ca.is_none() && !self.insecure && !t.config.get_hosts().iter().all(super::is_local) {
                anyhow::bail!("plaintext PostgreSQL to a non-loopback host: give --ca (TLS) or --insecure");
            }
            t
        } else {
            let config = crate::Config::load(Path::new(&self.to)).map_err(|e| anyhow::anyhow!("{e}"))?;
            if config.store.backend != crate::store::Backend::Postgres {
                anyhow::bail!("{}: [store] backend is not \"postgres\"", self.to);
            }
            Target::from_store(&config.store)?
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let from = self.from;
        let copied = rt.block_on(run(&from, &target, |table, rows| {
            tracing::info!(table, rows, "copied");
        }))?;
        let mut out = format!("{} -> {}\n", from.display(), target.at());
        for c in copied {
            out.push_str(&format!(
                "{:16} {:>12} rows in SQLite, {:>12} in PostgreSQL ({} copied by this run)\n",
                c.table, c.source, c.target, c.this_run
            ));
        }
        out.push_str("count check: OK\n");
        Ok(out)
    }
}
