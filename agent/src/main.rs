use anyhow::Context;
use clap::{Parser, Subcommand};
use shiftlens_agent::Config;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// ShiftLens edge agent: reads alarm and availability points from PLCs (Modbus, OPC UA), buffers
/// events in a SQLite outbox and forwards them over MQTT/TLS to the collector.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Validate a config and the files it names (TLS material, password files, the outbox directory); print
    /// every problem with file:line:col; exit code 2 on errors.
    Check {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Show what the running agent sees: uplink, backlog, outbox, clock and sources (exit 1 when it is not
    /// running).
    Status {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Read every configured point once and print a table.
    Probe {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Trust the OPC UA server certificate the agent rejected (moves it from pki/rejected to
    /// pki/trusted) and print its SHA-256 fingerprint for pinning.
    Trust {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
        /// The `[[opcua]]` id; needed when the config has several endpoints.
        #[arg(long)]
        endpoint: Option<String>,
        /// SHA-256 of the certificate to trust; needed when several were rejected.
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

fn main() -> ExitCode {
    one_malloc_arena();
    let own_code = own_code_read_as_run();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into the journal or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = own_code {
        tracing::debug!(error = %e, "cannot advise the kernel to read the agent's code only as it runs");
    }
    match cli.command {
        Command::Trust { config, endpoint, fingerprint } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match shiftlens_agent::trust::trust(&config, endpoint.as_deref(), fingerprint.as_deref()) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            release_freed_memory();
            drop_start_up_code();
            let result = runtime().context("cannot start the async runtime").and_then(|rt| {
                rt.block_on(shiftlens_agent::topology::run_with(config, || {
                    release_freed_memory();
                    drop_start_up_code();
                }))
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (text, running) = shiftlens_agent::health::state::status(
                &config.outbox.path,
                &config.health.state_file(&config.outbox.path),
                shiftlens_common::clock::now_ms(),
            );
            print!("{text}");
            if running {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Probe { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let report = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(shiftlens_agent::probe::run(&config)),
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            print!("{}", report.table());
            if report.unreachable.is_empty() {
                ExitCode::SUCCESS
            } else {
                for (device, why) in &report.unreachable {
                    eprintln!("error: could not reach {device}: {why}");
                }
                ExitCode::FAILURE
            }
        }
    }
}

/// The agent's runtime: two worker threads whatever the core count. A gateway's work is I/O (Modbus polls,
/// one MQTT connection, the outbox on its own thread) at about 1 % of a core; every further worker only
/// adds a stack and a malloc arena to the resident memory. At most four blocking threads (the default is 512),
/// each ending after 2 s idle (default 10 s): the uplink's outbox calls run there and wait on the outbox's
/// lock one at a time, so more threads would only wait (a 40 s run once saw the pool grow from 1 to 5 threads at
/// 10,000 points delivering; BENCHMARKS.md, "Agent with delivery"). A bound, not a measured saving.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
}

/// One malloc arena for every thread. glibc gives each thread that allocates its own arena (up to 8 per
/// core), and each keeps its own free pages: at 10,000 points delivering, the runtime's workers, the outbox
/// writer and the blocking pool held 1.6 MB in eight arenas beside the main heap (BENCHMARKS.md, "Agent with
/// delivery"). The agent allocates a few hundred times a second, so sharing one arena's lock costs nothing
/// measurable. Called first thing, before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator; M_ARENA_MAX may be set at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// The agent binary's own code and read-only data: `MADV_RANDOM` first thing, `MADV_PAGEOUT` after the config
/// is loaded and again once the sources run (see [`drop_start_up_code`]).
///
/// Why: by the end of start-up the binary's code is mostly resident (4.6–5.2 MB of its 6.4 MB `.text` at
/// 10,000 points), because the kernel maps the 64 kB around each page that runs (fault-around) and reads ahead
/// of each page it reads. Much of that ran once (config, clap, TLS set-up, SQLite schema). Paging those
/// mappings out after start-up, and reading them back without read-ahead, leaves resident what the steady
/// state runs (at 10,000 points delivering, steady RSS 11.7 -> 9.2-9.6 MB, peak 12.7 -> 10.7-11.6 MB:
/// BENCHMARKS.md, "Agent with delivery", fourth round). `MADV_RANDOM` alone does not do it (Linux 6.18): much
/// of the file is in the page cache before `main` runs, and fault-around maps cached pages whatever the advice;
/// it keeps the faults after a page-out from reading ahead (0.3 MB less resident than the page-out alone).
///
/// A failure (an older kernel without `MADV_PAGEOUT`, a `/proc` that cannot be read) only costs that memory: it
/// is logged at debug level and the agent goes on.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_own_code(advice: libc::c_int) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        // `start-end perms offset dev inode path`, the path after padding spaces; read-only mappings only.
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if fields.nth(3).map(str::trim_start) != Some(&*exe) || perms.as_bytes().get(1) != Some(&b'-') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: the range is a whole read-only mapping of this process's own binary, from /proc/self/maps;
        // these advices change only read-ahead and which pages are resident, never the contents.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads the binary back a page at a time when a page is missing ([`advise_own_code`]).
#[cfg(target_os = "linux")]
fn own_code_read_as_run() -> std::io::Result<()> {
    advise_own_code(libc::MADV_RANDOM)
}

/// Pages out the binary's code and read-only data (after the config is loaded, and once the sources run); what
/// runs next comes back as it runs ([`advise_own_code`]).
#[cfg(target_os = "linux")]
fn drop_start_up_code() {
    if let Err(e) = advise_own_code(libc::MADV_PAGEOUT) {
        tracing::debug!(error = %e, "cannot page out the agent's start-up code");
    }
}

#[cfg(not(target_os = "linux"))]
fn own_code_read_as_run() -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn drop_start_up_code() {}

/// Hands freed heap pages back to the OS: once after parsing the config (the TOML parser's tree for a
/// 10,000-point config is tens of MB) and once after the sources have taken their compact copies and the
/// config is dropped. glibc would otherwise keep most of those pages for the life of the process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns glibc's own free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// `check`: every error and warning on stderr, one a line; exit code 2 on errors, 0 otherwise.
fn check(path: &Path) -> ExitCode {
    let file = match shiftlens_common::config::ConfigFile::read(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let found = shiftlens_agent::config::check::run(&file, std::time::SystemTime::now());
    for e in found.errors.iter().chain(&found.warnings) {
        eprintln!("{e}");
    }
    if found.errors.is_empty() {
        match found.warnings.len() {
            0 => println!("{}: ok", path.display()),
            n => println!("{}: ok, {n} warning(s)", path.display()),
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Loads and validates a config; on problems prints each on its own line and gives exit code 2.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })
}
