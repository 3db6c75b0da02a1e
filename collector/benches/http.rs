//! Server time of every dashboard page and API call on the generated plant year (50 assets, 300 people,
//! 100,000 downtime events, 1,000,000 alarm activations), read from each response's `Server-Timing`
//! header over a real loopback socket. Prints the median and worst of `RUNS` requests per URL, and the
//! one-off cost of loading and joining the year when the data changes.
//!
//! `cargo bench -p shiftlens-collector --bench http` (`HTTP_BENCH_SIZE=small` for a quick run).
//!
//! `HTTP_BENCH_PG=1`: the same year served from PostgreSQL as well, in the same run: a throw-away cluster
//! (tests/support/pg.rs: `initdb` in a temp dir, fsync on), the SQLite store copied into it by the
//! collector's `migrate`, a second router whose reads go to PostgreSQL. Prints the store reads of a cold
//! load (personnel, downtime, alarm activations) and the first request of each store, then every URL with
//! the SQLite and the PostgreSQL figures side by side and whether both answered the same body.
#![allow(clippy::unwrap_used)]

#[path = "../tests/http_support/mod.rs"]
mod http_support;
#[path = "../tests/support/pg.rs"]
mod pg;

use http_support::*;
use shiftlens_collector::report::synth::Size;
use shiftlens_collector::store::reads::{self, Reader};
use shiftlens_collector::Config;
use shiftlens_common::config::ConfigFile;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RUNS: usize = 7;
const WINDOW: &str = "from=2025-10-01&to=2026-01-01";

fn main() {
    let size = if std::env::var("HTTP_BENCH_SIZE").as_deref() == Ok("small") { SMALL } else { Size::YEAR };
    let with_pg = std::env::var("HTTP_BENCH_PG").is_ok_and(|v| !v.is_empty() && v != "0");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let t = Instant::now();
    let plant = plant(size);
    seed(&db, &plant);
    println!(
        "seeded {} downtime events, {} alarms, {} people, {} assets in {:.1} s",
        plant.downtime.len(),
        plant.alarms.records.len(),
        plant.people.people.len(),
        plant.people.assets.len(),
        t.elapsed().as_secs_f64()
    );
    drop(plant);
    let mut stores = vec![("SQLite", config(&db, ""))];
    let cluster = with_pg.then(|| pg::PgCluster::start(true));
    if let Some(cluster) = &cluster {
        cluster.create_db("bench");
        let text = format!(
            "{}path = {:?}\n\n[people]\ntimezone = \"Europe/Berlin\"\n\n[http]\nbind = \"127.0.0.1:0\"\n",
            cluster.store_toml("bench"),
            dir.path().join("postgres-reads").display().to_string()
        );
        let cfg = Config::from_file(&ConfigFile::from_text("collector.toml", text)).unwrap();
        let target = shiftlens_collector::store::pg::Target::from_store(&cfg.store).unwrap();
        let t = Instant::now();
        let copied = rt.block_on(shiftlens_collector::store::pg::migrate::run(&db, &target, |_, _| {})).unwrap();
        let rows: i64 = copied.iter().map(|c| c.target).sum();
        println!("copied into PostgreSQL by `migrate`: {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
        cluster.psql("bench", "VACUUM ANALYZE");
        reads::serve_from_postgres(&cfg.store).unwrap();
        stores.push(("PostgreSQL", cfg));
    }
    if cluster.is_some() {
        cold_reads(&stores);
    }
    // The join snapshots as a running collector has them (saved after an earlier load): the routers' first
    // load then saves nothing, so no background rebuild (after the store changed) runs while requests are
    // measured.
    let mut settle = Vec::new();
    for (name, cfg) in &stores {
        let t = Instant::now();
        let path = &cfg.store.path;
        let d = shiftlens_collector::query::Dataset::load(path, cfg.people_settings.clone(), None).unwrap();
        let load = t.elapsed();
        let s = d.save_snapshot(path).unwrap();
        let saved = t.elapsed() - load;
        let t = Instant::now();
        let again = d.save_snapshot(path).unwrap();
        println!(
            "{name}: load and join the year in-process {:.0} ms, save its {} join snapshots {:.0} ms, and again \
             ({} unchanged, as after each rebuild) {:.0} ms",
            load.as_secs_f64() * 1000.0,
            s.new,
            saved.as_secs_f64() * 1000.0,
            again.unchanged,
            t.elapsed().as_secs_f64() * 1000.0
        );
        settle.push(t.elapsed());
    }
    rt.block_on(run(&stores, &settle));
    drop(cluster);
}

/// Median and worst of `runs` calls of `f`, in ms.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut d: Vec<Duration> = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let s = Instant::now();
        out = Some(std::hint::black_box(f()));
        d.push(s.elapsed());
    }
    d.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(d[runs / 2]), ms(d[runs - 1]), out.unwrap())
}

