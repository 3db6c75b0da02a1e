//! The I/O half of the Modbus source: one task per line (`ip:port` or serial port) polling every device behind
//! it, each on its own schedule and backoff, running the detector between the reads and the channel.

use super::{decode, plan, Line, ModbusDevice, Parity, Register, Request, Table};
use crate::detect::{Detector, Sample, Value};
use crate::health::Health;
use crate::source::Feed;
use crate::Observation;
use shiftlens_common::clock::{now_ms, Backoff};
use shiftlens_common::AssetId;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tracing::{info, warn};

/// Why a read failed. `Exception`: the device answered with a Modbus exception, the connection is fine.
/// `Broken`: timeout or transport error; the connection must be re-opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("Modbus exception: {0}")]
    Exception(String),
    #[error("{0}")]
    Broken(String),
}

/// What one request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

/// Opens a line; `unit` is the first unit id (changed per request with `set_slave`).
///
/// # Errors
/// The connect or open error, as text, or a timeout.
pub async fn connect(line: &Line, unit: u8, limit: Duration) -> Result<Context, String> {
    let slave = Slave(unit);
    match line {
        Line::Tcp(addr) => match timeout(limit, tokio_modbus::client::tcp::connect_slave(*addr, slave)).await {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
            Err(_) => Err(format!("cannot connect to {addr}: timed out after {}ms", limit.as_millis())),
        },
        Line::Rtu { path, baud, parity, data_bits, stop_bits, exclusive } => {
            use tokio_serial::{DataBits, StopBits};
            let builder = tokio_serial::new(path, *baud)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(match data_bits {
                    5 => DataBits::Five,
                    6 => DataBits::Six,
                    7 => DataBits::Seven,
                    _ => DataBits::Eight,
                })
                .stop_bits(if *stop_bits == 2 { StopBits::Two } else { StopBits::One })
                .exclusive(*exclusive);
            let port = tokio_serial::SerialStream::open(&builder).map_err(|e| format!("cannot open {path}: {e}"))?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, slave))
        }
    }
}

/// Sends one read request and waits at most `limit` for the answer.
///
/// # Errors
/// See [`ReadError`].
pub async fn read(ctx: &mut Context, req: &Request, limit: Duration) -> Result<Data, ReadError> {
    let (a, n) = (req.start, req.count);
    let answer = timeout(limit, async {
        match req.table {
            Table::Coil => ctx.read_coils(a, n).await.map(|r| r.map(Data::Bits)),
            Table::DiscreteInput => ctx.read_discrete_inputs(a, n).await.map(|r| r.map(Data::Bits)),
            Table::Holding => ctx.read_holding_registers(a, n).await.map(|r| r.map(Data::Words)),
            Table::Input => ctx.read_input_registers(a, n).await.map(|r| r.map(Data::Words)),
        }
    })
    .await;
    match answer {
        Err(_) => Err(ReadError::Broken(format!("no answer within {}ms", limit.as_millis()))),
        Ok(Err(e)) => Err(ReadError::Broken(format!("transport error: {e}"))),
        Ok(Ok(Err(code))) => Err(ReadError::Exception(format!("{code} ({:#04x})", u8::from(code)))),
        Ok(Ok(Ok(data))) => Ok(data),
    }
}

/// Where point `p`'s data starts in the answer to `req`.
fn offset(p: &Register, req: &Request) -> usize {
    usize::from(p.address.saturating_sub(req.start))
}

/// The points of `req` decoded from its answer, with each point's raw registers or bit (for `probe`).
pub fn points_of(points: &[Register], req: &Request, data: &Data) -> Vec<(usize, Option<Value>, String)> {
    req.points
        .iter()
        .map(|&i| {
            let p = &points[i];
            let off = offset(p, req);
            let width = usize::from(p.data_type.width());
            match data {
                Data::Bits(b) => {
                    let bits = b.get(off..).unwrap_or(&[]);
                    (i, decode(p, &[], bits), bits.first().map_or("-".into(), |b| u8::from(*b).to_string()))
                }
                Data::Words(w) => {
                    let words = w.get(off..).unwrap_or(&[]);
                    let raw = words.iter().take(width).map(|w| format!("{w:#06x}")).collect::<Vec<_>>().join(" ");
                    (i, decode(p, words, &[]), raw)
                }
            }
        })
        .collect()
}

/// Appends the values of `req`'s points decoded from its answer to `out` (points the answer is too short for
/// are left out).
pub fn values_of(points: &[Register], req: &Request, data: &Data, out: &mut Vec<(usize, Value)>) {
    out.extend(req.points.iter().filter_map(|&i| {
        let p = &points[i];
        let off = offset(p, req);
        let value = match data {
            Data::Bits(b) => decode(p, &[], b.get(off..).unwrap_or(&[])),
            Data::Words(w) => decode(p, w.get(off..).unwrap_or(&[]), &[]),
        };
        Some((i, value?))
    }));
}

