//! A throw-away PostgreSQL cluster for tests and benches: `initdb` into a temp dir (as the `postgres` user
//! when running as root, since PostgreSQL refuses to run as root), on a free port on 127.0.0.1, with its Unix
//! socket in the temp dir; password login over TCP (the password in a file, as a collector reads it); each
//! test creates its own database. The cluster is stopped on drop.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser's password (in [`PgCluster::password_file`]).
pub const PASSWORD: &str = "throwaway-test-secret";

pub struct PgCluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// The directory of `initdb`, `pg_ctl` and `postgres`: the newest `/usr/lib/postgresql/*/bin` (Debian),
/// else a directory on PATH that holds all three.
pub fn bin_dir() -> Option<PathBuf> {
    let complete = |d: &PathBuf| ["initdb", "pg_ctl", "postgres"].iter().all(|t| d.join(t).is_file());
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(complete)
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop().or_else(|| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(complete)
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgCluster {
    /// Creates and starts a cluster. `durable`: fsync as in production (benches); off for tests, which
    /// never crash the machine.
    pub fn start(durable: bool) -> Self {
        let bin = bin_dir().expect("PostgreSQL's initdb not found (install Debian's postgresql; .ci/run does)");
        let dir = tempfile::Builder::new().prefix("shiftlens-pg-").tempdir().unwrap();
        let as_postgres = is_root();
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        if as_postgres {
            let ok = Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path()).status().unwrap();
            assert!(ok.success(), "cannot give the temp dir to the postgres user");
        }
        let data = dir.path().join("data");
        let out = Cluster { bin: &bin, as_postgres }.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                dir.path().join("pw").as_os_str(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let conf = if durable {
            // The server's defaults, as a plant's database gets them unless its DBA tunes it.
            ""
        } else {
            // synchronous_commit off on the server, as a DBA might set it: the collector turns it on for its
            // own sessions, or a server killed by `pg_ctl stop -m immediate` would lose acked commits.
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        };
        let extra =
            format!("listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n{conf}", dir.path().display());
        let mut f = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut f, extra.as_bytes()).unwrap();
        let cluster = Self { dir, port: free_port(), bin: bin.clone(), as_postgres };
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        Cluster { bin: &self.bin, as_postgres: self.as_postgres }.run(tool, args)
    }

    /// Starts the server (again) on its port and waits until it takes connections.
    pub fn pg_ctl_start(&self) {
        let opts = format!("-p {}", self.port);
        let log = self.dir.path().join("log");
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (connections are cut, as when the database host fails).
    pub fn pg_ctl_stop(&self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D".as_ref(), data.as_os_str(), "-m".as_ref(), "immediate".as_ref(), "-w".as_ref(), "stop".as_ref()],
        );
    }

    /// CPU seconds used so far by the server's running processes (postmaster and its children), for
    /// benches: from `/proc`, 10 ms ticks.
    pub fn server_cpu_s(&self) -> f64 {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
        let pid: u32 = pid.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        let mut ticks = 0.0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let this: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let ppid: u32 = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            if pid != 0 && (this == pid || ppid == pid) {
                ticks += fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
            }
        }
        ticks / 100.0
    }

    /// The password file a collector's `password_file` can name (readable by this process).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pw")
    }

    /// Runs SQL through psql on the Unix socket as the superuser; panics on failure; returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = Some(self.bin.join("psql")).filter(|p| p.is_file()).unwrap_or_else(|| "psql".into());
        let out = Command::new(psql)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates database `name`; returns its url (TCP on loopback, user postgres, no password in it).
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Collector config `text` with its `[store]` section replaced by database `db`'s.
    pub fn with_store(&self, text: &str, db: &str) -> String {
        let start = text.find("[store]").unwrap();
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        format!("{}{}{}", &text[..start], self.store_toml(db), &text[end..])
    }

    /// `[store]` text for a collector using database `db`.
    pub fn store_toml(&self, db: &str) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.url(db),
            self.password_file().display()
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.pg_ctl_stop();
    }
}

struct Cluster<'a> {
    bin: &'a Path,
    as_postgres: bool,
}

impl Cluster<'_> {
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).current_dir("/").output().unwrap()
    }
}
