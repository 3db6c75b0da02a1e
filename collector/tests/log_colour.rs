//! Logs an operator can read: the collector writes no colour codes when stderr is a pipe (journald, a file).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n",
            dir.path().join("collector.db").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shiftlens-collector"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Read up to the first INFO line, which a terminal would colour.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let info = line.contains("INFO");
        seen.push(line);
        if info {
            break;
        }
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    seen.extend(lines.map_while(Result::ok));
    child.wait().unwrap();
    let all = seen.join("\n");
    assert!(all.contains("INFO"), "{all}");
    assert!(!all.contains('\x1b'), "colour codes in piped logs:\n{all}");
}