/// A device as its poll task keeps it: settings, its request plan, a [`Register`] per point and a [`Feed`]
/// whose detector knows each point by index. Point names, spans and the config's strings are not kept, so a large
/// device costs its poller about the size of its detector.
pub struct PolledDevice {
    id: String,
    unit: u8,
    poll: Duration,
    timeout: Duration,
    /// The assets the device feeds, for link samples.
    assets: Vec<AssetId>,
    registers: Vec<Register>,
    plan: Vec<Request>,
    feed: Feed,
    next_due: Instant,
    /// Reconnect delays after failures: from the poll interval (at least 100ms) up to `backoff_max`.
    backoff: Backoff,
    /// Last link state reported to the detector.
    connected: Option<bool>,
}

impl PolledDevice {
    /// Takes what polling needs from a validated device; its samples go through a [`Feed`] to `tx`.
    pub fn new(dev: &ModbusDevice, tx: mpsc::Sender<Observation>, health: Health) -> Self {
        let registers: Vec<Register> = dev.points.iter().map(|p| p.register).collect();
        let spans: Vec<_> = registers.iter().map(Register::span).collect();
        let plan = plan(&spans, dev.coalesce_gap);
        let id = dev.id.clone();
        let detector = Detector::indexed(&id, dev.points.iter().map(|p| (p.asset.clone(), p.meaning.clone())));
        Self {
            id,
            unit: dev.unit,
            poll: dev.poll,
            timeout: dev.timeout,
            assets: dev.assets(),
            registers,
            plan,
            feed: Feed::new(detector, tx, health),
            next_due: Instant::now(),
            backoff: Backoff::new(dev.poll.clamp(Duration::from_millis(100), dev.backoff_max), dev.backoff_max),
            connected: None,
        }
    }

    /// Starts the detector's alarm flags from what was last reported (see [`Detector::restore`]).
    pub fn restore(&mut self, reported: &crate::Reported) {
        self.feed.restore(reported);
    }

    fn link(&self, ts_ms: i64, connected: bool, error: Option<String>) -> Sample {
        Sample::Link { source: self.id.clone(), assets: self.assets.clone(), ts_ms, connected, error }
    }
}

/// Polls every device on `line` until the receiver of `tx` goes away; link changes also go to `health`.
pub async fn run_line(line: Line, devices: Vec<ModbusDevice>, tx: mpsc::Sender<Observation>, health: Health) {
    let devices = devices.iter().map(|d| PolledDevice::new(d, tx.clone(), health.clone())).collect();
    run_devices(line, devices).await;
}

/// [`run_line`] for devices already taken from the config.
pub async fn run_devices(line: Line, mut devs: Vec<PolledDevice>) {
    let mut ctx: Option<Context> = None;
    let mut values = Vec::new();
    loop {
        let Some(i) = (0..devs.len()).min_by_key(|&i| devs[i].next_due) else { return };
        sleep_until(devs[i].next_due).await;
        let d = &mut devs[i];
        let ts_ms = now_ms();
        let (unit, limit) = (d.unit, d.timeout);
        values.clear();
        let result = async {
            if ctx.is_none() {
                ctx = Some(connect(&line, unit, limit).await.map_err(ReadError::Broken)?);
            }
            let Some(c) = ctx.as_mut() else { return Err(ReadError::Broken("not connected".into())) };
            c.set_slave(Slave(unit));
            for req in &d.plan {
                let data = read(c, req, limit).await?;
                values_of(&d.registers, req, &data, &mut values);
            }
            Ok(())
        }
        .await;
        let mut links = Vec::new();
        match result {
            Ok(()) => {
                if d.connected != Some(true) {
                    info!(device = %d.id, line = %line, "Modbus device reachable");
                    links.push(d.link(ts_ms, true, None));
                    d.connected = Some(true);
                }
                d.backoff.reset();
                d.next_due += d.poll;
                if d.next_due < Instant::now() {
                    d.next_due = Instant::now() + d.poll;
                }
            }
            Err(e) => {
                values.clear();
                if matches!(e, ReadError::Broken(_)) {
                    ctx = None;
                }
                if d.connected != Some(false) {
                    warn!(device = %d.id, line = %line, error = %e, "Modbus device lost");
                    links.push(d.link(ts_ms, false, Some(e.to_string())));
                    d.connected = Some(false);
                }
                d.next_due = Instant::now() + d.backoff.next_delay();
            }
        }
        d.feed.samples(links);
        d.feed.values(ts_ms, values.drain(..));
        d.feed.tick(ts_ms);
        if !d.feed.flush().await {
            return;
        }
    }
}
