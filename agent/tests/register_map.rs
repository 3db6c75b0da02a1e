//! `points_csv`: a device's points from a CSV register map next to the config file. The points equal their
//! `[[modbus.points]]` form, every mistake is named with file:row:column, and `shiftlens-agent check` reports
//! them.
#![allow(clippy::unwrap_used)]

use shiftlens_agent::Config;
use std::path::{Path, PathBuf};

const HEADER: &str = "site = \"plant1\"\ngateway = \"gw1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n";

/// Writes `agent.toml` (a device with `device_extra`, using `press.csv`) and `press.csv` into a fresh dir.
fn write(dir: &Path, device_extra: &str, csv: &str) -> PathBuf {
    let toml = format!(
        "{HEADER}\n[[modbus]]\nid = \"plc\"\naddress = \"127.0.0.1:502\"\npoints_csv = \"press.csv\"\n{device_extra}\n"
    );
    std::fs::write(dir.join("press.csv"), csv).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn errors(device_extra: &str, csv: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), device_extra, csv);
    let errs = Config::load(&path).unwrap_err();
    let prefix = format!("{}/", dir.path().display());
    errs.0.iter().map(|e| e.to_string().replace(&prefix, "")).collect()
}

const MEANINGS: &str = "meanings = { press_state = { state = { preset = \"packml\" } }, hot = { threshold = { id = \"HOT\", above = 80.0 } } }";

const GOOD_CSV: &str = "\
name,asset,table,address,type,bit,word_order,byte_order,scale,offset,meaning,alarm_id,text,severity,class,debounce
state,press-1,holding,0,u16,,,,,,press_state,,,,,
guard,press-1,holding,2,bit,3,,,,,alarm,GUARD,Guard door open,700,safety,200ms
oil,press-1,input,5,f32,,little,,,,hot,,,,,
count,press-1,holding,7,u32,,,little,0.5,-1,info,,,,,
estop,press-2,discrete_input,0,bool,,,,,,alarm,ESTOP,,,,
";

const SAME_AS_TOML: &str = r#"
[[modbus]]
id = "plc"
address = "127.0.0.1:502"
[[modbus.points]]
name = "state"
asset = "press-1"
table = "holding"
address = 0
type = "u16"
meaning = { state = { preset = "packml" } }
[[modbus.points]]
name = "guard"
asset = "press-1"
table = "holding"
address = 2
type = "bit"
bit = 3
meaning = { alarm = { id = "GUARD", text = "Guard door open", severity = 700, class = "safety", debounce = "200ms" } }
[[modbus.points]]
name = "oil"
asset = "press-1"
table = "input"
address = 5
type = "f32"
word_order = "little"
meaning = { threshold = { id = "HOT", above = 80.0 } }
[[modbus.points]]
name = "count"
asset = "press-1"
table = "holding"
address = 7
type = "u32"
byte_order = "little"
scale = 0.5
offset = -1.0
meaning = "info"
[[modbus.points]]
name = "estop"
asset = "press-2"
table = "discrete_input"
address = 0
type = "bool"
meaning = { alarm = { id = "ESTOP" } }
"#;

#[test]
fn a_register_map_gives_the_same_points_as_the_toml_form() {
    let dir = tempfile::tempdir().unwrap();
    let from_csv = Config::load(&write(dir.path(), MEANINGS, GOOD_CSV)).unwrap();
    std::fs::write(dir.path().join("toml.toml"), format!("{HEADER}{SAME_AS_TOML}")).unwrap();
    let from_toml = Config::load(&dir.path().join("toml.toml")).unwrap();
    let summary = |c: &Config| -> Vec<String> {
        c.modbus[0].points.iter().map(|p| format!("{} {} {:?} {:?}", p.name, p.asset, p.register, p.meaning)).collect()
    };
    assert_eq!(summary(&from_csv).len(), 5);
    assert_eq!(summary(&from_csv), summary(&from_toml));
    assert_eq!(from_csv.modbus[0].assets(), from_toml.modbus[0].assets());
}

#[test]
fn a_register_map_adds_to_toml_points_and_is_found_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[modbus.points]]\nname = \"mode\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 9\ntype = \"u16\"\nmeaning = \"info\"";
    let path = write(dir.path(), &format!("{MEANINGS}\n{extra}"), GOOD_CSV);
    // From another working directory: the path is relative to the config file.
    let config = Config::load(&path).unwrap();
    let names: Vec<&str> = config.modbus[0].points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["mode", "state", "guard", "oil", "count", "estop"]);
}

