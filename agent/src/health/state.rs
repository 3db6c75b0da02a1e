//! The state file and `shiftlens-agent status`.
//!
//! The running agent writes a small JSON file next to its outbox (or at `[health] state_file`) every
//! `[health] state_interval` ([`state_path`]: `/var/lib/shiftlens/outbox.db` →
//! `/var/lib/shiftlens/outbox.state.json`), atomically (a
//! temp file in the same directory, then rename), so a reader never sees half a file. `status` reads that
//! file and the outbox database read-only (no write, no lock the agent waits on) and prints one screen. The
//! agent counts as not running when the file is missing, says `running: false` (a clean stop), is older than
//! [`stale_after`] or names a process that no longer exists.

use super::backlog::{human_bytes, human_duration};
use super::UplinkHealth;
use serde::{Deserialize, Serialize};
use shiftlens_common::status::SourceHealth;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the state file's layout.
pub const STATE_VERSION: u16 = 1;

/// Everything `status` and the metrics endpoint show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub version: u16,
    /// False in the last file a cleanly stopping agent writes.
    pub running: bool,
    pub pid: u32,
    /// When this file was written, Unix ms.
    pub written_ms: i64,
    /// How often it is written.
    pub interval_ms: u64,
    pub agent_version: String,
    pub site: String,
    pub gateway: String,
    /// `[uplink] broker` as configured.
    pub broker: String,
    pub uplink: UplinkHealth,
    pub outbox: OutboxFigures,
    /// The backlog alert in force, if any.
    pub backlog_alert: Option<String>,
    pub sources: Vec<SourceHealth>,
    pub clock_ok: bool,
    /// The metrics endpoint's address, when it is on.
    pub metrics: Option<String>,
}

/// The outbox as the agent last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxFigures {
    pub path: PathBuf,
    /// Unsent (unconfirmed) events.
    pub depth: u64,
    /// Bytes counted against `max_bytes`.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Timestamp of the oldest unsent event, Unix ms.
    pub oldest_ts_ms: Option<i64>,
    /// Events dropped since the outbox was created.
    pub dropped: u64,
}

/// The state file of the outbox at `outbox`.
pub fn state_path(outbox: &Path) -> PathBuf {
    outbox.with_extension("state.json")
}

/// Writes `state` to `path` atomically (temp file, then rename).
///
/// # Errors
/// The directory is not writable, or the disk is full.
pub fn write(path: &Path, state: &AgentState) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads a state file.
///
/// # Errors
/// A missing or unreadable file, or one that is not a state file.
pub fn read(path: &Path) -> Result<AgentState, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not an agent state file: {e}", path.display()))
}

/// A state file older than this means the agent that wrote it is gone (or hung).
pub fn stale_after(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms.saturating_mul(3)) + Duration::from_secs(5)
}

/// The outbox read directly, read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbFigures {
    pub depth: u64,
    pub bytes: u64,
    pub oldest_ts_ms: Option<i64>,
    pub dropped: u64,
}

/// Reads the outbox database at `path` read-only; it never writes and holds its read transaction only for
/// the two queries.
///
/// # Errors
/// A missing or unreadable database.
pub fn read_outbox(path: &Path) -> Result<DbFigures, String> {
    use rusqlite::{OpenFlags, OptionalExtension};
    let err = |e: rusqlite::Error| format!("cannot read outbox {}: {e}", path.display());
    if !path.exists() {
        return Err(format!("outbox {} does not exist", path.display()));
    }
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(err)?;
    let (depth, bytes): (i64, i64) = conn
        .query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err)?;
    let oldest_ts_ms: Option<i64> =
        conn.query_row("SELECT ts_ms FROM events ORDER BY seq LIMIT 1", [], |r| r.get(0)).optional().map_err(err)?;
    let dropped: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'dropped'", [], |r| r.get(0))
        .optional()
        .map_err(err)?
        .unwrap_or(0);
    Ok(DbFigures {
        depth: u64::try_from(depth).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
        oldest_ts_ms,
        dropped: u64::try_from(dropped).unwrap_or(0),
    })
}

