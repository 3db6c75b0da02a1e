//! Large point lists written in TOML: `[[modbus.points]]` tables are parsed a hundred at a time, so the
//! TOML parser's tree (tokens, events and about 1 KB per table, spans included) never holds every point at
//! once: a 10,000-point file of 1.4 MB peaked at 65 MB parsed whole.
//!
//! Only for files whose layout is plain (every line that opens with `[` is a table header with bare keys, no
//! multi-line strings, arrays or inline tables), and only when everything parses cleanly: otherwise, and on
//! any error, [`parse`] returns `None` and the caller parses the whole file as before, which reports every
//! problem exactly as it always did. Spans stay byte offsets into the file: each part is parsed behind a
//! comment as long as the text before it.

use super::{ranges, RawConfig as Config};
use serde::Deserialize;
use shiftlens_common::config::{ConfigFile, Spanned};
use std::ops::Range;

/// The config with its `[[modbus.points]]` parsed a hundred at a time, or `None` (see the module note).
pub(super) fn parse(file: &ConfigFile) -> Option<Config> {
    let text = file.text.as_str();
    let runs = point_runs(text)?;
    // The rest of the file, each run of points blanked out (same length, so spans stay right).
    let mut rest = text.as_bytes().to_vec();
    for (_, run) in &runs {
        rest[run.clone()].fill(b' ');
        if text.as_bytes()[run.end - 1] == b'\n' {
            rest[run.end - 1] = b'\n';
        }
    }
    let rest = String::from_utf8(rest).ok()?;
    let mut config: Config = clean_parse(file, &rest)?;
    drop(rest);
    if config.modbus.iter().any(|d| !d.get_ref().points.is_empty()) {
        return None; // `points = [...]` too: the whole-file parse says what is wrong
    }
    let mut part = String::new();
    for (device, run) in runs {
        part.clear();
        // A comment as long as the text before the run: same byte offsets as in the file.
        part.push('#');
        part.extend(std::iter::repeat_n(' ', run.start.checked_sub(2)?));
        part.push('\n');
        part.push_str(&text[run]);
        let points: Points = clean_parse(file, &part)?;
        config.modbus.get_mut(device)?.get_mut().points.extend(points.modbus.points);
    }
    Some(config)
}

/// Some `[[modbus.points]]` tables of one device.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Points {
    modbus: DevicePoints,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicePoints {
    points: Vec<Spanned<super::modbus::RawModbusPoint>>,
}

/// Parses `text` (the file's or a part of it at the same offsets) when it has no error at all.
fn clean_parse<T: serde::de::DeserializeOwned>(file: &ConfigFile, text: &str) -> Option<T> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut errors = Vec::new();
    ranges::check(doc.get_ref(), file, &mut errors);
    if !errors.is_empty() {
        return None;
    }
    T::deserialize(toml::de::Deserializer::from(doc)).ok()
}

/// Points parsed together: their parse tree stays well under a megabyte.
const POINTS_PER_PART: usize = 100;

/// The runs of `[[modbus.points]]` tables (with their sub-tables, at most [`POINTS_PER_PART`] points each),
/// each with the index of its `[[modbus]]` device; `None` when the layout is not plain or there are none.
fn point_runs(text: &str) -> Option<Vec<(usize, Range<usize>)>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut runs = Vec::new();
    // The run being read: its device, where it starts and how many points it has.
    let (mut devices, mut run, mut offset) = (0usize, None::<(usize, usize, usize)>, 0usize);
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let code = strip_comment(line)?.trim();
        if !code.starts_with('[') {
            // No value may go on over several lines: then every line opening with `[` is a header.
            if !balanced(code) {
                return None;
            }
            continue;
        }
        let (array, name) = header(code)?;
        if name.starts_with("modbus.points.") {
            // A point's sub-table outside a run of points: the whole-file parse decides.
            run?;
            continue;
        }
        if array && name == "modbus.points" {
            match run {
                Some((device, from, n)) if n == POINTS_PER_PART => {
                    runs.push((device, from..start));
                    run = Some((device, start, 1));
                }
                Some((device, from, n)) => run = Some((device, from, n + 1)),
                None => run = Some((devices.checked_sub(1)?, start, 1)),
            }
            continue;
        }
        if let Some((device, from, _)) = run.take() {
            runs.push((device, from..start));
        }
        if array && name == "modbus" {
            devices += 1;
        }
    }
    if let Some((device, from, _)) = run {
        runs.push((device, from..text.len()));
    }
    (!runs.is_empty()).then_some(runs)
}

