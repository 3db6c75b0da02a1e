//! Modbus TCP (and RTU) server exposing the plant.
//!
//! Register map: asset `i` (its index in [`Plant::asset_ids`], i.e. sorted by id) owns the block of 100
//! addresses starting at `100 * i` in every table. Every unit id sees the same plant.
//!
//! | table | offset | content |
//! | --- | --- | --- |
//! | holding and input registers | 0 | state code (0 idle, 1 running, 2 down, 3 planned) |
//! | | 1 | reason code (0 none) |
//! | | 2 | alarm word (bit n = alarm n) |
//! | | 3-4 | temperature, f32, high word first (ABCD) |
//! | | 5-6 | temperature, f32, low word first (CDAB) |
//! | | 7-8 | parts counter, u32, high word first |
//! | | 9-10 | parts counter, u32, low word first |
//! | | 11 | temperature × 10, i16 |
//! | | 12-13 | temperature × 1000, i32, high word first |
//! | | 14 | alarm word with its two bytes swapped |
//! | | 15-99 | 0 |
//! | coils | 0-15 | alarm bits |
//! | discrete inputs | 0-15 | alarm bits |
//! | | 16, 17 | running (state 1), down (state 2) |
//!
//! Addresses past the last asset's block answer `IllegalDataAddress`; writes answer `IllegalFunction`.
//!
//! Misbehaviour ([`crate::plant::Faults`]): `drop_connections` closes every connection at its next request
//! and refuses new ones; `modbus_exception` answers every request with that code; `delay_ms` delays each
//! answer. [`ModbusServer::set_silent_units`] makes unit ids that never answer (a dead slave behind a
//! gateway) and [`ModbusServer::restart`] closes everything and listens again on the same address.
//! [`ModbusServer::requests`] and [`ModbusServer::connections`] count requests and accepted connections.

use crate::plant::{AssetPoints, Plant};
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};

/// Addresses per asset block.
pub const BLOCK: u16 = 100;

/// Shared counters and switches of one server.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    silent: Mutex<HashSet<u8>>,
}

/// Answers Modbus requests from the plant.
#[derive(Debug, Clone)]
pub struct PlantService {
    plant: Plant,
    stats: Arc<Stats>,
}

impl PlantService {
    pub fn new(plant: Plant, stats: Arc<Stats>) -> Self {
        Self { plant, stats }
    }
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl tokio_modbus::server::Service for PlantService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let faults = self.plant.faults();
        let silent = self.stats.silent.lock().unwrap_or_else(|p| p.into_inner()).contains(&req.slave);
        let answer = if silent {
            Ok(None)
        } else if let Some(code) = faults.modbus_exception {
            Err(ExceptionCode::new(code))
        } else {
            answer(&self.plant, &req.request).map(Some)
        };
        let delay = Duration::from_millis(faults.delay_ms);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}

/// The register of `table` (holding/input share one map) at `offset` of an asset's block.
pub fn register(p: &AssetPoints, offset: u16) -> u16 {
    let t = p.temperature.to_bits();
    #[allow(clippy::cast_possible_truncation)]
    let deci = (p.temperature * 10.0).round() as i16;
    #[allow(clippy::cast_possible_truncation)]
    let milli = (f64::from(p.temperature) * 1000.0).round() as i32;
    #[allow(clippy::cast_sign_loss)]
    let (deci, milli) = (deci as u16, milli as u32);
    let hi = |v: u32| (v >> 16) as u16;
    #[allow(clippy::cast_possible_truncation)]
    let lo = |v: u32| v as u16;
    match offset {
        0 => p.state,
        1 => p.reason,
        2 => p.alarms,
        3 | 6 => hi(t),
        4 | 5 => lo(t),
        7 | 10 => hi(p.parts),
        8 | 9 => lo(p.parts),
        11 => deci,
        12 => hi(milli),
        13 => lo(milli),
        14 => p.alarms.swap_bytes(),
        _ => 0,
    }
}

/// The bit at `offset` of an asset's block; `discrete` adds the running/down inputs.
pub fn bit(p: &AssetPoints, offset: u16, discrete: bool) -> bool {
    match offset {
        0..=15 => p.alarms >> offset & 1 == 1,
        16 if discrete => p.state == 1,
        17 if discrete => p.state == 2,
        _ => false,
    }
}

fn answer(plant: &Plant, req: &Request<'_>) -> Result<Response, ExceptionCode> {
    let (addr, count) = match req {
        Request::ReadCoils(a, n)
        | Request::ReadDiscreteInputs(a, n)
        | Request::ReadHoldingRegisters(a, n)
        | Request::ReadInputRegisters(a, n) => (*a, *n),
        _ => return Err(ExceptionCode::IllegalFunction),
    };
    let is_bits = matches!(req, Request::ReadCoils(..) | Request::ReadDiscreteInputs(..));
    let max = if is_bits { 2000 } else { 125 };
    if count == 0 || count > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let blocks = plant.len();
    let end = usize::from(addr) + usize::from(count);
    if end > blocks * usize::from(BLOCK) || end > 65536 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    let mut cache: Option<(usize, AssetPoints)> = None;
    let mut at = |a: u16| -> AssetPoints {
        let i = usize::from(a / BLOCK);
        match &cache {
            Some((j, p)) if *j == i => p.clone(),
            _ => {
                let p = plant.nth(i).unwrap_or_default();
                cache = Some((i, p.clone()));
                p
            }
        }
    };
    let addrs = (0..count).map(|k| addr + k);
    Ok(match req {
        Request::ReadCoils(..) => Response::ReadCoils(addrs.map(|a| bit(&at(a), a % BLOCK, false)).collect()),
        Request::ReadDiscreteInputs(..) => {
            Response::ReadDiscreteInputs(addrs.map(|a| bit(&at(a), a % BLOCK, true)).collect())
        }
        Request::ReadHoldingRegisters(..) => {
            Response::ReadHoldingRegisters(addrs.map(|a| register(&at(a), a % BLOCK)).collect())
        }
        _ => Response::ReadInputRegisters(addrs.map(|a| register(&at(a), a % BLOCK)).collect()),
    })
}

