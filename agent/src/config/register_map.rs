//! A device's points from a CSV register map (`points_csv = "press-1.csv"` on a `[[modbus]]` device), the way
//! OT engineers keep them in spreadsheets. Read row by row with the csv crate: a 10,000-row map costs one row
//! at a time, not a parse tree.
//!
//! Columns (header names, any order): `name`, `asset`, `table`, `address`, `type`, `meaning` are required;
//! `bit`, `word_order`, `byte_order`, `scale`, `offset` are optional, as the point keys of `[[modbus.points]]`.
//! `meaning` is `info`, `alarm` (one alarm per point, from the optional columns `alarm_id`, `text`,
//! `severity`, `class`, `debounce`) or the name of an entry in the device's `meanings` table.
//!
//! Invariants: every problem is reported, each as `file:row:column: column-name: message` (row 1 is the
//! header, the column is counted from 1); a file with any problem adds no points.

use super::modbus::{point_problems, Field, RawModbusDevice, RawModbusPoint};
use crate::detect::meaning::AlarmMeaning;
use crate::detect::Meaning;
use crate::source::modbus::{DataType, Order, Table};
use serde::de::IntoDeserializer;
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::AssetId;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const REQUIRED: &[&str] = &["name", "asset", "table", "address", "type", "meaning"];
const OPTIONAL: &[&str] =
    &["bit", "word_order", "byte_order", "scale", "offset", "alarm_id", "text", "severity", "class", "debounce"];

/// Reads the `points_csv` of every device that has one and appends its points to the device's `points`
/// (recording how many in `csv_points`). The path is relative to `file`'s directory. Problems go to
/// `errors`: an unreadable file at the `points_csv` value in `file`, everything else in the CSV file.
pub fn load(devices: &mut [Spanned<RawModbusDevice>], file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    for dev in devices {
        let d = dev.get_mut();
        let Some(csv_name) = d.points_csv.clone() else { continue };
        let path = resolve(&file.path, csv_name.get_ref());
        let reader = match std::fs::File::open(&path) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) => {
                errors.push(file.error_at(
                    csv_name.span(),
                    format!("cannot read points_csv {:?} ({}): {e}", csv_name.get_ref(), path.display()),
                ));
                continue;
            }
        };
        match read(reader, &path, d) {
            Ok(points) if points.is_empty() && d.points.is_empty() => {
                errors.push(file.error_at(csv_name.span(), format!("points_csv {:?} has no rows", csv_name.get_ref())))
            }
            Ok(points) => {
                d.csv_points = points.len();
                d.points.extend(points.into_iter().map(|p| Spanned::new(0..0, p)));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
}

/// Parses a register map for `dev`: rows may name `dev.meanings` and must not reuse its TOML point names.
///
/// # Errors
/// Every problem found, located in `path`.
pub fn read(
    input: impl std::io::Read,
    path: &Path,
    dev: &RawModbusDevice,
) -> Result<Vec<RawModbusPoint>, Vec<ConfigError>> {
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(input);
    let at = |line: u64, col: usize, message: String| ConfigError {
        path: path.to_path_buf(),
        line: usize::try_from(line).unwrap_or(usize::MAX),
        col,
        message,
    };
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err(vec![at(1, 0, format!("unreadable header: {e}"))]),
    };
    let mut errors = Vec::new();
    for c in REQUIRED {
        if !headers.iter().any(|h| h == c) {
            errors.push(at(1, 0, format!("missing column {c:?} (required: {})", REQUIRED.join(", "))));
        }
    }
    let mut seen = HashSet::new();
    for (i, h) in headers.iter().enumerate() {
        if !REQUIRED.contains(&h.as_str()) && !OPTIONAL.contains(&h.as_str()) {
            errors.push(at(1, i + 1, format!("unknown column {h:?} (optional: {})", OPTIONAL.join(", "))));
        } else if !seen.insert(h.as_str()) {
            errors.push(at(1, i + 1, format!("column {h:?} appears twice")));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut names: HashMap<String, u64> = HashMap::new();
    let toml_names: HashSet<&str> = dev.points.iter().map(|p| p.get_ref().name.get_ref().as_str()).collect();
    let mut points = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                let msg = match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => {
                        format!("bad CSV row: {len} fields, the header has {}", headers.len())
                    }
                    _ => format!("bad CSV row: {e}"),
                };
                errors.push(at(line, 0, msg));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = rec.position().map_or(0, csv::Position::line);
        let mut row = Row { headers: &headers, rec: &rec, problems: Vec::new() };
        let name = row.get("name").to_string();
        if toml_names.contains(name.as_str()) {
            let dev_id = dev.id.get_ref();
            row.bad("name", format!("point name {name:?} is also a [[modbus.points]] name in device {dev_id:?}"));
        } else if let Some(first) = names.insert(name.clone(), line).filter(|_| !name.is_empty()) {
            row.bad("name", format!("point name {name:?} is used twice (first on row {first})"));
        }
        if let Some(p) = row.point(dev) {
            for (field, msg) in point_problems(&p) {
                let col = match field {
                    Field::Name => "name",
                    Field::Address => "address",
                    Field::Type => "type",
                    Field::Bit if row.get("bit").is_empty() => "type",
                    Field::Bit => "bit",
                    Field::Meaning => "meaning",
                };
                row.bad(col, msg);
            }
            points.push(p);
        }
        for (col, msg) in row.problems {
            let i = headers.iter().position(|h| h == col).map_or(0, |i| i + 1);
            errors.push(at(line, i, format!("{col}: {msg}")));
        }
    }
    if errors.is_empty() {
        Ok(points)
    } else {
        Err(errors)
    }
}

