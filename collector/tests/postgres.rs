//! The PostgreSQL store with a real PostgreSQL: a throw-away cluster per test binary (support/pg.rs), a
//! database per test. `check` and `run` errors, exactly-once ingest (also across two collectors), a
//! database restart during ingest, `migrate` from SQLite, and hostile payloads dead-lettered into PostgreSQL.
#![allow(clippy::unwrap_used)]

mod http_support;
mod support;

use shiftlens_collector::{feed, metrics, topology, Config};
use shiftlens_common::config::ConfigFile;
use std::collections::BTreeSet;
use std::path::Path;
use support::pg::PgCluster;
use support::*;

/// An mTLS embedded-broker collector config with its store in PostgreSQL database `db` of `pg`.
fn pg_config_text(pg: &PgCluster, dir: &Path, pki: &Pki, db: &str) -> String {
    pg.with_store(&config_text(dir, &pki.leaf("localhost"), ""), db)
}

fn pg_config(pg: &PgCluster, dir: &Path, pki: &Pki, db: &str) -> Config {
    let text = pg_config_text(pg, dir, pki, db);
    Config::from_file(&ConfigFile::from_text(dir.join("collector.toml"), text)).unwrap()
}

fn collector_cmd(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector")).args(args).arg(config).output().unwrap()
}

