//! The embedded broker's gate against gateways that claim to be someone else, over real sockets with mTLS
//! certificates made by rcgen: a gateway's identity is (site, gateway), from its certificate's CN and OU
//! (or SAN URI); the same gateway id in two sites are two gateways; and rumqttd's private port behind the
//! gate refuses anyone without the per-start secret.
#![allow(clippy::unwrap_used)]

mod support;

use rumqttc::{MqttOptions, QoS};
use shiftlens_collector::{feed, topology};
use shiftlens_common::status::Status;
use shiftlens_common::wire::encode_batch;
use shiftlens_common::{Batch, SiteId, Topic};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

async fn start(dir: &std::path::Path, pki: &Pki, extra: &str) -> topology::Collector {
    init_logs();
    let cfg = config(dir, &pki.leaf("localhost"), extra);
    topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap()
}

fn site_id(s: &str) -> SiteId {
    SiteId::parse(s).unwrap()
}

/// `gw` of `site`, with a certificate naming both, subscribed to its own ack topic.
fn gateway_of(addr: std::net::SocketAddr, pki: &Pki, site: &str, gw: &str) -> TestClient {
    let files = pki.leaf_at(gw, Some(site));
    let ack = Topic::Ack { site: site_id(site), gateway: gateway(gw) }.to_string();
    connect(options(addr, gw, &pki.ca, Some(&files)), vec![ack], false)
}

fn site_batch(site: &str, gw: &str, epoch: u64, first: u64, n: u64) -> Batch {
    Batch::new(site_id(site), gateway(gw), epoch, batch(gw, epoch, first, n).events)
}

async fn publish_site_batch(c: &TestClient, b: &Batch) {
    let topic = Topic::Events { site: b.site.clone(), gateway: b.gateway.clone() }.to_string();
    publish(c, &topic, encode_batch(b)).await;
}

