//! The PostgreSQL store backend (`[store] backend = "postgres"`): the same data model as the SQLite store,
//! in the schema `shiftlens` of a database that several collectors may share.
//!
//! - [`config`]: validation of `url`, `password_file`, `ca` and `insecure` (no I/O);
//! - [`Target`]: where and how to connect (password read from its file, TLS verified against `ca`);
//! - [`migrations`]: the schema, tracked in `shiftlens.schema_version`; a newer version than this build
//!   knows is refused;
//! - [`writer`]: the writer thread, with the same [`WriteOp`](super::WriteOp) in and
//!   [`Committed`](super::Committed) out as SQLite's, so acks still go out only after a commit;
//! - [`sql`]: the statements;
//! - [`read`]: blocking reads for the dashboard, the CLI and the feed's line lookup; [`alarms`]: the
//!   alarm-load report's alarm activations;
//! - [`escalations`]: escalation state (claims, deliveries, acknowledgements) shared by every collector,
//!   each site's ladder run by the site's owner;
//! - [`migrate`]: copying a SQLite store into PostgreSQL (`shiftlens-collector migrate`).
//!
//! The password is never kept in the config nor in a value that is logged: [`Target`]'s `Debug` shows the
//! host and database only.

pub mod alarms;
pub mod config;
pub mod escalations;
pub mod migrate;
pub mod migrations;
pub mod owner;
pub mod read;
pub mod sql;
pub mod writer;

use super::StoreConfig;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Client;

/// Why PostgreSQL could not be used. Each message is one line that names the database.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("bad PostgreSQL url: {0}")]
    Url(String),
    #[error("cannot read the PostgreSQL password file {path}: {source}")]
    Password { path: PathBuf, source: std::io::Error },
    #[error("PostgreSQL CA {path}: {what}")]
    Ca { path: PathBuf, what: String },
    #[error("cannot connect to PostgreSQL at {at}: {cause}")]
    Connect { at: String, cause: String },
    #[error(
        "PostgreSQL at {at}: the store's schema version {found} is newer than this collector knows ({known}); \
         run a collector at least as new as the one that wrote it"
    )]
    Newer { at: String, found: i32, known: i32 },
    #[error("PostgreSQL at {at}: {cause}")]
    Sql { at: String, cause: String },
}

/// A one-line cause of a PostgreSQL client error: the server's message for a database error, else the
/// error and its sources.
pub fn cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// True for a host whose traffic never leaves the machine: a Unix socket, `localhost`, a loopback address.
pub fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Where a collector's PostgreSQL store is and how to reach it.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    at: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("at", &self.at).field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

/// How long a connection attempt may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// The `[store]` section's database (validated beforehand by [`config::validate`]).
    ///
    /// # Errors
    /// A bad url, an unreadable password file or CA.
    pub fn from_store(c: &StoreConfig) -> Result<Self, PgError> {
        let Some(pg) = &c.postgres else { return Err(PgError::Url("[store] has no url".into())) };
        Self::new(&pg.url, pg.password_file.as_deref(), pg.ca.as_deref())
    }

    /// A database from a url, the password from `password_file` (if any), TLS verified against `ca` (if
    /// any; without it the connection is plaintext).
    ///
    /// # Errors
    /// A bad url, an unreadable password file or CA.
    pub fn new(url: &str, password_file: Option<&Path>, ca: Option<&Path>) -> Result<Self, PgError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PgError::Url("no host".into()));
        }
        let at = describe(&config);
        if let Some(path) = password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| PgError::Password { path: path.to_path_buf(), source })?;
            config.password(text.trim_end_matches(['\n', '\r']));
        }
        let tls = match ca {
            Some(ca) => {
                config.ssl_mode(SslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(ca)?))
            }
            None => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(30))
            .application_name("shiftlens-collector")
            // Acks rest on commits being durable: a server (or DBA) default of synchronous_commit = off
            // would let a server crash lose commits already acked.
            .options("-c search_path=shiftlens -c synchronous_commit=on");
        Ok(Self { config, tls, at })
    }

    /// `host:port/dbname`, for messages and logs.
    pub fn at(&self) -> &str {
        &self.at
    }

    /// Connects; the connection runs as a task on the current tokio runtime until the client is dropped or
    /// the server goes away.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let fail = |e: tokio_postgres::Error| PgError::Connect { at: self.at.clone(), cause: cause(&e) };
        let at = self.at.clone();
        let on_end = move |r: Result<(), tokio_postgres::Error>| {
            if let Err(e) = r {
                tracing::warn!(db = %at, error = %cause(&e), "PostgreSQL connection ended");
            }
        };
        match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(fail)?;
                tokio::spawn(async move { on_end(conn.await) });
                Ok(client)
            }
            None => {
                let (client, conn) = self.config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
                tokio::spawn(async move { on_end(conn.await) });
                Ok(client)
            }
        }
    }

    /// The error for a failed statement.
    pub fn sql_error(&self, e: &tokio_postgres::Error) -> PgError {
        PgError::Sql { at: self.at.clone(), cause: cause(e) }
    }
}

/// `host:port/dbname` of a config (every host, comma-separated).
fn describe(c: &tokio_postgres::Config) -> String {
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(h) => format!("{h}:{port}"),
                Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    format!("{}/{}", hosts.join(","), c.get_dbname().unwrap_or(c.get_user().unwrap_or("")))
}

/// A TLS client config that trusts only the CA in `ca` (and checks the server's name).
fn client_tls(ca: &Path) -> Result<rustls::ClientConfig, PgError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |what: String| PgError::Ca { path: ca.to_path_buf(), what };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(format!("cannot read: {e}")))?;
    for c in certs {
        roots.add(c.map_err(|e| bad(format!("bad certificate: {e}")))?).map_err(|e| bad(format!("bad CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connects and brings the schema to this build's version.
///
/// # Errors
/// Unreachable, refused, or a schema newer than this build knows.
pub async fn open(target: &Target) -> Result<Client, PgError> {
    let mut client = target.connect().await?;
    migrations::to_latest(&mut client, target).await?;
    Ok(client)
}
