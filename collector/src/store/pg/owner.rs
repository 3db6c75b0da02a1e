//! The sites this collector owns in a shared PostgreSQL store, as its store writer holds them: the writer
//! takes a site's ownership with a session-level advisory lock (`store::pg::writer`) and publishes the set
//! here; work done once per site across collectors (escalation's ladder) runs only for these sites, and
//! checks the same lock in the database ([`HOLDS`]) before each step it must not repeat.

use std::collections::BTreeSet;

/// The writer's session and the sites whose lock it holds. `pid` 0: no session (nothing owned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// The writer session's backend process id (`pg_backend_pid()`), which holds the locks.
    pub pid: i32,
    pub sites: BTreeSet<String>,
}

/// Published by the writer whenever its owned sites change.
pub type OwnedSites = tokio::sync::watch::Receiver<Owned>;

/// SQL condition: the backend `$pid` holds the ownership lock of site `$site` (the key
/// `store::pg::sql::try_own` takes; a bigint advisory key shows in `pg_locks` as its two halves).
pub const HOLDS: &str = "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $pid::int4
    AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = hashtextextended('shiftlens.site:' || $site::text, 0))";

/// [`HOLDS`] with its placeholders replaced by the statement's parameter numbers.
pub fn holds(pid: usize, site: usize) -> String {
    HOLDS.replace("$pid", &format!("${pid}")).replace("$site", &format!("${site}"))
}

/// This session's backend process id (the `pid` that holds its locks).
///
/// # Errors
/// Statement failures.
pub async fn backend_pid(c: &impl tokio_postgres::GenericClient) -> Result<i32, tokio_postgres::Error> {
    Ok(c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
}