/// Whether a process with this id exists (Linux: /proc; elsewhere assumed).
fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// What `status` found about the agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Running,
    /// Not running, with the reason in plain words.
    NotRunning(String),
}

/// Decides whether the agent that wrote `state` still runs, at `now_ms`.
pub fn liveness(state: &AgentState, now_ms: i64, pid_exists: impl Fn(u32) -> bool) -> Liveness {
    let age = Duration::from_millis(u64::try_from(now_ms - state.written_ms).unwrap_or(0));
    if !state.running {
        Liveness::NotRunning(format!("the agent stopped cleanly {} ago", human_duration(age)))
    } else if !pid_exists(state.pid) {
        Liveness::NotRunning(format!(
            "process {} is gone (crashed or killed {} ago or earlier)",
            state.pid,
            human_duration(age)
        ))
    } else if age > stale_after(state.interval_ms) {
        Liveness::NotRunning(format!(
            "the state file was last written {} ago (every {} while running): the agent is hung or gone",
            human_duration(age),
            human_duration(Duration::from_millis(state.interval_ms))
        ))
    } else {
        Liveness::Running
    }
}

/// The one-screen view. `state` is the last state file (if any), `db` the outbox read now (if readable).
pub fn render(
    outbox: &Path,
    state: Result<&AgentState, &str>,
    live: &Liveness,
    db: Result<&DbFigures, &str>,
    now_ms: i64,
) -> String {
    let ago = |ms: i64| human_duration(Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0)));
    let mut o = String::new();
    match (live, state) {
        (Liveness::Running, Ok(s)) => {
            let _ = writeln!(
                o,
                "agent      RUNNING  pid {}, version {}, {}/{}, state written {} ago",
                s.pid,
                s.agent_version,
                s.site,
                s.gateway,
                ago(s.written_ms)
            );
        }
        (Liveness::NotRunning(why), _) => {
            let _ = writeln!(o, "agent      NOT RUNNING  {why}");
        }
        (Liveness::Running, Err(_)) => {}
    }
    if let Err(e) = state {
        let _ = writeln!(o, "           {e}");
    }
    if let Ok(s) = state {
        let running = *live == Liveness::Running;
        let u = &s.uplink;
        let link = match (running, u.connected) {
            (false, true) => "(last known) CONNECTED",
            (false, false) => "(last known) NOT CONNECTED",
            (true, true) => "CONNECTED",
            (true, false) => "NOT CONNECTED",
        };
        let since = u.since_ms.map(|t| format!(" for {}", ago(t))).unwrap_or_default();
        let _ = writeln!(o, "uplink     {link}{since}  {}", s.broker);
        if !u.connected {
            if let Some(e) = &u.last_error {
                let _ = writeln!(o, "           reason: {e}");
            }
            if let Some(a) = &u.last_action {
                let _ = writeln!(o, "           action: {a}");
            }
        }
        let last_ack =
            u.last_ack_ms.map_or("never (since the agent started)".to_string(), |t| format!("{} ago", ago(t)));
        let _ = writeln!(o, "           last ack: {last_ack}; failed connects since start: {}", u.failures);
    }
    // The backlog: from the database when it could be read (current even when the agent is gone).
    let (depth, bytes, oldest, dropped, source) = match (db, state) {
        (Ok(d), _) => (d.depth, d.bytes, d.oldest_ts_ms, d.dropped, "read now"),
        (Err(_), Ok(s)) => {
            (s.outbox.depth, s.outbox.bytes, s.outbox.oldest_ts_ms, s.outbox.dropped, "from the state file")
        }
        (Err(_), Err(_)) => (0, 0, None, 0, ""),
    };
    if db.is_ok() || state.is_ok() {
        let oldest = oldest.map_or("none".to_string(), |t| format!("{} old", ago(t)));
        let _ = writeln!(o, "backlog    {depth} event(s) unsent, oldest {oldest} ({source})");
        let bound = state.map(|s| s.outbox.max_bytes).ok().filter(|m| *m > 0);
        let share = bound.map(|m| format!(" of {} ({} %)", human_bytes(m), u128::from(bytes) * 100 / u128::from(m)));
        let _ = writeln!(
            o,
            "outbox     {}{}, dropped since created: {dropped}  {}",
            human_bytes(bytes),
            share.unwrap_or_default(),
            outbox.display()
        );
    }
    if let Err(e) = db {
        let _ = writeln!(o, "           {e}");
    }
    if let Ok(s) = state {
        if let Some(a) = &s.backlog_alert {
            let _ = writeln!(o, "           ALERT: {a}");
        }
        let _ = writeln!(
            o,
            "clock      {}",
            if s.clock_ok { "ok" } else { "NOT OK (unsynchronised or jumped; see the log)" }
        );
        if s.sources.is_empty() {
            let _ = writeln!(o, "sources    none configured");
        }
        for (i, src) in s.sources.iter().enumerate() {
            let head = if i == 0 { "sources" } else { "" };
            let what = if src.connected { "connected".to_string() } else { "LOST".to_string() };
            let err = src.error.as_ref().map(|e| format!("  last error: {e}")).unwrap_or_default();
            let _ = writeln!(o, "{head:<10} {:<16} {what}{err}", src.id);
        }
        if let Some(m) = &s.metrics {
            let _ = writeln!(o, "metrics    http://{m}/metrics");
        }
    }
    o
}

