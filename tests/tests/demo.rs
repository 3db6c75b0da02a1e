//! The `shiftlens-demo` binary itself, as a visitor runs it: the Certificates page lists certificates that
//! expire soon (the sample dates move with the day the demo runs), and the `mosquitto_sub` command it prints
//! for central IT receives a downtime record over mutual TLS with the demo's `it-feed` certificate.

use shiftlens_e2e::*;
use std::path::Path;

#[test]
fn the_demo_lists_expiring_certificates_and_its_printed_feed_command_receives_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let state = dir.path().to_string_lossy().into_owned();
    let demo_bin = Path::new(env!("CARGO_BIN_EXE_shiftlens-demo"));
    let mut demo = Proc::spawn("demo", demo_bin, &["--port", &port, "--state-dir", &state]);
    let web: std::net::SocketAddr =
        demo.wait_for("Dashboard:  http://", WAIT).trim_end_matches('/').parse().expect("dashboard address");
    let command = demo.wait_for("mosquitto_sub", WAIT);
    let args: Vec<String> = command.split_whitespace().map(|a| a.trim_matches('\'').to_string()).collect();
    assert!(args.iter().any(|a| a == "it-feed"), "{command}");

    // Certificates: some expire within 90 days of today, whatever day the demo runs.
    let recert = get_json(web, "/api/v1/recert?horizon=90d");
    let soon = recert["rows"].as_array().map_or(0, Vec::len);
    assert!(soon >= 3, "expected certificates expiring within 90 days: {recert}");
    let (status, page) = http_get(web, "/recert?horizon=90d").unwrap();
    assert_eq!(status, 200);
    let first = recert["rows"][0]["certificate"].as_str().unwrap();
    assert!(page.contains(first), "the Certificates page does not list {first}");

    // The printed feed command, as central IT would paste it: one downtime record arrives.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut feed = Proc::spawn("mosquitto_sub", Path::new("mosquitto_sub"), &args);
    let record = feed.wait_for("shiftlens/v1/plant-a/downtime", WAIT * 2);
    let json: serde_json::Value = serde_json::from_str(record.trim()).expect("a JSON feed record");
    assert_eq!(json["site"], "plant-a", "{json}");
    assert!(json["asset"].is_string() && json["start"].is_string(), "{json}");
}