/// A TCP stream that fails its next read while the plant's `drop_connections` fault is set.
struct Droppable {
    stream: TcpStream,
    plant: Plant,
}

impl AsyncRead for Droppable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.plant.faults().drop_connections {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "fault: drop connections")));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Droppable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A running Modbus TCP server; stops when dropped.
#[derive(Debug)]
pub struct ModbusServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    restart: Arc<(Notify, Mutex<Duration>)>,
    task: JoinHandle<()>,
}

impl ModbusServer {
    /// Serves `plant` on `listener` (bind port 0 in tests).
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn start(plant: Plant, listener: TcpListener) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let restart = Arc::new((Notify::new(), Mutex::new(Duration::ZERO)));
        let task = tokio::spawn(supervise(plant, listener, stats.clone(), restart.clone()));
        Ok(Self { addr, stats, restart, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far, including those the `drop_connections` fault closes at once.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Unit ids that never answer, like a dead slave behind a gateway.
    pub fn set_silent_units(&self, units: &[u8]) {
        *self.stats.silent.lock().unwrap_or_else(|p| p.into_inner()) = units.iter().copied().collect();
    }

    /// Closes every connection, stays away for `down`, then listens again on the same address.
    pub fn restart(&self, down: Duration) {
        restart_server(&self.restart, down);
    }

    /// A handle that restarts this server from elsewhere (the scenario player).
    pub fn restarter(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        let r = self.restart.clone();
        move |down| restart_server(&r, down)
    }
}

fn restart_server(r: &(Notify, Mutex<Duration>), down: Duration) {
    *r.1.lock().unwrap_or_else(|p| p.into_inner()) = down;
    r.0.notify_one();
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(plant: Plant, listener: TcpListener, stats: Arc<Stats>, restart: Arc<(Notify, Mutex<Duration>)>) {
    let Ok(addr) = listener.local_addr() else { return };
    let mut listener = Some(listener);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot listen again; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let server = tokio_modbus::server::tcp::Server::new(l);
        let (plant, stats) = (plant.clone(), stats.clone());
        let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
            let (plant, stats) = (plant.clone(), stats.clone());
            async move {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                if plant.faults().drop_connections {
                    return Ok(None);
                }
                let _ = stream.set_nodelay(true);
                Ok(Some((PlantService::new(plant.clone(), stats), Droppable { stream, plant })))
            }
        };
        let on_error = |e: io::Error| tracing::debug!(error = %e, "Modbus connection closed");
        tokio::select! {
            r = server.serve(&on_connected, on_error) => {
                tracing::warn!(%addr, result = ?r, "Modbus server stopped");
                return;
            }
            () = restart.0.notified() => {}
        }
        let down = *restart.1.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(%addr, down_ms = down.as_millis(), "Modbus server restarting");
        tokio::time::sleep(down).await;
    }
}

/// Serves `plant` over Modbus RTU on a serial port (or one end of a pty pair) until the port fails.
pub fn serve_rtu(plant: Plant, port: tokio_serial::SerialStream) -> JoinHandle<io::Result<()>> {
    let service = PlantService::new(plant, Arc::new(Stats::default()));
    tokio::spawn(tokio_modbus::server::rtu::Server::new(port).serve_forever(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_hold_each_encoding_of_the_same_value() {
        let p = AssetPoints { state: 2, reason: 12, alarms: 0x0109, temperature: -21.5, parts: 70_000 };
        let regs: Vec<u16> = (0..16).map(|o| register(&p, o)).collect();
        assert_eq!(&regs[0..3], &[2, 12, 0x0109]);
        let f = |a: u16, b: u16| f32::from_bits(u32::from(a) << 16 | u32::from(b));
        assert_eq!(f(regs[3], regs[4]), -21.5);
        assert_eq!(f(regs[6], regs[5]), -21.5);
        assert_eq!(u32::from(regs[7]) << 16 | u32::from(regs[8]), 70_000);
        assert_eq!(u32::from(regs[10]) << 16 | u32::from(regs[9]), 70_000);
        assert_eq!(regs[11] as i16, -215);
        assert_eq!((u32::from(regs[12]) << 16 | u32::from(regs[13])) as i32, -21_500);
        assert_eq!(regs[14], 0x0901);
        assert!(bit(&p, 0, false) && bit(&p, 3, true) && bit(&p, 8, false) && !bit(&p, 1, false));
        assert!(bit(&p, 17, true) && !bit(&p, 16, true) && !bit(&p, 17, false));
    }
}