/// `shiftlens-agent status` for the outbox at `outbox` and the state file at `path`: the screen, and whether
/// the agent runs.
pub fn status(outbox: &Path, path: &Path, now_ms: i64) -> (String, bool) {
    let state = read(path);
    let live = match &state {
        Ok(s) => liveness(s, now_ms, process_exists),
        Err(_) if !path.exists() => Liveness::NotRunning(format!(
            "no state file {} (the agent has not run with this config, or cannot write there)",
            path.display()
        )),
        Err(e) => Liveness::NotRunning(e.clone()),
    };
    let db = read_outbox(outbox);
    let state_shown = match &state {
        Ok(s) => Ok(s),
        Err(_) => Err("no agent state to show"),
    };
    let text = render(outbox, state_shown, &live, db.as_ref().map_err(String::as_str), now_ms);
    (text, live == Liveness::Running)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    fn state() -> AgentState {
        AgentState {
            version: STATE_VERSION,
            running: true,
            pid: 4242,
            written_ms: NOW - 1_000,
            interval_ms: 2_000,
            agent_version: "0.1.0".into(),
            site: "plant-a".into(),
            gateway: "gw-1".into(),
            broker: "mqtts://collector.plant:8883".into(),
            uplink: UplinkHealth {
                connected: false,
                since_ms: Some(NOW - 125_000),
                last_error: Some(
                    "TLS: the broker's certificate is not signed by the configured CA (UnknownIssuer)".into(),
                ),
                last_action: Some("set [uplink] ca to the CA file that signed the broker's certificate".into()),
                last_ack_ms: Some(NOW - 130_000),
                failures: 17,
            },
            outbox: OutboxFigures {
                path: "/var/lib/shiftlens/outbox.db".into(),
                depth: 1234,
                bytes: 3 << 20,
                max_bytes: 256 << 20,
                oldest_ts_ms: Some(NOW - 130_000),
                dropped: 0,
            },
            backlog_alert: None,
            sources: vec![
                SourceHealth { id: "opc-1".into(), connected: false, error: Some("BadCertificateUntrusted".into()) },
                SourceHealth { id: "plc-1".into(), connected: true, error: None },
            ],
            clock_ok: true,
            metrics: Some("127.0.0.1:9101".into()),
        }
    }

    #[test]
    fn state_path_is_next_to_the_outbox() {
        assert_eq!(
            state_path(Path::new("/var/lib/shiftlens/outbox.db")),
            Path::new("/var/lib/shiftlens/outbox.state.json")
        );
        assert_eq!(state_path(Path::new("/data/outbox")), Path::new("/data/outbox.state.json"));
    }

    #[test]
    fn liveness_table() {
        let yes = |_| true;
        let no = |_| false;
        let s = state();
        assert_eq!(liveness(&s, NOW, yes), Liveness::Running);
        let stopped = AgentState { running: false, ..state() };
        assert!(matches!(liveness(&stopped, NOW, yes), Liveness::NotRunning(w) if w.contains("stopped cleanly")));
        assert!(matches!(liveness(&s, NOW, no), Liveness::NotRunning(w) if w.contains("process 4242 is gone")));
        // Stale after 3 intervals + 5 s = 11 s.
        assert_eq!(liveness(&s, s.written_ms + 11_000, yes), Liveness::Running);
        assert!(
            matches!(liveness(&s, s.written_ms + 11_001, yes), Liveness::NotRunning(w) if w.contains("hung or gone"))
        );
    }

    #[test]
    fn the_screen_shows_uplink_backlog_outbox_clock_and_sources() {
        let s = state();
        let db = DbFigures { depth: 1300, bytes: 4 << 20, oldest_ts_ms: Some(NOW - 131_000), dropped: 2 };
        let text = render(Path::new("/var/lib/shiftlens/outbox.db"), Ok(&s), &Liveness::Running, Ok(&db), NOW);
        for want in [
            "agent      RUNNING  pid 4242, version 0.1.0, plant-a/gw-1, state written 1s ago",
            "uplink     NOT CONNECTED for 2m 5s  mqtts://collector.plant:8883",
            "reason: TLS: the broker's certificate is not signed by the configured CA (UnknownIssuer)",
            "action: set [uplink] ca",
            "last ack: 2m 10s ago; failed connects since start: 17",
            "backlog    1300 event(s) unsent, oldest 2m 11s old (read now)",
            "outbox     4.0 MiB of 256.0 MiB (1 %), dropped since created: 2  /var/lib/shiftlens/outbox.db",
            "clock      ok",
            "sources    opc-1            LOST  last error: BadCertificateUntrusted",
            "           plc-1            connected",
            "metrics    http://127.0.0.1:9101/metrics",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.lines().count() <= 24, "one screen:\n{text}");
        // Without the database, the state file's figures.
        let text = render(Path::new("/x/outbox.db"), Ok(&s), &Liveness::Running, Err("cannot read"), NOW);
        assert!(text.contains("1234 event(s) unsent, oldest 2m 10s old (from the state file)"), "{text}");
        assert!(text.contains("cannot read"), "{text}");
    }

    #[test]
    fn not_running_is_said_first() {
        let live = Liveness::NotRunning("process 4242 is gone".into());
        let db = DbFigures { depth: 5, bytes: 100, oldest_ts_ms: None, dropped: 0 };
        let text = render(Path::new("/x/outbox.db"), Ok(&state()), &live, Ok(&db), NOW);
        assert!(text.starts_with("agent      NOT RUNNING  process 4242 is gone"), "{text}");
        assert!(text.contains("uplink     (last known) NOT CONNECTED for 2m 5s"), "{text}");
        let text = render(Path::new("/x/outbox.db"), Err("no agent state to show"), &live, Ok(&db), NOW);
        assert!(text.contains("backlog    5 event(s) unsent, oldest none (read now)"), "{text}");
    }

    #[test]
    fn the_file_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = state_path(&dir.path().join("outbox.db"));
        let s = state();
        write(&path, &s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&path), Ok(s));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "{").unwrap_or_else(|e| panic!("{e}"));
        assert!(read(&path).is_err_and(|e| e.contains("not an agent state file")));
    }
}