/// Every error the client's connection saw so far (a broker that kicks a session shows up here).
fn errors(c: &mut TestClient) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(s) = c.seen.try_recv() {
        if let Seen::Error(e) = s {
            out.push(e);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_gateway_id_in_two_sites_are_two_gateways_that_stay_connected_and_are_acked_apart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "").await;
    let addr = collector.broker.unwrap();
    let db = dir.path().join("collector.db");
    let mut a = gateway_of(addr, &pki, "a", "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let mut b = gateway_of(addr, &pki, "b", "gw-1");
    assert!(wait_for(&mut b, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // Both report online, and both send the same epoch and seqs (two outboxes that happen to agree).
    let mut online = Status::offline(1);
    online.online = true;
    for (c, site) in [(&a, "a"), (&b, "b")] {
        let topic = Topic::Status { site: site_id(site), gateway: gateway("gw-1") }.to_string();
        c.client.publish(topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online).unwrap()).await.unwrap();
    }
    let epoch = 7;
    for round in 0..3 {
        let first = round * 50 + 1;
        publish_site_batch(&a, &site_batch("a", "gw-1", epoch, first, 50)).await;
        publish_site_batch(&b, &site_batch("b", "gw-1", epoch, first, 50)).await;
        let want: BTreeSet<u64> = (first..first + 50).collect();
        assert!(wait_acked(&mut a, epoch, &want, &mut BTreeSet::new(), WAIT).await, "site a not acked, round {round}");
        assert!(wait_acked(&mut b, epoch, &want, &mut BTreeSet::new(), WAIT).await, "site b not acked, round {round}");
    }
    // Neither knocked the other off (rumqttd keys sessions by client id: both say "gw-1").
    assert_eq!((errors(&mut a), errors(&mut b)), (vec![], vec![]), "a connection was dropped");
    // Their events did not dedup against each other, and each has its own gateways row.
    let per_site =
        |s: &str| count(&db, &format!("SELECT COUNT(*) FROM events WHERE site = '{s}' AND gateway = 'gw-1'"));
    assert!(eventually(WAIT, || per_site("a") == 150 && per_site("b") == 150).await);
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM gateways WHERE online = 1") == 2).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);
    drop((a, b));
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_publishing_or_subscribing_under_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "").await;
    let addr = collector.broker.unwrap();
    let db = dir.path().join("collector.db");
    let mut b = gateway_of(addr, &pki, "b", "gw-1");
    assert!(wait_for(&mut b, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // Site a's gw-1 publishes a batch of site b's gw-1 on site b's topic: refused at the gate,
    // dead-lettered, disconnected (it does not reconnect, which would resend the publish).
    let files = pki.leaf_at("gw-1", Some("a"));
    let mut intruder = connect(options(addr, "gw-1", &pki.ca, Some(&files)), vec![], true);
    assert!(wait_for(&mut intruder, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    publish_site_batch(&intruder, &site_batch("b", "gw-1", 7, 1, 5)).await;
    assert!(wait_for(&mut intruder, WAIT, |s| matches!(s, Seen::Error(_)).then_some(())).await.is_some());
    assert!(eventually(WAIT, || count(&db, "SELECT COUNT(*) FROM dead_letters WHERE kind = 'identity'") == 1).await);
    let reason: String = shiftlens_collector::store::open_reader(&db)
        .unwrap()
        .query_row("SELECT reason FROM dead_letters", [], |r| r.get(0))
        .unwrap();
    assert!(reason.contains("gateway gw-1 of site a may not publish"), "{reason}");

    // Nor may it read site b's acks.
    let ack_b = Topic::Ack { site: site_id("b"), gateway: gateway("gw-1") }.to_string();
    let mut reader = connect(options(addr, "gw-1", &pki.ca, Some(&files)), vec![ack_b], true);
    let outcome = refused(&mut reader).await;
    assert_eq!(outcome, Some(true), "a subscription to another site's acks was accepted");

    // Nothing of it got in, and site b's gateway still works.
    publish_site_batch(&b, &site_batch("b", "gw-1", 7, 1, 10)).await;
    assert!(wait_acked(&mut b, 7, &(1..=10).collect(), &mut BTreeSet::new(), WAIT).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM events"), 10);
    drop(b);
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_a_site_is_refused_unless_legacy_site_is_configured() {
    // Feed readers need no site: central IT reads every site's feed.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let files = pki.leaf_at("gw-1", None);
    for (legacy, accepted) in [(None, false), (Some(SITE), true)] {
        let d = dir.path().join(if accepted { "legacy" } else { "strict" });
        std::fs::create_dir_all(&d).unwrap();
        let extra =
            legacy.map(|s| format!("legacy_site = \"{s}\"")).unwrap_or_default() + "\nfeed_readers = [\"it-feed\"]";
        let collector = start(&d, &pki, &extra).await;
        let addr = collector.broker.unwrap();
        let ack = Topic::Ack { site: site(), gateway: gateway("gw-1") }.to_string();
        let mut c = connect(options(addr, "gw-1", &pki.ca, Some(&files)), vec![ack], true);
        let outcome = wait_for(&mut c, WAIT, |s| match s {
            Seen::Connected => Some(true),
            Seen::Error(_) => Some(false),
            _ => None,
        })
        .await;
        assert_eq!(outcome, Some(accepted), "legacy_site {legacy:?}");
        if accepted {
            publish_batch(&c, "gw-1", &batch("gw-1", 3, 1, 5)).await;
            assert!(wait_acked(&mut c, 3, &(1..=5).collect(), &mut BTreeSet::new(), WAIT).await);
        }
        let reader_files = pki.leaf_at("it-feed", None);
        let feed = vec!["shiftlens/v1/+/downtime".to_string()];
        let mut reader = connect(options(addr, "it-feed", &pki.ca, Some(&reader_files)), feed, true);
        let reader_in = wait_for(&mut reader, WAIT, |s| match s {
            Seen::Connected => Some(true),
            Seen::Error(_) => Some(false),
            _ => None,
        })
        .await;
        assert_eq!(reader_in, Some(true), "a feed reader without a site was refused");
        drop((c, reader));
        collector.shutdown(Duration::from_secs(10)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_broker_port_refuses_clients_without_the_per_start_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "plant");
    let collector = start(dir.path(), &pki, "").await;
    let internal = collector.broker_internal.unwrap();
    let mut a = agent(collector.broker.unwrap(), &pki, "gw-1");
    assert!(wait_for(&mut a, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());

    // A local user on the loopback port: anonymous, and with the internal username but a guessed password.
    // Each wants to read every ack and the feed.
    for login in [None, Some(("shiftlens", "guess"))] {
        let mut o = MqttOptions::new("snoop", internal.ip().to_string(), internal.port());
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let mut snoop = connect(o, vec!["shiftlens/v1/#".into()], true);
        let outcome = refused(&mut snoop).await;
        assert_eq!(outcome, Some(true), "{login:?}: the internal port took the client");
    }
    // The gate's own traffic still flows.
    publish_batch(&a, "gw-1", &batch("gw-1", 8, 1, 5)).await;
    assert!(wait_acked(&mut a, 8, &(1..=5).collect(), &mut BTreeSet::new(), WAIT).await);
    drop(a);
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_pki_command_are_accepted_by_the_gate_for_what_they_name() {
    use shiftlens_collector::pki::{Ca, Kind};
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let ca = Ca::init(&dir.path().join("pki"), "Plant CA", 3650, now).unwrap();
    let server = Kind::Server { name: "broker".into(), hosts: vec!["localhost".into(), "127.0.0.1".into()] };
    let (cert, key) = ca.issue(&server, 30, now).unwrap();
    let server = shiftlens_collector::broker::TlsFiles { ca: ca.ca_path(), cert, key };
    init_logs();
    let cfg = config(dir.path(), &server, "feed_readers = [\"it-feed\"]");
    let collector = topology::start(&cfg, feed::AssetLines::line_of(&cfg.store.path)).await.unwrap();
    let addr = collector.broker.unwrap();
    let files = |kind: &Kind| {
        let (cert, key) = ca.issue(kind, 30, now).unwrap();
        shiftlens_collector::broker::TlsFiles { ca: ca.ca_path(), cert, key }
    };

    // A gateway certificate names its site: acked under that site.
    let gw = files(&Kind::Gateway { site: site_id("plant-b"), gateway: gateway("gw-7") });
    let ack = Topic::Ack { site: site_id("plant-b"), gateway: gateway("gw-7") }.to_string();
    let mut g = connect(options(addr, "gw-7", &ca.ca_path(), Some(&gw)), vec![ack], false);
    assert!(wait_for(&mut g, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    publish_site_batch(&g, &site_batch("plant-b", "gw-7", 3, 1, 5)).await;
    assert!(wait_acked(&mut g, 3, &(1..=5).collect(), &mut BTreeSet::new(), WAIT).await);

    // A feed reader may subscribe to the feed, and only to the feed.
    let reader = files(&Kind::FeedReader { id: "it-feed".into() });
    let mut r =
        connect(options(addr, "it-feed", &ca.ca_path(), Some(&reader)), vec!["shiftlens/v1/+/downtime".into()], true);
    assert!(wait_for(&mut r, WAIT, |s| matches!(s, Seen::Connected).then_some(())).await.is_some());
    let ack = Topic::Ack { site: site_id("plant-b"), gateway: gateway("gw-7") }.to_string();
    let mut snoop = connect(options(addr, "it-feed", &ca.ca_path(), Some(&reader)), vec![ack], true);
    let outcome = refused(&mut snoop).await;
    assert_eq!(outcome, Some(true), "a feed reader subscribed to a gateway's acks");
    drop((g, r, snoop));
    collector.shutdown(Duration::from_secs(10)).await.unwrap();
}
