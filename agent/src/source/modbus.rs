//! Modbus TCP and RTU source: config (`[[modbus]]`), validation, request planning, decoding and the poll task.
//!
//! Invariants:
//! - one task per line (`ip:port` or serial port) serves every device behind it, each device with its own poll
//!   schedule and backoff, so many unit ids share one connection and one dead unit id never stalls the others
//!   for longer than one timeout;
//! - after any timeout or transport error the connection is dropped and re-opened: a late answer would
//!   otherwise be taken for the next request's (tokio-modbus matches transaction ids, then errors);
//! - a Modbus exception (the device answered) keeps the connection but marks the device lost like any error;
//! - planning and decoding are pure functions ([`plan`], [`decode`]).

use crate::detect::{Meaning, Value};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::AssetId;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub mod register_map;
pub mod task;

/// One Modbus device (`[[modbus]]`): a unit id on a TCP address or a serial line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Names the device in events, logs and `probe`.
    pub id: Spanned<String>,
    /// Modbus TCP: `ip:port`.
    pub address: Option<Spanned<String>>,
    /// Modbus RTU: the serial port, e.g. `/dev/ttyUSB0`.
    pub serial: Option<Spanned<String>>,
    /// RTU line settings (defaults 9600 baud, no parity, 8 data bits, 1 stop bit).
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<Spanned<u8>>,
    pub stop_bits: Option<Spanned<u8>>,
    /// RTU: lock the port against other openers (TIOCEXCL and flock); default true. `false` lets a line
    /// monitor share it.
    pub exclusive: Option<bool>,
    /// Unit (slave) id; default 1.
    #[serde(default = "default_unit")]
    pub unit: Spanned<u8>,
    /// Poll interval; default 1s.
    #[serde(default = "default_poll")]
    pub poll: Spanned<HumanDuration>,
    /// Answer timeout per request; default 1s.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<HumanDuration>,
    /// Longest wait between reconnect attempts (backoff doubles up to this, with jitter); default 30s.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: HumanDuration,
    /// Unused addresses a coalesced request may read across; default 0 (only adjacent addresses).
    #[serde(default)]
    pub coalesce_gap: u16,
    /// A CSV register map with (more of) the device's points, relative to the config file's directory; read
    /// row by row by [`register_map::load`], so a large map never becomes a TOML tree.
    pub points_csv: Option<Spanned<String>>,
    /// Meanings that rows of `points_csv` name in their `meaning` column.
    #[serde(default)]
    pub meanings: std::collections::BTreeMap<String, Spanned<Meaning>>,
    #[serde(default)]
    pub points: Vec<Spanned<ModbusPoint>>,
    /// How many of `points` (the last ones) came from `points_csv`; those were checked where they were read.
    #[serde(skip)]
    pub csv_points: usize,
}

fn default_unit() -> Spanned<u8> {
    Spanned::new(0..0, 1)
}
fn default_poll() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(1)))
}
fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(1)))
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// One point (`[[modbus.points]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPoint {
    pub name: Spanned<String>,
    pub asset: AssetId,
    pub table: Table,
    /// Zero-based protocol address (0-65535), not the 4xxxx notation.
    pub address: Spanned<u32>,
    #[serde(rename = "type")]
    pub data_type: Spanned<DataType>,
    /// Bit number (0-15) for `type = "bit"`.
    pub bit: Option<Spanned<u8>>,
    /// For 32-bit types: `big` = high word first (ABCD), `little` = low word first (CDAB). Default big.
    #[serde(default)]
    pub word_order: Order,
    /// Byte order inside each register: `big` (Modbus standard) or `little` (swapped, BADC). Default big.
    #[serde(default)]
    pub byte_order: Order,
    /// value × scale + offset, for numbers; either makes the value a float.
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub meaning: Spanned<Meaning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
    /// Most items one request may read.
    pub fn max_count(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    Bit,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    /// Registers (or bits) the type occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// Where a device is reached; devices with the same `Line` share one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Line {
    Tcp(SocketAddr),
    Rtu { path: String, baud: u32, parity: Parity, data_bits: u8, stop_bits: u8, exclusive: bool },
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Tcp(a) => write!(f, "tcp://{a}"),
            Line::Rtu { path, baud, .. } => write!(f, "rtu://{path}@{baud}"),
        }
    }
}

