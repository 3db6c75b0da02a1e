//! `[[modbus]]` config: the documented examples are valid, and every mistake is named with file:line:col.
#![allow(clippy::unwrap_used)]

use shiftlens_agent::Config;
use shiftlens_common::config::ConfigFile;

const HEADER: &str = "site = \"plant1\"\ngateway = \"gw1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n";

fn check(modbus: &str) -> Result<Config, Vec<String>> {
    let text = format!("{HEADER}{modbus}");
    Config::from_file(&ConfigFile::from_text("agent.toml", text))
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

#[test]
fn the_documented_modbus_examples_are_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.example.toml")).unwrap();
    let start = text.find("# BEGIN modbus examples").unwrap();
    let end = text.find("# END modbus examples").unwrap();
    let config = check(&text[start..end]).unwrap();
    assert_eq!(config.modbus.len(), 3);
    let lines = shiftlens_agent::source::modbus_lines(&config.modbus);
    assert_eq!(lines.len(), 2, "the two unit ids behind 192.168.10.21:502 share one line");
}

const GOOD_POINT: &str =
    "[[modbus.points]]\nname = \"s\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\nmeaning = \"info\"\n";

#[test]
fn each_mistake_is_named_with_file_line_and_column() {
    let dev = |body: &str, point: &str| {
        format!("[[modbus]]\nid = \"plc\"\n{body}\n[[modbus.points]]\nname = \"p\"\nasset = \"press-1\"\n{point}\n")
    };
    let tcp = "address = \"127.0.0.1:502\"";
    // (config, expected line:col prefix, words in the message)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            dev(tcp, "table = \"holding\"\naddress = 70000\ntype = \"u16\"\nmeaning = \"info\""),
            "agent.toml:12:11:",
            "out of range",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 65535\ntype = \"u32\"\nmeaning = \"info\""),
            "agent.toml:12:11:",
            "out of range",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"bit\"\nbit = 16\nmeaning = \"info\""),
            "agent.toml:14:7:",
            "bit 16 is out of range (0-15)",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\""),
            "agent.toml:13:8:",
            "use type = \"bit\"",
        ),
        (
            dev(tcp, "table = \"coil\"\naddress = 1\ntype = \"u16\"\nmeaning = \"info\""),
            "agent.toml:13:8:",
            "use type = \"bool\"",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"bit\"\nmeaning = \"info\""),
            "agent.toml:13:8:",
            "needs `bit`",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"u16\"\nbit = 2\nmeaning = \"info\""),
            "agent.toml:14:7:",
            "applies to type \"bit\" only",
        ),
        (
            dev(tcp, "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = { reason = {} }"),
            "agent.toml:14:11:",
            "needs a number",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"f32\"\nmeaning = { state = { preset = \"packml\" } }"),
            "agent.toml:14:11:",
            "needs a whole number",
        ),
        (
            dev(tcp, "table = \"holding\"\naddress = 1\ntype = \"u16\"\nmeaning = { state = { preset = \"flag\" } }"),
            "agent.toml:14:11:",
            "needs `when_true`",
        ),
        (
            dev("address = \"plc.local:502\"", "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\""),
            "agent.toml:7:11:",
            "is not ip:port",
        ),
        (
            dev("", "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\""),
            "agent.toml:5:1:",
            "needs `address",
        ),
        (
            dev(
                "serial = \"/dev/ttyS0\"\nunit = 0",
                "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\"",
            ),
            "agent.toml:8:8:",
            "out of range for RTU (1-247)",
        ),
        (
            dev(&format!("{tcp}\nbaud = 9600"), "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\""),
            "agent.toml:7:11:",
            "apply to `serial` devices only",
        ),
        (
            dev(
                &format!("{tcp}\npoll = \"0ms\""),
                "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\"",
            ),
            "agent.toml:8:8:",
            "poll must be longer",
        ),
        (
            dev(tcp, "table = \"register\"\naddress = 1\ntype = \"u16\"\nmeaning = \"info\""),
            "agent.toml:11:9:",
            "expected one of `coil`, `discrete_input`, `holding`, `input`",
        ),
        (
            dev(tcp, "table = \"coil\"\naddress = 1\ntype = \"bool\"\nmeaning = \"info\"\nscal = 2.0"),
            "agent.toml:15:1:",
            "unknown field `scal`",
        ),
    ];
    for (text, at, words) in cases {
        let errs = check(&text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(words)),
            "want {at} ..{words}..\n{text}\ngot {errs:#?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once_and_ids_and_names_are_unique() {
    let text = format!(
        "[[modbus]]\nid = \"plc\"\naddress = \"127.0.0.1:502\"\n{GOOD_POINT}{GOOD_POINT}[[modbus]]\nid = \"plc\"\naddress = \"127.0.0.1:502\"\n{GOOD_POINT}"
    );
    let errs = check(&text).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("point name \"s\" is used twice"), "{errs:#?}");
    assert!(
        errs[1].starts_with("agent.toml:23:6:") && errs[1].contains("device id \"plc\" is used twice"),
        "{errs:#?}"
    );
}

/// `_agent` is the source of the events the agent stores after an unclean stop; no device may take it.
#[test]
fn the_agent_source_id_is_reserved() {
    let config = format!("[[modbus]]\nid = \"_agent\"\naddress = \"127.0.0.1:502\"\n{GOOD_POINT}");
    let errors = check(&config).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("agent.toml:6:6:") && e.contains("reserved for the agent itself")),
        "{errors:?}"
    );
}