/// The store reads behind a cold load (the dashboard's first request, and every rebuild after a data
/// change), through the read API the dataset uses, on one open reader, median of 3.
fn cold_reads(stores: &[(&str, Config)]) {
    println!("\n{:<48} {:>12} {:>12}", "store read (median of 3, ms)", stores[0].0, stores[1].0);
    let (mut first, mut again) =
        (format!("{:<48}", "open a reader (first)"), format!("{:<48}", "open a reader (again)"));
    let readers: Vec<Reader> = stores
        .iter()
        .map(|(_, cfg)| {
            let (ms, _, r) = timed(1, || Reader::open(&cfg.store.path).unwrap());
            first.push_str(&format!(" {ms:>12.1}"));
            drop(r);
            let (ms, _, r) = timed(1, || Reader::open(&cfg.store.path).unwrap());
            again.push_str(&format!(" {ms:>12.1}"));
            r
        })
        .collect();
    println!("{first}\n{again}");
    let read = |what: &str, f: &dyn Fn(&Reader, &Config) -> Result<usize, reads::ReadError>| {
        let mut line = format!("{what:<48}");
        let mut counts = Vec::new();
        for ((_, cfg), r) in stores.iter().zip(&readers) {
            let (median, _, n) = timed(3, || f(r, cfg));
            match n {
                Ok(n) => {
                    line.push_str(&format!(" {median:>12.1}"));
                    counts.push(n);
                }
                Err(e) => line.push_str(&format!("  error: {e}")),
            }
        }
        let same = counts.windows(2).all(|w| w[0] == w[1]);
        println!("{line}   {}", if same { format!("{} rows", counts[0]) } else { format!("rows differ: {counts:?}") });
    };
    read("personnel (all current records)", &|r, c| {
        let p = r.personnel(c.people_settings.clone())?;
        Ok(p.people.len() + p.assets.len())
    });
    read("downtime (every event)", &|r, _| Ok(r.downtime()?.len()));
    read("alarm activations (alarm-load's first request)", &|r, _| Ok(r.alarms(i64::MAX)?.records.len()));
    read("data version (every 2 s while requests come)", &|r, _| r.data_version().map(|_| 0));
    read("gateways", &|r, _| Ok(r.gateways()?.len()));
}