/// A header's kind (`[[...]]` or `[...]`) and dotted name of bare keys, or `None`.
fn header(code: &str) -> Option<(bool, &str)> {
    let (array, inner) = match code.strip_prefix("[[") {
        Some(rest) => (true, rest.strip_suffix("]]")?),
        None => (false, code.strip_prefix('[')?.strip_suffix(']')?),
    };
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!inner.is_empty() && inner.chars().all(bare)).then_some((array, inner))
}

/// The line without its comment; `None` when it has a quote this simple reading cannot follow.
fn strip_comment(line: &str) -> Option<&str> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return Some(&line[..i]),
            _ => {}
        }
        escaped = false;
    }
    quote.is_none().then_some(line)
}

/// Whether the brackets and braces outside quotes of one line close again on it.
fn balanced(code: &str) -> bool {
    let (mut depth, mut quote, mut escaped) = (0i64, None, false);
    for c in code.chars() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
        escaped = false;
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split parse gives the very config the whole-file parse gives, spans included.
    #[test]
    fn points_parsed_in_parts_equal_the_whole_file_parse() {
        let example = include_str!("../../../config/agent.example.toml");
        let extra = "\n[[modbus]]\nid = \"extra\"\naddress = \"10.0.0.9:502\"\n[[modbus.points]]\nname = \"a\"\nasset = \"press-9\"\ntable = \"holding\"\naddress = 7 # [not a header\ntype = \"u16\"\n[modbus.points.meaning]\nalarm = { id = \"A7\", text = \"x # y\" }\n[[modbus.points]]\nname = \"b\"\nasset = \"press-9\"\ntable = \"coil\"\naddress = 8\ntype = \"bool\"\nmeaning = \"info\"\n";
        // A device with 250 points: three parts.
        let mut many = String::from("[[modbus]]\nid = \"many\"\naddress = \"10.0.0.10:502\"\n");
        for a in 0..250 {
            many.push_str(&format!("[[modbus.points]]\nname = \"m{a}\"\nasset = \"press-8\"\ntable = \"holding\"\naddress = {a}\ntype = \"u16\"\nmeaning = {{ alarm = {{ id = \"M{a}\" }} }}\n"));
        }
        let file = ConfigFile::from_text("agent.toml", format!("{example}{extra}{many}"));
        let runs = point_runs(&file.text).unwrap();
        assert_eq!(runs.iter().filter(|(d, _)| *d == runs.last().unwrap().0).count(), 3);
        let split = parse(&file).expect("the example parses in parts");
        let (whole, errors) = Config::parse_whole(&file).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(format!("{split:?}"), format!("{whole:?}"));
    }

    #[test]
    fn runs_of_points_are_found_per_device_and_odd_layouts_are_left_to_the_whole_file_parse() {
        let text = "site = \"a\"\n[[modbus]]\nid = \"d0\"\n[[modbus.points]]\nname = \"p\" # [x\n[modbus.points.meaning]\nstate = {}\n[[modbus.points]]\nname = \"q\"\n[uplink]\nx = 1\n[[modbus]]\nid = \"d1\"\n[[modbus.points]]\nname = \"r\"\n";
        let runs = point_runs(text).unwrap();
        let parts: Vec<(usize, &str)> = runs.iter().map(|(d, r)| (*d, &text[r.clone()])).collect();
        assert_eq!(
            parts,
            [
                (0, "[[modbus.points]]\nname = \"p\" # [x\n[modbus.points.meaning]\nstate = {}\n[[modbus.points]]\nname = \"q\"\n"),
                (1, "[[modbus.points]]\nname = \"r\"\n")
            ]
        );
        for odd in [
            "[[modbus]]\nx = [\n[1]\n]\n[[modbus.points]]\n",
            "[[modbus]]\nx = \"\"\"\n[a]\n\"\"\"\n[[modbus.points]]\n",
            "[[modbus]]\n[\"modbus\".points]\n[[modbus.points]]\n",
            "[[modbus.points]]\nname = \"p\"\n",
            "[[modbus]]\nid = \"d\"\n",
        ] {
            assert!(point_runs(odd).is_none(), "{odd:?}");
        }
    }
}