#[test]
fn check_names_bad_postgres_keys_and_run_fails_in_one_line_when_the_database_is_unreachable_or_newer() {
    let pg = PgCluster::start(false);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, "[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl:hunter2@db.example/sl\"\n").unwrap();
    let out = collector_cmd(&["check", "--config"], &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("collector.toml:3:7: url holds a password"), "{err}");
    assert!(err.contains("collector.toml:3:7: plaintext PostgreSQL to a non-loopback host"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    // Nobody listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pki = Pki::new(dir.path(), "plant");
    let text =
        pg_config_text(&pg, dir.path(), &pki, "nowhere").replace(&format!(":{}/", pg.port), &format!(":{port}/"));
    std::fs::write(&cfg, &text).unwrap();
    let out = collector_cmd(&["check", "--config"], &cfg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = collector_cmd(&["run", "--config"], &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = err.lines().find(|l| l.contains("cannot connect to PostgreSQL")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("127.0.0.1:{port}/nowhere")) && line.contains("refused"), "{line}");

    // A database written by a newer collector.
    let name = "newer_schema";
    pg.create_db(name);
    std::fs::write(&cfg, pg_config_text(&pg, dir.path(), &pki, name)).unwrap();
    pg.psql(
        name,
        "CREATE SCHEMA shiftlens; CREATE TABLE shiftlens.schema_version (version integer PRIMARY KEY, applied_ms bigint NOT NULL);
         INSERT INTO shiftlens.schema_version VALUES (99, 0)",
    );
    let out = collector_cmd(&["run", "--config"], &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("schema version 99 is newer than this collector knows"), "{err}");
    assert!(!err.contains(support::pg::PASSWORD), "{err}");
}

/// Publishes `batches` to a collector as gateway `gw` and waits until every seq of `epoch` is acked.
async fn publish_all(addr: std::net::SocketAddr, pki: &Pki, gw: &str, batches: &[shiftlens_common::Batch]) {
    let mut a = agent(addr, pki, gw);
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let want: BTreeSet<u64> = batches.iter().flat_map(|b| b.events.iter().map(|e| e.seq)).collect();
    let epoch = batches[0].epoch;
    let mut acked = BTreeSet::new();
    for b in batches {
        publish_batch(&a, gw, b).await;
    }
    assert!(wait_acked(&mut a, epoch, &want, &mut acked, WAIT).await, "not all acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batches_are_stored_once_across_two_collectors() {
    init_logs();
    let pg = PgCluster::start(false);
    let name = "redelivery";
    pg.create_db(name);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pki = Pki::new(d1.path(), "plant");
    let c1 = topology::start(&pg_config(&pg, d1.path(), &pki, name), feed::no_lines()).await.unwrap();
    let c2 = topology::start(&pg_config(&pg, d2.path(), &pki, name), feed::no_lines()).await.unwrap();
    let batches: Vec<_> = (0..20).map(|i| batch("gw-1", 5, i * 50 + 1, 50)).collect();
    // Everything reaches the first collector; then all of it again (a redelivery) reaches the second, and
    // half of it the first again.
    publish_all(c1.broker.unwrap(), &pki, "gw-1", &batches).await;
    publish_all(c2.broker.unwrap(), &pki, "gw-1", &batches).await;
    publish_all(c1.broker.unwrap(), &pki, "gw-1", &batches[..10]).await;
    let stored = pg.psql(name, "SELECT count(*), count(DISTINCT (site, gateway, epoch, seq)) FROM shiftlens.events");
    assert_eq!(stored, "1000|1000");
    let new = metrics::Metrics::get(&c1.metrics.events_new) + metrics::Metrics::get(&c2.metrics.events_new);
    assert_eq!(new, 1000, "each event counted new exactly once");
    let dup = metrics::Metrics::get(&c1.metrics.events_duplicate) + metrics::Metrics::get(&c2.metrics.events_duplicate);
    assert_eq!(dup, 1500);
    // The dashboard's dataset (the read side's door into the store) reads the same downtime from PostgreSQL.
    let cfg = pg_config(&pg, d1.path(), &pki, name);
    shiftlens_collector::store::reads::serve_from_postgres(&cfg.store).unwrap();
    let want = expected_downtime(&batches);
    assert_eq!(downtime_becomes(&pg, name, &want).await, want);
    let source = std::sync::Arc::new(shiftlens_collector::query::Source::new(
        cfg.store.path.clone(),
        cfg.people_settings.clone(),
    ));
    let db = cfg.store.path.clone();
    let (ds, first, second) = tokio::task::spawn_blocking(move || {
        let ds = source.dataset().unwrap();
        // Saving the join snapshot twice: the second finds every event unchanged.
        let (first, second) = (ds.save_snapshot(&db).unwrap(), ds.save_snapshot(&db).unwrap());
        (ds, first, second)
    })
    .await
    .unwrap();
    assert_eq!(ds.downtime, want);
    assert_eq!((first.new, second.unchanged, second.new), (ds.events.len(), ds.events.len(), 0));
    assert_eq!(pg.psql(name, "SELECT count(*) FROM shiftlens.join_snapshot"), ds.events.len().to_string());
    // A personnel import through the same door lands in PostgreSQL; the BI view then names the line.
    let (db, settings) = (cfg.store.path.clone(), cfg.people_settings.clone());
    let (first, again) = tokio::task::spawn_blocking(move || {
        use shiftlens_collector::people::import::Kind;
        use shiftlens_collector::store::reads::import_personnel;
        let text = "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-3,250,\n";
        let first = import_personnel(&db, settings.clone(), Kind::Assets, "assets.csv", text, 1).unwrap().unwrap();
        let again = import_personnel(&db, settings, Kind::Assets, "assets.csv", text, 2).unwrap().unwrap();
        (first, again)
    })
    .await
    .unwrap();
    assert_eq!((first.added, again.unchanged, again.import_id), (1, 1, None));
    assert_eq!(pg.psql(name, "SELECT DISTINCT line FROM shiftlens.downtime_v1"), "line-3");
    c1.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
    c2.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
}

/// Ingests `batches` of gateway `gw` into a SQLite collector in `dir` (config from [`config`]).
async fn ingest_sqlite(dir: &Path, pki: &Pki, gw: &str, batches: &[shiftlens_common::Batch]) {
    let c = topology::start(&config(dir, &pki.leaf("localhost"), ""), feed::no_lines()).await.unwrap();
    publish_all(c.broker.unwrap(), pki, gw, batches).await;
    c.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_sqlite_store_resumably_and_the_bi_view_matches_the_feed() {
    init_logs();
    let pg = PgCluster::start(false);
    let name = "migrated";
    pg.create_db(name);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let db = dir.path().join("collector.db");
    ingest_sqlite(dir.path(), &pki, "gw-1", &(0..30).map(|i| batch("gw-1", 3, i * 1000 + 1, 1000)).collect::<Vec<_>>())
        .await;
    {
        let mut conn = shiftlens_collector::store::open_writer(&db).unwrap();
        let kind = shiftlens_collector::people::import::Kind::Assets;
        let known = shiftlens_collector::store::people::load(&conn, Default::default()).unwrap();
        let text = "id,site,line,cost_per_hour,requires\npress-1,plant-a,line-3,250,\n";
        let recs = shiftlens_collector::people::import::parse(kind, "assets.csv", text, &known).unwrap();
        shiftlens_collector::store::people::import(&mut conn, kind, "assets.csv", &recs, 1).unwrap();
    }
    // The latest stop was escalated and acknowledged: its escalation state moves too.
    let acked_at = {
        let conn = shiftlens_collector::store::open_writer(&db).unwrap();
        let (site, asset, start): (String, String, i64) = conn
            .query_row("SELECT site, asset, start_ms FROM downtime ORDER BY start_ms DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        let key = format!("{site}/{asset}/{start}");
        conn.execute(
            "INSERT INTO escalation (stop_key, site, asset, start_ms, rung, target, reason, skills, person, channel,
               claimed_ms, state, attempts, sent_ms, token_hash, token_expires_ms, token_used_ms)
             VALUES (?1, ?2, ?3, ?4, 0, 'qualified', 'uncovered', 'plc', 'tech', 'email', ?4, 'sent', 1, ?4, x'0102',
               ?4 + 60000, ?4 + 30000)",
            rusqlite::params![key, site, asset, start],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO escalation_ack (stop_key, site, asset, start_ms, escalation_id, person, via, ack_ms)
             VALUES (?1, ?2, ?3, ?4, last_insert_rowid(), 'tech', 'link', ?4 + 30000)",
            rusqlite::params![key, site, asset, start],
        )
        .unwrap();
        feed::rfc3339(start + 30_000)
    };
    let migrate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
            .args(["migrate", "--from"])
            .arg(&db)
            .args(["--to", &pg.url(name), "--password-file"])
            .arg(pg.password_file())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = migrate();
    assert!(out.contains("count check: OK"), "{out}");
    assert!(out.contains("30000 copied by this run"), "{out}");
    assert_eq!(pg.psql(name, "SELECT count(*) FROM shiftlens.events"), "30000");

    // More events reach the SQLite store; a second run copies only those (keyset from the saved key).
    ingest_sqlite(dir.path(), &pki, "gw-1", &[batch("gw-1", 3, 30_001, 500)]).await;
    let out = migrate();
    let events = out.lines().find(|l| l.starts_with("events")).unwrap();
    assert!(events.contains("30500 in PostgreSQL (500 copied by this run)"), "{out}");

    // Downtime as the SQLite store has it, and as the BI view shows it.
    let conn = shiftlens_collector::store::open_reader(&db).unwrap();
    let rows = shiftlens_collector::store::events::query_downtime(&conn, &Default::default()).unwrap();
    assert!(rows.len() > 1000, "{}", rows.len());
    let lines = feed::load_lines(&conn).unwrap();
    let want: Vec<String> = rows
        .iter()
        .map(|d| {
            let r = feed::Record::new(d, lines.line(&d.site, &d.asset));
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}",
                r.schema,
                r.site,
                r.line.unwrap_or_default(),
                r.asset,
                r.start,
                r.end.unwrap_or_default(),
                r.state,
                r.duration_s.map(|s| format!("{s:.3}")).unwrap_or_default()
            )
        })
        .collect();
    let got = pg.psql(
        name,
        "SELECT schema, site, coalesce(line, ''), asset,
                to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                coalesce(to_char(\"end\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), ''),
                state, coalesce(to_char(duration_s, 'FM999999990.000'), '')
         FROM shiftlens.downtime_v1 ORDER BY start, site, asset",
    );
    let got: Vec<&str> = got.lines().collect();
    let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(first_difference.map(|i| (got[i], want[i].as_str())), None);
    assert_eq!(got.len(), want.len());

    // `export downtime` reads the same records from either store.
    let lite_cfg = dir.path().join("lite.toml");
    std::fs::write(&lite_cfg, format!("[store]\npath = \"{}\"\n", db.display())).unwrap();
    let pg_cfg = dir.path().join("pg.toml");
    std::fs::write(&pg_cfg, pg.store_toml(name)).unwrap();
    let export = |cfg: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
            .args(["export", "downtime", "--format", "csv", "--from", "2023-11-15T00:00:00Z", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (from_lite, from_pg) = (export(&lite_cfg), export(&pg_cfg));
    assert!(from_lite.lines().count() > 100 && from_lite.contains(",line-3,"), "{}", from_lite.len());
    assert!(from_lite == from_pg, "exports differ");
    // The acknowledgement splits the escalated stop's time to restoration in both.
    assert!(from_pg.contains(&acked_at), "no acknowledgement in the export");
    assert_eq!(
        pg.psql(
            name,
            "SELECT (SELECT count(*) FROM shiftlens.escalation), (SELECT person FROM shiftlens.escalation_ack)"
        ),
        "1|tech"
    );

    // So does a report (the read side's door, from the command line).
    let report = |cfg: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
            .args(["report", "mttr", "--from", "2023-11-01T00:00:00Z", "--to", "2023-12-01T00:00:00Z", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (from_lite, from_pg) = (report(&lite_cfg), report(&pg_cfg));
    assert!(from_lite.contains("join snapshots: 15250 new"), "{from_lite}");
    assert_eq!(from_lite, from_pg);
}

/// Like an agent: publishes every batch not yet fully acked, waits for progress (5 s), and again, until
/// every seq is acked; returns the seqs acked.
async fn deliver(a: &mut TestClient, gw: &str, batches: &[shiftlens_common::Batch], acked: &mut BTreeSet<u64>) {
    let epoch = batches[0].epoch;
    let all: BTreeSet<u64> = batches.iter().flat_map(|b| b.events.iter().map(|e| e.seq)).collect();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3 * WAIT);
    while !all.is_subset(acked) {
        assert!(tokio::time::Instant::now() < deadline, "{} of {} acked", acked.len(), all.len());
        for b in batches.iter().filter(|b| !b.events.iter().all(|e| acked.contains(&e.seq))) {
            publish_batch(a, gw, b).await;
        }
        let before = acked.len();
        wait_for(a, 5, |s| {
            if let Seen::Ack(ack) = s {
                if ack.epoch == epoch {
                    for &(lo, hi) in &ack.ranges {
                        acked.extend(lo..=hi);
                    }
                }
            }
            (acked.len() > before && all.is_subset(acked)).then_some(())
        })
        .await;
    }
}

/// The downtime rows of a database, read through the collector's own PostgreSQL code.
async fn downtime_in(pg: &PgCluster, db: &str) -> Vec<shiftlens_collector::timeline::Downtime> {
    use shiftlens_collector::store::pg::{sql, Target};
    let target = Target::new(&pg.url(db), Some(&pg.password_file()), None).unwrap();
    let client = target.connect().await.unwrap();
    sql::all_downtime(&client).await.unwrap()
}

/// The downtime a single timeline computes from `batches` (the single-collector result).
fn expected_downtime(batches: &[shiftlens_common::Batch]) -> Vec<shiftlens_collector::timeline::Downtime> {
    use shiftlens_collector::timeline::{Input, Timeline};
    let mut t = Timeline::new(60_000);
    for b in batches {
        for e in &b.events {
            t.apply(Input::Event {
                site: b.site.clone(),
                gateway: b.gateway.clone(),
                epoch: b.epoch,
                event: e.clone(),
            });
        }
    }
    let mut d = t.downtimes();
    d.sort_by(|a, b| (a.start_ms, &a.site, &a.asset).cmp(&(b.start_ms, &b.site, &b.asset)));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_during_ingest_stops_acks_loses_nothing_and_ingest_resumes() {
    init_logs();
    let pg = PgCluster::start(false);
    let name = "restart";
    pg.create_db(name);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let c = topology::start(&pg_config(&pg, dir.path(), &pki, name), feed::no_lines()).await.unwrap();
    let batches: Vec<_> = (0..100).map(|i| batch("gw-1", 9, i * 100 + 1, 100)).collect();
    let mut a = agent(c.broker.unwrap(), &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let mut acked = BTreeSet::new();
    for b in &batches[..50] {
        publish_batch(&a, "gw-1", b).await;
    }
    assert!(wait_acked(&mut a, 9, &(1..=100).collect(), &mut acked, WAIT).await);
    pg.pg_ctl_stop();
    // Whatever was acked before the database went away must still be there after it is back.
    for b in &batches[50..] {
        publish_batch(&a, "gw-1", b).await;
    }
    let acked_while_going_down = {
        // Drain what is already on its way (acks of commits that made it before the stop).
        wait_for(&mut a, 2, |s| {
            if let Seen::Ack(ack) = s {
                for &(lo, hi) in &ack.ranges {
                    acked.extend(lo..=hi);
                }
            }
            None::<()>
        })
        .await;
        acked.clone()
    };
    assert!(acked_while_going_down.len() < 10_000, "the stop came too late to prove anything");
    pg.pg_ctl_start();
    deliver(&mut a, "gw-1", &batches, &mut acked).await;
    assert_eq!(pg.psql(name, "SELECT count(*), count(DISTINCT seq) FROM shiftlens.events"), "10000|10000");
    assert_eq!(downtime_in(&pg, name).await, expected_downtime(&batches));
    c.shutdown(std::time::Duration::from_secs(10)).await.unwrap();
}

/// Waits until the database's downtime rows equal `want` (the owner applies other collectors' rows within
/// its tick); returns the last rows read.
async fn downtime_becomes(
    pg: &PgCluster,
    db: &str,
    want: &[shiftlens_collector::timeline::Downtime],
) -> Vec<shiftlens_collector::timeline::Downtime> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(WAIT);
    loop {
        let got = downtime_in(pg, db).await;
        if got == want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The real collector binary; returns it with its broker and HTTP addresses.
async fn spawn_collector(config: &Path) -> (tokio::process::Child, std::net::SocketAddr, std::net::SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addrs = listen_addrs(&mut child, &["broker", "http"]).await;
    (child, addrs[0], addrs[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_collectors_killed_mid_ingest_the_other_takes_the_site_and_downtime_equals_one_timeline() {
    init_logs();
    let pg = PgCluster::start(false);
    let name = "two_collectors";
    pg.create_db(name);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pki = Pki::new(d1.path(), "plant");
    let (c1, c2) = (d1.path().join("collector.toml"), d2.path().join("collector.toml"));
    std::fs::write(&c1, pg_config_text(&pg, d1.path(), &pki, name)).unwrap();
    std::fs::write(&c2, pg_config_text(&pg, d2.path(), &pki, name)).unwrap();
    let (mut first, addr1, _) = spawn_collector(&c1).await;
    let (_second, addr2, _) = spawn_collector(&c2).await;
    let batches: Vec<_> = (0..200).map(|i| batch("gw-1", 4, i * 50 + 1, 50)).collect();
    let (mut a1, mut a2) = (agent(addr1, &pki, "gw-1"), agent(addr2, &pki, "gw-1"));
    for a in [&mut a1, &mut a2] {
        assert!(wait_for(a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    }
    // The first batch goes to the first collector, which so becomes the site's owner; then each batch
    // reaches one or the other, as with a shared subscription.
    let mut acked = BTreeSet::new();
    publish_batch(&a1, "gw-1", &batches[0]).await;
    assert!(wait_acked(&mut a1, 4, &(1..=50).collect(), &mut acked, WAIT).await);
    for (i, b) in batches.iter().enumerate().skip(1) {
        publish_batch(if i % 2 == 0 { &a1 } else { &a2 }, "gw-1", b).await;
    }
    // Kill the owner as soon as more acks came: it dies mid-ingest with batches in flight.
    assert!(wait_acked(&mut a1, 4, &(1..=150).filter(|s| (s - 1) / 50 % 2 == 0).collect(), &mut acked, WAIT).await);
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    drop(a1);
    assert!(acked.len() < 10_000, "the kill came too late to prove anything");
    // The agent resends what is not acked to the survivor.
    deliver(&mut a2, "gw-1", &batches, &mut acked).await;
    assert_eq!(pg.psql(name, "SELECT count(*), count(DISTINCT seq) FROM shiftlens.events"), "10000|10000");
    let want = expected_downtime(&batches);
    assert_eq!(downtime_becomes(&pg, name, &want).await, want);
    assert_eq!(pg.psql(name, "SELECT count(*) FROM shiftlens.downtime_v1"), want.len().to_string());
}

/// The read side keeps its PostgreSQL connections for the next reader (a login and a server process per
/// dashboard request would cost more than most reports), finds out when the server closed them, and a
/// reader dropped on an async thread (as when the server stops) does not take the process down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readers_are_reused_survive_a_restart_and_may_be_dropped_on_an_async_thread() {
    use shiftlens_collector::store::reads::{self, Reader};
    init_logs();
    let pg = PgCluster::start(false);
    pg.create_db("reads");
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}path = {:?}\n", pg.store_toml("reads"), dir.path().join("pg-reads").display().to_string());
    let cfg = Config::from_file(&ConfigFile::from_text(dir.path().join("collector.toml"), text)).unwrap();
    reads::serve_from_postgres(&cfg.store).unwrap();
    let backends = || {
        pg.psql("reads", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'reads' AND pid <> pg_backend_pid()")
    };
    for _ in 0..3 {
        let path = cfg.store.path.clone();
        let r = tokio::task::spawn_blocking(move || {
            let r = Reader::open(&path).unwrap();
            assert_eq!(r.gateways().unwrap(), vec![]);
            r
        })
        .await
        .unwrap();
        drop(r); // on an async thread
    }
    assert_eq!(backends(), "1", "one connection, kept and reused");

    pg.pg_ctl_stop();
    pg.pg_ctl_start();
    let path = cfg.store.path.clone();
    let gateways = tokio::task::spawn_blocking(move || Reader::open(&path).unwrap().gateways().unwrap()).await.unwrap();
    assert_eq!(gateways, vec![], "the closed connection is replaced");

    let target = shiftlens_collector::store::pg::Target::from_store(&cfg.store).unwrap();
    let own = tokio::task::spawn_blocking(move || shiftlens_collector::store::pg::read::Reader::open(&target).unwrap())
        .await
        .unwrap();
    drop(own); // its runtime is shut down without blocking this thread
}

/// Waits until the collector's `/metrics` shows `want` for `name`; returns the last value read.
async fn metric_becomes(http: std::net::SocketAddr, name: &str, want: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(WAIT);
    loop {
        let m = http_support::get(http, "/metrics").await;
        assert_eq!(m.status, 200, "{}", m.body);
        let value = m.body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(|v| v.parse().unwrap());
        let value = value.unwrap_or_else(|| panic!("no {name}: {}", m.body));
        if value == want || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The real binary on PostgreSQL: hostile payloads between good batches on one gateway's topic. Each good
/// batch is stored once and acked; each hostile one is a row of PostgreSQL's `dead_letters` with its topic and
/// kind, counted on `/metrics` (the counter after commit, the gauge read back from the table); ingest goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_dead_lettered_in_postgres_while_good_batches_are_stored_once_and_acked() {
    use shiftlens_common::{wire::encode_batch, AssetId, EventBody, MachineState};
    init_logs();
    let pg = PgCluster::start(false);
    let name = "hostile";
    pg.create_db(name);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, pg_config_text(&pg, dir.path(), &pki, name)).unwrap();
    let (_child, broker, http) = spawn_collector(&cfg).await;
    let mut a = agent(broker, &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    let topic = events_topic("gw-1");
    let mut future = encode_batch(&batch("gw-1", 1, 1, 1));
    future[1] = 0x09; // schema version 9
    let mut descending = batch("gw-1", 2, 1, 5);
    descending.events.reverse();
    // Version 3 (dictionary form) referring to entry 4 of a dictionary of 1.
    let entry = (AssetId::parse("press-1").unwrap(), EventBody::State { state: MachineState::Down, reason: None });
    let mut bad_index = Vec::new();
    let v3 = (3u16, "plant-a", "gw-1", 3u64, 1u64, 0u64, vec![entry], 1u64, 1_700_000_000_000i64, vec![4i64, 0]);
    ciborium::into_writer(&v3, &mut bad_index).unwrap();
    // A state named with a NUL byte: the decoder's message quotes it, and PostgreSQL's text holds no NUL.
    let mut nul = encode_batch(&batch("gw-1", 4, 1, 2));
    let at = nul.windows(4).position(|w| w == b"down").unwrap();
    nul[at + 1] = 0;
    // A valid batch whose stop reason holds a NUL: PostgreSQL could store neither its downtime row nor any
    // transaction it is in.
    let mut nul_reason = batch("gw-1", 5, 1, 2);
    nul_reason.events[1].body = EventBody::State { state: MachineState::Down, reason: Some("E\0STOP".into()) };
    let hostile: [(&str, Vec<u8>); 7] = [
        ("too_large", vec![0x85; 2 << 20]), // 2 MiB: over the 1 MiB batch limit
        ("malformed", b"\xff\x00garbage".to_vec()),
        ("unsupported_version", future),
        ("seq_order", encode_batch(&descending)),
        ("bad_index", bad_index),
        ("malformed", nul),
        ("bad_body", encode_batch(&nul_reason)),
    ];
    // Good batches of epoch 7, one before and one after each hostile payload.
    let good: Vec<_> = (0..=hostile.len() as u64).map(|i| batch("gw-1", 7, i * 10 + 1, 10)).collect();
    publish_batch(&a, "gw-1", &good[0]).await;
    for ((_, payload), b) in hostile.iter().zip(&good[1..]) {
        publish(&a, &topic, payload.clone()).await;
        publish_batch(&a, "gw-1", b).await;
    }
    let want: BTreeSet<u64> = (1..=good.len() as u64 * 10).collect();
    assert!(wait_acked(&mut a, 7, &want, &mut BTreeSet::new(), WAIT).await, "good batches not all acked");
    let dead = || pg.psql(name, "SELECT count(*) FROM shiftlens.dead_letters");
    assert!(eventually(WAIT, || dead() == hostile.len().to_string()).await, "{} dead letters", dead());
    let rows = pg.psql(name, "SELECT kind || ' ' || topic FROM shiftlens.dead_letters ORDER BY id");
    let want_rows: Vec<String> = hostile.iter().map(|(kind, _)| format!("{kind} {topic}")).collect();
    assert_eq!(rows.lines().collect::<Vec<_>>(), want_rows);
    let reasons = pg.psql(name, "SELECT reason FROM shiftlens.dead_letters ORDER BY id DESC LIMIT 2");
    assert!(reasons.contains("NUL") && reasons.contains("unknown variant `d\\0wn`"), "{reasons}");
    assert_eq!(pg.psql(name, "SELECT count(*), count(DISTINCT seq), max(seq) FROM shiftlens.events"), "80|80|80");
    assert_eq!(pg.psql(name, "SELECT DISTINCT epoch FROM shiftlens.events"), "7");
    let n = hostile.len() as u64;
    assert_eq!(metric_becomes(http, "shiftlens_dead_letters_total", n).await, n);
    assert_eq!(metric_becomes(http, "shiftlens_dead_letters_stored", n).await, n);
    assert_eq!(metric_becomes(http, "shiftlens_ingest_events_total", 80).await, 80);

    // The collector keeps ingesting: a redelivered batch is acked again and stored once, a new one is stored.
    publish_batch(&a, "gw-1", &good[0]).await;
    assert!(wait_acked(&mut a, 7, &(1..=10).collect(), &mut BTreeSet::new(), WAIT).await);
    publish_batch(&a, "gw-1", &batch("gw-1", 7, 81, 10)).await;
    assert!(wait_acked(&mut a, 7, &(81..=90).collect(), &mut BTreeSet::new(), WAIT).await);
    assert_eq!(pg.psql(name, "SELECT count(*), count(DISTINCT seq) FROM shiftlens.events"), "90|90");
    assert_eq!(metric_becomes(http, "shiftlens_ingest_duplicate_events_total", 10).await, 10);
    assert_eq!(metric_becomes(http, "shiftlens_ingest_events_total", 90).await, 90);
    assert_eq!(pg.psql(name, "SELECT count(*) FROM shiftlens.dead_letters"), n.to_string());
}