/// `settle`: how long each store's unchanged snapshot save took; after a store's first request the bench
/// waits twice that, so its background save (which follows every load) does not run into the next
/// store's first load or the measured requests.
async fn run(stores: &[(&str, Config)], settle: &[Duration]) {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for ((name, cfg), settle) in stores.iter().zip(settle) {
        let (addr, _) = spawn(cfg).await;
        let first = get(addr, &format!("/api/v1/overview?{WINDOW}")).await;
        assert_eq!(first.status, 200, "{}", first.body);
        println!(
            "{name}: load + join of the year on first request (and after each data change): {:.0} ms",
            first.server_ms()
        );
        tokio::time::sleep(*settle * 2).await;
        addrs.push(addr);
    }
    println!();

    let urls: Vec<String> = [
        "/",
        "/coverage",
        "/coverage?group=shift",
        "/downtime",
        "/mttr",
        "/mttr?dim=skill",
        "/priorities",
        "/recert",
        "/pareto",
        "/gaps",
        "/alarm-load",
        "/gateways",
        "/api/v1/overview",
        "/api/v1/join?limit=100",
        "/api/v1/join",
        "/api/v1/coverage",
        "/api/v1/mttr",
        "/api/v1/pareto?by=skill",
        "/api/v1/gaps",
        "/api/v1/priorities",
        "/api/v1/recert",
        "/api/v1/alarm-load",
        "/api/v1/whatif?change=p0001:opc-ua:4",
        "/api/v1/downtime?limit=10000",
        "/api/v1/downtime?format=csv&limit=10000",
        "/api/v1/gateways",
        "/api/v1/openapi.json",
        "/metrics",
        "/api/v1/overview?crew=A&line=line2",
        "/api/v1/mttr?from=2025-01-01&to=2026-01-01",
        "/api/v1/coverage?from=2025-01-01&to=2026-01-01",
        "/recert?horizon=365d",
        "/shift?date=2025-12-10&shift=day",
        "/api/v1/shift?date=2025-12-10&shift=day",
        "/shift",
        "/whatif?person=p0001&skill=opc-ua&level=4",
        "/repeats",
        "/api/v1/repeats",
        "/api/v1/repeats?from=2025-01-01&to=2026-01-01",
        "/training-effect",
        "/api/v1/training-effect",
        "/api/v1/training-effect?from=2025-01-01&to=2026-01-01",
    ]
    .iter()
    .map(|u| {
        if u.contains("from=")
            || u.contains("date=")
            || *u == "/shift"
            || u.starts_with("/gateways")
            || u.ends_with("openapi.json")
            || *u == "/metrics"
        {
            u.to_string()
        } else if u.contains('?') {
            format!("{u}&{WINDOW}")
        } else {
            format!("{u}?{WINDOW}")
        }
    })
    .collect();
    let mut header = format!("{:<70}", "request (window 2025-10-01..2026-01-01 unless given)");
    for (name, _) in stores {
        header.push_str(&format!(" {:>22}", format!("{name} median / max")));
    }
    header.push_str(&format!(" {:>10}", "bytes"));
    if stores.len() > 1 {
        header.push_str("  same body");
    }
    println!("{header}");
    let mut over = Vec::new();
    for u in &urls {
        let mut line = format!("{u:<70}");
        let mut bodies = Vec::new();
        for ((name, _), addr) in stores.iter().zip(&addrs) {
            let mut ms = Vec::new();
            let mut last = None;
            for _ in 0..RUNS {
                let r = get(*addr, u).await;
                if r.status != 200 {
                    last = Some(r);
                    break;
                }
                ms.push(r.server_ms());
                last = Some(r);
            }
            let r = last.unwrap();
            if r.status != 200 {
                let why = r.body.lines().next().unwrap_or("").chars().take(60).collect::<String>();
                line.push_str(&format!(" {:>22}", format!("HTTP {}", r.status)));
                println!("  {name} {u}: HTTP {}: {why}", r.status);
                bodies.push(None);
                continue;
            }
            ms.sort_by(f64::total_cmp);
            let (median, max) = (ms[RUNS / 2], ms[RUNS - 1]);
            line.push_str(&format!(" {:>22}", format!("{median:.1} / {max:.1}")));
            if median > 100.0 {
                over.push(format!("{name} {u}"));
            }
            bodies.push(Some(r.body));
        }
        let bytes = bodies.iter().flatten().next().map_or(0, String::len);
        line.push_str(&format!(" {bytes:>10}"));
        if bodies.len() > 1 {
            line.push_str(if bodies.windows(2).all(|w| w[0] == w[1]) { "  yes" } else { "  NO" });
        }
        println!("{line}");
    }
    if over.is_empty() {
        println!("\nevery page and API call: median server time under 100 ms");
    } else {
        println!("\nover 100 ms (median): {over:?}");
    }
}
