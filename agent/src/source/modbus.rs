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
use shiftlens_common::AssetId;
use std::net::SocketAddr;
use std::time::Duration;

pub mod task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Even,
    Odd,
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

/// A validated Modbus device, as the poll task and `probe` use it.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    pub id: String,
    pub line: Line,
    pub unit: u8,
    pub poll: Duration,
    pub timeout: Duration,
    pub backoff_max: Duration,
    pub coalesce_gap: u16,
    /// The `[[modbus.points]]` first, then the rows of `points_csv`.
    pub points: Vec<ModbusPoint>,
}

/// A validated point: its name, asset, where it lives and what it means.
#[derive(Debug, Clone)]
pub struct ModbusPoint {
    pub name: String,
    pub asset: AssetId,
    pub register: Register,
    pub meaning: Meaning,
}

impl ModbusPoint {
    pub fn register(&self) -> Register {
        self.register
    }
}

impl ModbusDevice {
    /// The assets the device feeds, sorted, each once.
    pub fn assets(&self) -> Vec<AssetId> {
        let mut v: Vec<AssetId> = self.points.iter().map(|p| p.asset.clone()).collect();
        v.sort();
        v.dedup();
        v.shrink_to_fit();
        v
    }
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

/// What polling needs of a [`ModbusPoint`]: where it lives and how to decode it, in 24 bytes and no heap.
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
    /// Whether the point has a `scale` or an `offset`: its value is then `raw × scale + offset`, a float.
    pub scaled: bool,
    /// 1 when not given.
    pub scale: f64,
    /// 0 when not given.
    pub offset: f64,
}

impl Register {
    /// Where the point lives, for [`plan`].
    pub fn span(&self) -> Span {
        (self.table, self.address, self.data_type.width())
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
    if !p.scaled {
        return Some(raw);
    }
    Some(Value::Float(raw.as_f64() * p.scale + p.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::modbus::RawModbusPoint;

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

    fn point(ty: &str, extra: &str) -> RawModbusPoint {
        let text = format!(
            "name = \"p\"\nasset = \"a\"\ntable = \"holding\"\naddress = 0\ntype = \"{ty}\"\nmeaning = \"info\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn register_stays_compact() {
        // The poller keeps one per configured point: 10,000 points at 40 bytes were 0.4 MB of the agent's heap.
        assert!(std::mem::size_of::<Register>() <= 24, "{}", std::mem::size_of::<Register>());
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