/// One CSV row being read; problems are collected, not returned early.
struct Row<'a> {
    headers: &'a [String],
    rec: &'a csv::StringRecord,
    problems: Vec<(&'static str, String)>,
}

impl Row<'_> {
    fn get(&self, col: &str) -> &str {
        self.headers.iter().position(|h| h == col).and_then(|i| self.rec.get(i)).unwrap_or("")
    }

    fn bad(&mut self, col: &'static str, message: String) {
        self.problems.push((col, message));
    }

    fn required(&mut self, col: &'static str) -> Option<String> {
        match self.get(col) {
            "" => {
                self.bad(col, "must not be empty".into());
                None
            }
            v => Some(v.to_string()),
        }
    }

    /// A value parsed with `FromStr`; `None` (no problem) when the cell is empty and `optional`.
    fn parsed<T: std::str::FromStr>(&mut self, col: &'static str, what: &str) -> Option<Option<T>> {
        let v = self.get(col);
        if v.is_empty() {
            return Some(None);
        }
        match v.parse() {
            Ok(x) => Some(Some(x)),
            Err(_) => {
                let msg = format!("{v:?} is not {what}");
                self.bad(col, msg);
                None
            }
        }
    }

    /// One of a fixed set of words (the same as in TOML), e.g. `holding`.
    fn word<T: for<'de> Deserialize<'de>>(&mut self, col: &'static str, choices: &str) -> Option<Option<T>> {
        let v = self.get(col).to_string();
        if v.is_empty() {
            return Some(None);
        }
        match T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(v.as_str())) {
            Ok(x) => Some(Some(x)),
            Err(_) => {
                self.bad(col, format!("{v:?} is not one of {choices}"));
                None
            }
        }
    }

    fn point(&mut self, dev: &RawModbusDevice) -> Option<RawModbusPoint> {
        let name = self.required("name");
        let asset = self.required("asset").and_then(|a| match AssetId::parse(a) {
            Ok(a) => Some(a),
            Err(e) => {
                self.bad("asset", e.to_string());
                None
            }
        });
        let table = self.word::<Table>("table", "coil, discrete_input, holding, input");
        let table = match table {
            Some(None) => {
                self.bad("table", "must not be empty".into());
                None
            }
            t => t.flatten(),
        };
        let address = match self.parsed::<u32>("address", "a whole number 0-65535") {
            Some(None) => {
                self.bad("address", "must not be empty".into());
                None
            }
            a => a.flatten(),
        };
        let data_type = match self.word::<DataType>("type", "bool, bit, u16, i16, u32, i32, f32") {
            Some(None) => {
                self.bad("type", "must not be empty".into());
                None
            }
            t => t.flatten(),
        };
        let bit = self.parsed::<u8>("bit", "a bit number 0-15");
        let word_order = self.word::<Order>("word_order", "big, little");
        let byte_order = self.word::<Order>("byte_order", "big, little");
        let scale = self.parsed::<f64>("scale", "a number");
        let offset = self.parsed::<f64>("offset", "a number");
        let meaning = self.meaning(dev);
        Some(RawModbusPoint {
            name: Spanned::new(0..0, name?),
            asset: asset?,
            table: table?,
            address: Spanned::new(0..0, address?),
            data_type: Spanned::new(0..0, data_type?),
            bit: bit?.map(|b| Spanned::new(0..0, b)),
            word_order: word_order?.unwrap_or_default(),
            byte_order: byte_order?.unwrap_or_default(),
            scale: scale?,
            offset: offset?,
            meaning: Spanned::new(0..0, meaning?),
        })
    }

    fn meaning(&mut self, dev: &RawModbusDevice) -> Option<Meaning> {
        let alarm_columns = ["alarm_id", "text", "severity", "class", "debounce"];
        let meaning = match self.get("meaning") {
            "" => {
                self.bad("meaning", "must not be empty".into());
                return None;
            }
            "info" => Meaning::Info,
            "alarm" => {
                let id = self.required("alarm_id");
                let severity = self.parsed::<u16>("severity", "a whole number 1-1000");
                let debounce = self.parsed::<HumanDuration>("debounce", "a duration such as 500ms or 2s");
                // The same ranges as in TOML (crate::config::ranges).
                let (lo, hi) = crate::config::ranges::SEVERITY;
                if let Some(Some(s)) = severity.filter(|s| s.is_some_and(|s| !(lo..=hi).contains(&s))) {
                    self.bad("severity", format!("severity {s} is out of range ({lo}-{hi})"));
                }
                let max = crate::config::ranges::DEBOUNCE_MAX;
                if let Some(Some(d)) = debounce.filter(|d| d.is_some_and(|d| d.0 > max)) {
                    self.bad("debounce", format!("debounce {d} is out of range (0ms-1h)"));
                }
                let class = Some(self.get("class").to_string()).filter(|c| !c.is_empty());
                let text = self.get("text").to_string();
                return Some(Meaning::Alarm(AlarmMeaning {
                    id: id?,
                    text,
                    severity: severity?.unwrap_or(crate::detect::meaning::DEFAULT_SEVERITY),
                    class,
                    debounce: debounce?,
                }));
            }
            name => match dev.meanings.get(name) {
                Some(m) => m.get_ref().clone(),
                None => {
                    let known: Vec<&str> =
                        ["info", "alarm"].into_iter().chain(dev.meanings.keys().map(String::as_str)).collect();
                    let msg = format!("unknown meaning {name:?} (known: {})", known.join(", "));
                    self.bad("meaning", msg);
                    return None;
                }
            },
        };
        for col in alarm_columns {
            if !self.get(col).is_empty() {
                self.bad(col, "applies to meaning `alarm` only".into());
            }
        }
        Some(meaning)
    }
}

/// The path a device's `points_csv` names, relative to the config file `config`.
pub fn resolve(config: &Path, points_csv: &str) -> PathBuf {
    config.parent().unwrap_or(Path::new("")).join(points_csv)
}