impl ModbusDevice {
    /// The device's line; only meaningful after validation.
    pub fn line(&self) -> Option<Line> {
        if let Some(a) = &self.address {
            return a.get_ref().parse().ok().map(Line::Tcp);
        }
        let path = self.serial.as_ref()?.get_ref().clone();
        Some(Line::Rtu {
            path,
            baud: self.baud.unwrap_or(9600),
            parity: self.parity.unwrap_or(Parity::None),
            data_bits: self.data_bits.as_ref().map_or(8, |d| *d.get_ref()),
            stop_bits: self.stop_bits.as_ref().map_or(1, |d| *d.get_ref()),
            exclusive: self.exclusive.unwrap_or(true),
        })
    }

    pub fn assets(&self) -> Vec<AssetId> {
        let mut v: Vec<AssetId> = self.points.iter().map(|p| p.get_ref().asset.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Checks every `[[modbus]]` device; pushes each problem with its location.
pub fn validate(devices: &[Spanned<ModbusDevice>], file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    let mut ids = HashSet::new();
    for dev in devices {
        let span = dev.span();
        let d = dev.get_ref();
        let mut err = |span: std::ops::Range<usize>, msg: String| errors.push(file.error_at(span, msg));
        let id = d.id.get_ref();
        if id.is_empty() || id.len() > 64 {
            err(d.id.span(), format!("device id {id:?} must be 1-64 characters"));
        }
        if !ids.insert(id.clone()) {
            err(d.id.span(), format!("device id {id:?} is used twice"));
        }
        match (&d.address, &d.serial) {
            (Some(_), Some(s)) => {
                err(s.span(), "a device has either `address` (TCP) or `serial` (RTU), not both".into())
            }
            (None, None) => err(
                span.clone(),
                format!("device {id:?} needs `address = \"ip:port\"` (TCP) or `serial = \"/dev/ttyUSB0\"` (RTU)"),
            ),
            (Some(a), None) => {
                if a.get_ref().parse::<SocketAddr>().is_err() {
                    err(a.span(), format!("address {:?} is not ip:port, e.g. \"192.168.1.10:502\"", a.get_ref()));
                }
                if d.baud.is_some()
                    || d.parity.is_some()
                    || d.data_bits.is_some()
                    || d.stop_bits.is_some()
                    || d.exclusive.is_some()
                {
                    err(
                        a.span(),
                        "baud, parity, data_bits, stop_bits and exclusive apply to `serial` devices only".into(),
                    );
                }
            }
            (None, Some(_)) => {
                if let Some(b) = &d.data_bits {
                    if !(5..=8).contains(b.get_ref()) {
                        err(b.span(), format!("data_bits {} is out of range (5-8)", b.get_ref()));
                    }
                }
                if let Some(b) = &d.stop_bits {
                    if !(1..=2).contains(b.get_ref()) {
                        err(b.span(), format!("stop_bits {} is out of range (1-2)", b.get_ref()));
                    }
                }
                if !(1..=247).contains(d.unit.get_ref()) {
                    err(d.unit.span(), format!("unit {} is out of range for RTU (1-247)", d.unit.get_ref()));
                }
            }
        }
        if d.poll.get_ref().0.is_zero() {
            err(d.poll.span(), "poll must be longer than 0ms".into());
        }
        if d.timeout.get_ref().0.is_zero() {
            err(d.timeout.span(), "timeout must be longer than 0ms".into());
        }
        if d.points.is_empty() && d.points_csv.is_none() {
            err(span.clone(), format!("device {id:?} has no points"));
        }
        for (name, m) in &d.meanings {
            for msg in m.get_ref().check() {
                err(m.span(), format!("meaning {name:?}: {msg}"));
            }
        }
        let mut names = HashSet::new();
        for p in &d.points[..d.points.len() - d.csv_points.min(d.points.len())] {
            let pt = p.get_ref();
            let name = pt.name.get_ref();
            if !names.insert(name.clone()) {
                err(pt.name.span(), format!("point name {name:?} is used twice in device {id:?}"));
            }
            for (field, msg) in point_problems(pt) {
                let span = match field {
                    Field::Name => pt.name.span(),
                    Field::Address => pt.address.span(),
                    Field::Type => pt.data_type.span(),
                    Field::Bit => pt.bit.as_ref().map_or_else(|| pt.data_type.span(), Spanned::span),
                    Field::Meaning => pt.meaning.span(),
                };
                err(span, msg);
            }
        }
    }
}

/// The field of a point a problem is about: a TOML span or a CSV column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Address,
    Type,
    Bit,
    Meaning,
}

/// Every problem of one point on its own (not duplicate names), with the field it is about.
pub fn point_problems(pt: &ModbusPoint) -> Vec<(Field, String)> {
    let mut out = Vec::new();
    let name = pt.name.get_ref();
    if name.is_empty() {
        out.push((Field::Name, "point name must not be empty".into()));
    }
    for msg in check_point(pt) {
        out.push((Field::Meaning, format!("point {name:?}: {msg}")));
    }
    let (addr, ty) = (*pt.address.get_ref(), *pt.data_type.get_ref());
    let last = addr + u32::from(ty.width()) - 1;
    if last > 65535 {
        out.push((Field::Address, format!("address {addr} is out of range (0-65535 for the whole {ty:?})")));
    }
    match (pt.table.is_bits(), ty) {
        (true, DataType::Bool) | (false, DataType::Bit | DataType::U16 | DataType::I16) => {}
        (false, DataType::U32 | DataType::I32 | DataType::F32) => {}
        (true, _) => out.push((Field::Type, format!("a {:?} holds one bit: use type = \"bool\"", pt.table))),
        (false, DataType::Bool) => out.push((
            Field::Type,
            "type \"bool\" is for coils and discrete inputs; for a bit of a register use type = \"bit\" with `bit`"
                .into(),
        )),
    }
    match (&pt.bit, ty) {
        (None, DataType::Bit) => out.push((Field::Type, "type \"bit\" needs `bit` (0-15)".into())),
        (Some(b), DataType::Bit) if *b.get_ref() > 15 => {
            out.push((Field::Bit, format!("bit {} is out of range (0-15)", b.get_ref())))
        }
        (Some(_), t) if t != DataType::Bit => out.push((Field::Bit, "`bit` applies to type \"bit\" only".into())),
        _ => {}
    }
    out
}

fn check_point(pt: &ModbusPoint) -> Vec<String> {
    let meaning = pt.meaning.get_ref();
    let mut errs = meaning.check();
    let ty = *pt.data_type.get_ref();
    let is_bool = matches!(ty, DataType::Bool | DataType::Bit);
    let scaled = pt.scale.is_some() || pt.offset.is_some();
    if is_bool && meaning.needs_number() {
        errs.push(format!("meaning `{}` needs a number, not a {ty:?}", meaning.describe()));
    }
    if (ty == DataType::F32 || scaled) && meaning.needs_integer() {
        errs.push(format!(
            "meaning `{}` needs a whole number; a float or scaled value cannot feed it",
            meaning.describe()
        ));
    }
    if is_bool && scaled {
        errs.push("scale and offset apply to numbers only".into());
    }
    if pt.scale.is_some_and(|s| !s.is_finite() || s == 0.0) || pt.offset.is_some_and(|o| !o.is_finite()) {
        errs.push("scale must be a non-zero finite number and offset finite".into());
    }
    errs
}

/// One read request: `count` items of `table` from `start`, serving the points at `points` (indices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

/// Where a point lives: (table, address, width) - what [`plan`] needs.
pub type Span = (Table, u16, u16);

/// Coalesces points into the fewest requests: per table, sorted by address, a point joins the current
/// request when it starts at most `gap` items after the request's end and the request stays within the
/// table's limit (125 registers, 2000 bits). Points may overlap (two bits of one register).
pub fn plan(spans: &[Span], gap: u16) -> Vec<Request> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].0, spans[i].1));
    let mut out: Vec<Request> = Vec::new();
    for i in order {
        let (table, addr, width) = spans[i];
        let end = u32::from(addr) + u32::from(width);
        if let Some(r) = out.last_mut().filter(|r| r.table == table) {
            let r_end = u32::from(r.start) + u32::from(r.count);
            let new_count = end.max(r_end) - u32::from(r.start);
            if u32::from(addr) <= r_end + u32::from(gap) && new_count <= u32::from(table.max_count()) {
                r.count = u16::try_from(new_count).unwrap_or(u16::MAX);
                r.points.push(i);
                continue;
            }
        }
        out.push(Request { table, start: addr, count: width, points: vec![i] });
    }
    out
}

