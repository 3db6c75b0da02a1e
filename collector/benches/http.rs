//! Server time of every dashboard page and API call on the generated plant year (50 assets, 300 people,
//! 100,000 downtime events, 1,000,000 alarm activations), read from each response's `Server-Timing`
//! header over a real loopback socket. Prints the median and worst of `RUNS` requests per URL, and the
//! one-off cost of loading and joining the year when the data changes.
//!
//! `cargo bench -p shiftlens-collector --bench http` (`HTTP_BENCH_SIZE=small` for a quick run).
#![allow(clippy::unwrap_used)]

#[path = "../tests/http_support/mod.rs"]
mod http_support;

use http_support::*;
use shiftlens_collector::report::synth::Size;
use std::time::Instant;

const RUNS: usize = 7;
const WINDOW: &str = "from=2025-10-01&to=2026-01-01";

fn main() {
    let size = if std::env::var("HTTP_BENCH_SIZE").as_deref() == Ok("small") { SMALL } else { Size::YEAR };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(size));
}

async fn run(size: Size) {
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
    let (addr, _) = spawn(&config(&db, "")).await;
    let first = get(addr, &format!("/api/v1/overview?{WINDOW}")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    println!("load + join of the year on first request (and after each data change): {:.0} ms\n", first.server_ms());

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
    println!(
        "{:<70} {:>10} {:>10} {:>10}",
        "request (window 2025-10-01..2026-01-01 unless given)", "median ms", "max ms", "bytes"
    );
    let mut over = Vec::new();
    for u in &urls {
        let mut ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..RUNS {
            let r = get(addr, u).await;
            assert_eq!(r.status, 200, "{u}: {}", r.body);
            ms.push(r.server_ms());
            bytes = r.body.len();
        }
        ms.sort_by(f64::total_cmp);
        let (median, max) = (ms[RUNS / 2], ms[RUNS - 1]);
        println!("{u:<70} {median:>10.1} {max:>10.1} {bytes:>10}");
        if median > 100.0 {
            over.push(u.clone());
        }
    }
    if over.is_empty() {
        println!("\nevery page and API call: median server time under 100 ms");
    } else {
        println!("\nover 100 ms (median): {over:?}");
    }
}