#[test]
fn each_csv_mistake_is_named_with_file_row_and_column() {
    let head = "name,asset,table,address,type,bit,meaning,alarm_id,severity\n";
    // (rows after the header, expected error)
    let cases: Vec<(&str, &str)> = vec![
        ("a,press-1,holding,70000,u16,,info,,\n", "press.csv:2:4: address: address 70000 is out of range"),
        ("a,press-1,holding,x1,u16,,info,,\n", "press.csv:2:4: address: \"x1\" is not a whole number"),
        ("a,press-1,register,1,u16,,info,,\n", "press.csv:2:3: table: \"register\" is not one of coil"),
        ("a,press-1,holding,1,u64,,info,,\n", "press.csv:2:5: type: \"u64\" is not one of bool"),
        ("a,press-1,holding,1,bool,,info,,\n", "press.csv:2:5: type: type \"bool\" is for coils"),
        ("a,press-1,holding,1,bit,,info,,\n", "press.csv:2:5: type: type \"bit\" needs `bit`"),
        ("a,press-1,holding,1,bit,16,info,,\n", "press.csv:2:6: bit: bit 16 is out of range"),
        ("a,press-1,coil,1,bool,,state,,\n", "press.csv:2:7: meaning: unknown meaning \"state\" (known: info, alarm)"),
        ("a,press-1,coil,1,bool,,alarm,,\n", "press.csv:2:8: alarm_id: must not be empty"),
        ("a,press-1,coil,1,bool,,alarm,A1,loud\n", "press.csv:2:9: severity: \"loud\" is not a whole number"),
        ("a,press-1,coil,1,bool,,info,A1,\n", "press.csv:2:8: alarm_id: applies to meaning `alarm` only"),
        (",press-1,coil,1,bool,,info,,\n", "press.csv:2:1: name: must not be empty"),
        ("a,Press 1!,coil,1,bool,,info,,\n", "press.csv:2:2: asset: "),
        (
            "a,press-1,coil,1,bool,,info,,\na,press-1,coil,2,bool,,info,,\n",
            "press.csv:3:1: name: point name \"a\" is used twice (first on row 2)",
        ),
        ("a,press-1,coil,1,bool,,info,,\nb,press-1,coil,2\n", "press.csv:3:0: bad CSV row"),
    ];
    for (rows, want) in cases {
        let errs = errors("", &format!("{head}{rows}"));
        assert!(errs.iter().any(|e| e.starts_with(want)), "{rows:?}: want {want:?}, got {errs:?}");
    }
}

#[test]
fn header_problems_are_named_on_row_one() {
    let errs = errors("", "name,asset,table,address,meaning,colour\na,press-1,coil,1,info,red\n");
    assert!(errs.iter().any(|e| e.starts_with("press.csv:1:0: missing column \"type\"")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("press.csv:1:6: unknown column \"colour\"")), "{errs:?}");
}

#[test]
fn config_file_problems_with_a_register_map_point_into_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "", "name,asset,table,address,type,meaning\n");
    std::fs::remove_file(dir.path().join("press.csv")).unwrap();
    let errs: Vec<String> = Config::load(&path).unwrap_err().0.iter().map(ToString::to_string).collect();
    assert!(errs.iter().any(|e| e.contains("agent.toml:9:14: cannot read points_csv \"press.csv\"")), "{errs:?}");

    let errs = errors("", "name,asset,table,address,type,meaning\n");
    assert!(errs.iter().any(|e| e.contains("agent.toml:9:14: points_csv \"press.csv\" has no rows")), "{errs:?}");

    let errs = errors("meanings = { bad = { alarm_word = { bits = { 40 = { id = \"X\" } } } } }", GOOD_CSV);
    assert!(errs.iter().any(|e| e.contains("agent.toml:10:") && e.contains("meaning \"bad\"")), "{errs:?}");

    let extra = "[[modbus.points]]\nname = \"state\"\nasset = \"press-1\"\ntable = \"holding\"\naddress = 9\ntype = \"u16\"\nmeaning = \"info\"";
    let errs = errors(&format!("{MEANINGS}\n{extra}"), GOOD_CSV);
    assert!(errs.iter().any(|e| e.starts_with("press.csv:2:1: name: point name \"state\" is also")), "{errs:?}");
}

#[test]
fn check_reports_register_map_mistakes_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), MEANINGS, "name,asset,table,address,type,meaning\na,press-1,holding,70000,u16,info\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let want = format!("{}:2:4: address: address 70000 is out of range", dir.path().join("press.csv").display());
    assert!(stderr.contains(&want), "{stderr}");

    let path = write(dir.path(), MEANINGS, GOOD_CSV);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiftlens-agent"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_documented_register_map_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config-reference.md")).unwrap();
    let start = doc.find("```csv\n").unwrap() + "```csv\n".len();
    let csv = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "meanings = { press_state = { state = { preset = \"packml\" } } }", csv);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.modbus[0].points.len(), 3);
}
