//! Report latency over a generated plant year (50 assets, 300 people, 4 crews on DuPont, 100,000
//! downtime events, 1,000,000 alarm activations): `cargo bench -p shiftlens-collector --bench report`.
//! Prints the median of 5 runs of each step; the target is every report under 500 ms.
#![allow(clippy::unwrap_used)]

#[path = "../tests/http_support/mod.rs"]
mod http_support;

use shiftlens_collector::report::{self as r, coverage::GroupBy, mttr::Dim, pareto::ParetoBy, synth, Input};
use std::time::{Duration, Instant};

fn time<T>(name: &str, runs: usize, mut f: impl FnMut() -> T) -> T {
    let mut d: Vec<Duration> = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let s = Instant::now();
        out = Some(std::hint::black_box(f()));
        d.push(s.elapsed());
    }
    d.sort();
    println!("{name:<32} {:>10.1} ms", d[d.len() / 2].as_secs_f64() * 1000.0);
    out.unwrap()
}

fn main() {
    let size = synth::Size::YEAR;
    let plant = time("generate year", 1, || synth::year(42, size));
    println!(
        "plant: {} assets, {} people, {} downtime events, {} alarms, {} person-skills",
        plant.people.assets.len(),
        plant.people.people.len(),
        plant.downtime.len(),
        plant.alarms.records.len(),
        plant.people.person_skills.len()
    );
    let p = &plant.people;
    let joined = time("join (100k events)", 3, || r::join(p, &plant.downtime));
    let dir = tempfile::tempdir().unwrap();
    let mut conn = shiftlens_collector::store::people::open(&dir.path().join("bench.db")).unwrap();
    time("save snapshots (first, SQLite)", 1, || {
        shiftlens_collector::store::people::save_snapshots(&mut conn, 1, &joined, 0).unwrap()
    });
    time("save snapshots (unchanged)", 1, || {
        shiftlens_collector::store::people::save_snapshots(&mut conn, 1, &joined, 0).unwrap()
    });
    let inp = Input { people: p, events: &joined, from_ms: plant.from_ms, to_ms: plant.to_ms };
    let runs = 5;
    time("coverage by shift (year)", runs, || r::coverage::coverage(&inp, GroupBy::Shift));
    time("coverage by crew (year)", runs, || r::coverage::coverage(&inp, GroupBy::Crew));
    for (n, d) in [("asset", Dim::Asset), ("skill", Dim::Skill), ("shift", Dim::Shift), ("crew", Dim::Crew)] {
        time(&format!("mttr by {n}"), runs, || r::mttr::report(&inp, d));
    }
    time("pareto by asset", runs, || r::pareto::pareto(&inp, ParetoBy::Asset));
    time("pareto by missing skill", runs, || r::pareto::pareto(&inp, ParetoBy::Skill));
    time("gaps and readiness", runs, || r::gaps::gaps(&inp));
    time("training priorities", runs, || r::priority::priorities(&inp, 3));
    let mid = Input { to_ms: plant.from_ms + 180 * 86_400_000, ..inp };
    time("recertification (90 d)", runs, || r::recert::recert(&mid));
    let change: r::whatif::Change = "p0001:opc-ua:3".parse().unwrap();
    time("what-if (year)", runs, || r::whatif::what_if(&inp, &change));
    let (keys, recs) = (&plant.alarms.keys, &plant.alarms.records);
    let figures = time("alarm load (year, 1M alarms)", runs, || r::alarm_load::alarm_load(&inp, keys, recs));
    time("alarm load report (figures + rows)", runs, || {
        r::alarm_load::report(&inp, recs, &r::alarm_load::alarm_load(&inp, keys, recs))
    });
    // The same activations as stored events (raise, acknowledgement, clear), read back by the store.
    let adb = dir.path().join("alarms.db");
    let mut conn = shiftlens_collector::store::open_writer(&adb).unwrap();
    time("store 1M activations as events", 1, || {
        let tx = conn.transaction().unwrap();
        {
            let mut ins = tx
                .prepare("INSERT INTO events (gateway, epoch, seq, site, asset, ts_ms, kind, body, received_ms) VALUES ('gw-1', 1, ?1, ?2, ?3, ?4, 'alarm', ?5, ?4)")
                .unwrap();
            for (i, (k, ts, body)) in http_support::alarm_events(&plant.alarms).into_iter().enumerate() {
                ins.execute(rusqlite::params![i as i64, k.site, k.asset, ts, body]).unwrap();
            }
        }
        tx.commit().unwrap();
    });
    let raw = shiftlens_collector::store::open_reader(&adb).unwrap();
    time("scan the alarm rows only (SQLite)", 3, || {
        let mut st = raw
            .prepare("SELECT site, asset, ts_ms, body FROM events WHERE kind = 'alarm' AND +ts_ms < ?1 ORDER BY site, gateway, epoch, seq")
            .unwrap();
        let mut rows = st.query([i64::MAX]).unwrap();
        let mut n = 0usize;
        while let Some(r) = rows.next().unwrap() {
            n += r.get_ref(3).unwrap().as_str().unwrap().len() + r.get_ref(0).unwrap().as_str().unwrap().len();
        }
        n
    });
    let reader = shiftlens_collector::store::reads::Reader::open(&adb).unwrap();
    let loaded = time("load activations from the store", 3, || reader.alarms(i64::MAX).unwrap());
    assert_eq!(loaded.records.len(), recs.len());
    // The same rows (rounded as shown; sums over lines may add in another order).
    let again = r::alarm_load::alarm_load(&inp, &loaded.keys, &loaded.records);
    assert_eq!(
        r::alarm_load::report(&inp, &loaded.records, &again),
        r::alarm_load::report(&inp, recs, &figures),
        "the store's activations give the generator's figures"
    );
    time("join report rows", runs, || r::join::report(&inp));
}
