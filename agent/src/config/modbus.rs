//! `[[modbus]]` as written ([`RawModbusDevice`], with the rows of its `points_csv` added by
//! [`super::register_map`]) and its validation without I/O; [`RawModbusDevice::validated`] makes the plain
//! [`ModbusDevice`] the poll task uses.

use crate::detect::Meaning;
use crate::source::modbus::{DataType, Line, ModbusDevice, ModbusPoint, Order, Parity, Register, Table};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use shiftlens_common::AssetId;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// One Modbus device (`[[modbus]]`) as written: a unit id on a TCP address or a serial line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusDevice {
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
    pub points: Vec<Spanned<RawModbusPoint>>,
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

/// One point (`[[modbus.points]]`) as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusPoint {
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

impl RawModbusDevice {
    /// The validated device; `None` when its address does not parse (validation reported that).
    pub fn validated(self) -> Option<ModbusDevice> {
        let line = self.line()?;
        Some(ModbusDevice {
            id: self.id.into_inner(),
            line,
            unit: self.unit.into_inner(),
            poll: self.poll.into_inner().0,
            timeout: self.timeout.into_inner().0,
            backoff_max: self.backoff_max.0,
            coalesce_gap: self.coalesce_gap,
            points: self.points.into_iter().map(|p| p.into_inner().validated()).collect(),
        })
    }

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
}

/// Checks every `[[modbus]]` device; pushes each problem with its location.
pub fn validate(devices: &[Spanned<RawModbusDevice>], file: &ConfigFile, errors: &mut Vec<ConfigError>) {
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
pub fn point_problems(pt: &RawModbusPoint) -> Vec<(Field, String)> {
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

fn check_point(pt: &RawModbusPoint) -> Vec<String> {
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
impl RawModbusPoint {
    /// The validated point (after validation passed).
    pub fn validated(self) -> ModbusPoint {
        ModbusPoint {
            register: self.register(),
            name: self.name.into_inner(),
            asset: self.asset,
            meaning: self.meaning.into_inner(),
        }
    }

    /// The point's address and decoding; only meaningful after validation.
    pub fn register(&self) -> Register {
        Register {
            table: self.table,
            address: u16::try_from(*self.address.get_ref()).unwrap_or(u16::MAX),
            data_type: *self.data_type.get_ref(),
            bit: self.bit.as_ref().map_or(0, |b| *b.get_ref()),
            word_order: self.word_order,
            byte_order: self.byte_order,
            scaled: self.scale.is_some() || self.offset.is_some(),
            scale: self.scale.unwrap_or(1.0),
            offset: self.offset.unwrap_or(0.0),
        }
    }
}