/// What polling needs of a [`ModbusPoint`]: where it lives and how to decode it, in 40 bytes and no heap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Register {
    pub table: Table,
    /// Zero-based protocol address; validation has checked that it fits.
    pub address: u16,
    pub data_type: DataType,
    /// Bit number for `DataType::Bit`, else 0.
    pub bit: u8,
    pub word_order: Order,
    pub byte_order: Order,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

impl Register {
    /// Where the point lives, for [`plan`].
    pub fn span(&self) -> Span {
        (self.table, self.address, self.data_type.width())
    }
}

impl ModbusPoint {
    /// The point's address and decoding; only meaningful after validation.
    pub fn register(&self) -> Register {
        Register {
            table: self.table,
            address: u16::try_from(*self.address.get_ref()).unwrap_or(u16::MAX),
            data_type: *self.data_type.get_ref(),
            bit: self.bit.as_ref().map_or(0, |b| *b.get_ref()),
            word_order: self.word_order,
            byte_order: self.byte_order,
            scale: self.scale,
            offset: self.offset,
        }
    }
}

/// Decodes a point from the registers starting at its address (`words`) or its bit (`bits[0]`).
pub fn decode(p: &Register, words: &[u16], bits: &[bool]) -> Option<Value> {
    let ty = p.data_type;
    let swap = |w: u16| if p.byte_order == Order::Little { w.swap_bytes() } else { w };
    let dword = || {
        let (a, b) = (swap(*words.first()?), swap(*words.get(1)?));
        let (hi, lo) = if p.word_order == Order::Big { (a, b) } else { (b, a) };
        Some(u32::from(hi) << 16 | u32::from(lo))
    };
    let raw = match ty {
        DataType::Bool => return bits.first().map(|b| Value::Bool(*b)),
        DataType::Bit => {
            let bit = p.bit;
            return words.first().map(|w| Value::Bool(swap(*w) >> bit & 1 == 1));
        }
        DataType::U16 => Value::Int(i64::from(swap(*words.first()?))),
        #[allow(clippy::cast_possible_wrap)]
        DataType::I16 => Value::Int(i64::from(swap(*words.first()?) as i16)),
        DataType::U32 => Value::Int(i64::from(dword()?)),
        #[allow(clippy::cast_possible_wrap)]
        DataType::I32 => Value::Int(i64::from(dword()? as i32)),
        DataType::F32 => Value::Float(f64::from(f32::from_bits(dword()?))),
    };
    if p.scale.is_none() && p.offset.is_none() {
        return Some(raw);
    }
    Some(Value::Float(raw.as_f64() * p.scale.unwrap_or(1.0) + p.offset.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(table: Table, addr: u16, width: u16) -> Span {
        (table, addr, width)
    }

    #[test]
    fn neighbouring_addresses_are_coalesced_per_table() {
        use Table::*;
        let spans = [
            span(Holding, 100, 1),
            span(Holding, 101, 2),
            span(Coil, 5, 1),
            span(Holding, 103, 1),
            span(Holding, 110, 1),
            span(Coil, 6, 1),
            span(Input, 100, 1),
            span(Holding, 100, 1),
        ];
        let reqs = plan(&spans, 0);
        let got: Vec<_> = reqs.iter().map(|r| (r.table, r.start, r.count, r.points.clone())).collect();
        assert_eq!(
            got,
            vec![
                (Coil, 5, 2, vec![2, 5]),
                (Holding, 100, 4, vec![0, 7, 1, 3]),
                (Holding, 110, 1, vec![4]),
                (Input, 100, 1, vec![6]),
            ]
        );
        assert_eq!(plan(&spans, 6).iter().filter(|r| r.table == Holding).count(), 1, "a gap of 6 joins 110");
    }

    #[test]
    fn requests_stay_within_protocol_limits() {
        let regs: Vec<Span> = (0..300).map(|a| span(Table::Holding, a, 1)).collect();
        let reqs = plan(&regs, 0);
        assert_eq!(reqs.iter().map(|r| r.count).collect::<Vec<_>>(), vec![125, 125, 50]);
        let bits: Vec<Span> = (0..4500).map(|a| span(Table::DiscreteInput, a, 1)).collect();
        assert_eq!(plan(&bits, 0).iter().map(|r| r.count).collect::<Vec<_>>(), vec![2000, 2000, 500]);
        // A 32-bit value never straddles two requests.
        let mut wide: Vec<Span> = (0..124).map(|a| span(Table::Input, a, 1)).collect();
        wide.push(span(Table::Input, 124, 2));
        let reqs = plan(&wide, 0);
        assert_eq!(reqs.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(), vec![(0, 124), (124, 2)]);
    }

    fn point(ty: &str, extra: &str) -> ModbusPoint {
        let text = format!(
            "name = \"p\"\nasset = \"a\"\ntable = \"holding\"\naddress = 0\ntype = \"{ty}\"\nmeaning = \"info\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn register_types_decode_in_every_word_and_byte_order() {
        let f = 21.5f32.to_bits();
        let (hi, lo) = ((f >> 16) as u16, f as u16);
        let cases: Vec<(&str, &str, Vec<u16>, Value)> = vec![
            ("u16", "", vec![0xFFFE], Value::Int(65534)),
            ("i16", "", vec![0xFFFE], Value::Int(-2)),
            ("i16", "byte_order = \"little\"", vec![0xFEFF], Value::Int(-2)),
            ("u32", "", vec![0x0001, 0x0002], Value::Int(65538)),
            ("u32", "word_order = \"little\"", vec![0x0002, 0x0001], Value::Int(65538)),
            ("i32", "", vec![0xFFFF, 0xFFFD], Value::Int(-3)),
            ("i32", "word_order = \"little\"\nbyte_order = \"little\"", vec![0xFDFF, 0xFFFF], Value::Int(-3)),
            ("f32", "", vec![hi, lo], Value::Float(21.5)),
            ("f32", "word_order = \"little\"", vec![lo, hi], Value::Float(21.5)),
            ("f32", "byte_order = \"little\"", vec![hi.swap_bytes(), lo.swap_bytes()], Value::Float(21.5)),
            ("bit", "bit = 3", vec![0b1000], Value::Bool(true)),
            ("bit", "bit = 2", vec![0b1000], Value::Bool(false)),
            ("u16", "scale = 0.1\noffset = -5.0", vec![250], Value::Float(20.0)),
        ];
        for (ty, extra, words, want) in cases {
            assert_eq!(decode(&point(ty, extra).register(), &words, &[]), Some(want), "{ty} {extra}");
        }
        assert_eq!(decode(&point("u32", "").register(), &[1], &[]), None, "short data is no value");
    }
}
