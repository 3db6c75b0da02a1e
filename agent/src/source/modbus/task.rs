//! The I/O half of the Modbus source: one task per line (`ip:port` or serial port) polling every device behind
//! it, each on its own schedule and backoff, running the detector between the reads and the channel.

use super::{decode, plan, Line, ModbusDevice, Parity, Request, Table};
use crate::detect::{Detector, PointSpec, Sample, Value};
use crate::health::Health;
use crate::Observation;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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

/// UTC milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// The points of `req` decoded from its answer, with each point's raw registers or bit.
pub fn points_of(dev: &ModbusDevice, req: &Request, data: &Data) -> Vec<(usize, Option<Value>, String)> {
    req.points
        .iter()
        .map(|&i| {
            let p = dev.points[i].get_ref();
            let off = usize::from(u16::try_from(*p.address.get_ref()).unwrap_or(0).saturating_sub(req.start));
            let width = usize::from(p.data_type.get_ref().width());
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

struct DeviceState {
    dev: ModbusDevice,
    plan: Vec<Request>,
    next_due: Instant,
    backoff: Duration,
    /// Last link state reported to the detector.
    connected: Option<bool>,
    detector: Detector,
}

impl DeviceState {
    fn new(dev: ModbusDevice) -> Self {
        let spans: Vec<_> = dev
            .points
            .iter()
            .map(|p| {
                let p = p.get_ref();
                (p.table, u16::try_from(*p.address.get_ref()).unwrap_or(u16::MAX), p.data_type.get_ref().width())
            })
            .collect();
        let plan = plan(&spans, dev.coalesce_gap);
        let id = dev.id.get_ref().clone();
        let detector = Detector::new(dev.points.iter().map(|p| {
            let p = p.get_ref();
            PointSpec {
                source: id.clone(),
                point: p.name.get_ref().clone(),
                asset: p.asset.clone(),
                meaning: p.meaning.get_ref().clone(),
            }
        }));
        Self { dev, plan, next_due: Instant::now(), backoff: Duration::ZERO, connected: None, detector }
    }

    fn poll(&self) -> Duration {
        self.dev.poll.get_ref().0
    }

    fn first_backoff(&self) -> Duration {
        self.poll().clamp(Duration::from_millis(100), self.dev.backoff_max.0)
    }
}

/// Polls every device on `line` until the receiver of `tx` goes away; link changes also go to `health`.
pub async fn run_line(line: Line, devices: Vec<ModbusDevice>, tx: mpsc::Sender<Observation>, health: Health) {
    let mut devs: Vec<DeviceState> = devices.into_iter().map(DeviceState::new).collect();
    let mut ctx: Option<Context> = None;
    loop {
        let Some(i) = (0..devs.len()).min_by_key(|&i| devs[i].next_due) else { return };
        sleep_until(devs[i].next_due).await;
        let d = &mut devs[i];
        let ts_ms = now_ms();
        let unit = *d.dev.unit.get_ref();
        let limit = d.dev.timeout.get_ref().0;
        let result = async {
            if ctx.is_none() {
                ctx = Some(connect(&line, unit, limit).await.map_err(ReadError::Broken)?);
            }
            let Some(c) = ctx.as_mut() else { return Err(ReadError::Broken("not connected".into())) };
            c.set_slave(Slave(unit));
            let mut values = Vec::new();
            for req in &d.plan {
                let data = read(c, req, limit).await?;
                values.extend(points_of(&d.dev, req, &data).into_iter().filter_map(|(i, v, _)| Some((i, v?))));
            }
            Ok(values)
        }
        .await;
        let id = d.dev.id.get_ref().clone();
        let mut samples = Vec::new();
        match result {
            Ok(values) => {
                if d.connected != Some(true) {
                    info!(device = %id, line = %line, "Modbus device reachable");
                    samples.push(link(&d.dev, ts_ms, true, None));
                    d.connected = Some(true);
                }
                d.backoff = Duration::ZERO;
                samples.extend(values.into_iter().map(|(i, value)| {
                    let p = d.dev.points[i].get_ref();
                    Sample::Value {
                        source: id.clone(),
                        point: p.name.get_ref().clone(),
                        asset: p.asset.clone(),
                        ts_ms,
                        value,
                    }
                }));
                d.next_due += d.poll();
                if d.next_due < Instant::now() {
                    d.next_due = Instant::now() + d.poll();
                }
            }
            Err(e) => {
                if matches!(e, ReadError::Broken(_)) {
                    ctx = None;
                }
                if d.connected != Some(false) {
                    warn!(device = %id, line = %line, error = %e, "Modbus device lost");
                    samples.push(link(&d.dev, ts_ms, false, Some(e.to_string())));
                    d.connected = Some(false);
                }
                d.backoff =
                    if d.backoff.is_zero() { d.first_backoff() } else { (d.backoff * 2).min(d.dev.backoff_max.0) };
                d.next_due = Instant::now() + jitter(d.backoff);
            }
        }
        health.record(&samples);
        let mut out = d.detector.apply(samples);
        out.extend(d.detector.tick(ts_ms));
        for o in out {
            if tx.send(o).await.is_err() {
                return;
            }
        }
    }
}

fn link(dev: &ModbusDevice, ts_ms: i64, connected: bool, error: Option<String>) -> Sample {
    Sample::Link { source: dev.id.get_ref().clone(), assets: dev.assets(), ts_ms, connected, error }
}

/// A random wait between half and all of `d`, so devices that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}
