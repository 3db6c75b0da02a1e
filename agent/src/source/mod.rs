//! Sources: one task per Modbus line (an `ip:port` or serial port shared by its unit ids) and per OPC UA
//! endpoint, each producing [`crate::detect::Sample`]s. Both hand them on the same way, through a [`Feed`]:
//! link samples to [`Health::record`] first (so the status lists each source's link state), then the source's
//! detector, whose observations go to the outbox's channel. Sources take validated config types only.

pub mod modbus;
pub mod opcua;

use crate::detect::{Detector, Sample};
use crate::health::Health;
use crate::{Observation, Reported};
use shiftlens_common::clock::now_ms;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Modbus devices grouped by line, in config order: each group shares one connection.
pub fn modbus_lines(devices: &[modbus::ModbusDevice]) -> Vec<(modbus::Line, Vec<modbus::ModbusDevice>)> {
    let mut lines: Vec<(modbus::Line, Vec<modbus::ModbusDevice>)> = Vec::new();
    for d in devices {
        let line = d.line.clone();
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, devs)) => devs.push(d.clone()),
            None => lines.push((line, vec![d.clone()])),
        }
    }
    lines
}

/// Spawns every source task; each sends its observations on `tx` and ends when `tx`'s receiver is gone.
/// Every configured source is registered in `health` as not yet connected; the tasks record link changes.
/// The detectors start with no alarm reported (see [`spawn_restored`]).
pub fn spawn_all(config: &crate::Config, tx: mpsc::Sender<Observation>, health: Health) -> Vec<JoinHandle<()>> {
    spawn_restored(&mut config.clone(), tx, health, &Reported::new())
}

/// [`spawn_all`] with the detectors' alarm flags started from `reported` (what the outbox says was last
/// reported), so the first poll reports only the alarm edges since. Takes the Modbus devices out of `config`:
/// each device's config is dropped as soon as its poller has its compact form, so at start-up the agent holds
/// one device in both forms, not all of them.
pub fn spawn_restored(
    config: &mut crate::Config,
    tx: mpsc::Sender<Observation>,
    health: Health,
    reported: &Reported,
) -> Vec<JoinHandle<()>> {
    for d in &config.modbus {
        health.register_source(&d.id);
    }
    for ep in &config.opcua {
        health.register_source(&ep.id);
    }
    let mut tasks = Vec::new();
    // Straight from the config to the pollers' compact form: no intermediate copy of the devices.
    let mut lines: Vec<(modbus::Line, Vec<modbus::task::PolledDevice>)> = Vec::new();
    for d in std::mem::take(&mut config.modbus) {
        let line = d.line.clone();
        let mut polled = modbus::task::PolledDevice::new(&d, tx.clone(), health.clone());
        drop(d);
        polled.restore(reported);
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, devs)) => devs.push(polled),
            None => lines.push((line, vec![polled])),
        }
    }
    for (line, devices) in lines {
        tasks.push(tokio::spawn(modbus::task::run_devices(line, devices)));
    }
    for ep in &config.opcua {
        let (stx, srx) = mpsc::channel(1024);
        tasks.push(opcua::spawn_restored(ep, stx, reported));
        let mut feed = Feed::new(Detector::new(ep.point_specs()), tx.clone(), health.clone());
        feed.restore(reported);
        tasks.push(tokio::spawn(detect_task(feed, srx)));
    }
    tasks
}

/// Where every source hands its samples: link samples to [`Health::record`] first, then everything to the
/// source's detector, whose observations go to the outbox's channel. Modbus feeds it from its poll task, OPC UA
/// from the task behind its sample channel ([`detect_task`]); both call the same three methods and [`Feed::flush`].
pub struct Feed {
    detector: Detector,
    health: Health,
    tx: mpsc::Sender<Observation>,
    out: Vec<Observation>,
}

impl Feed {
    pub fn new(detector: Detector, tx: mpsc::Sender<Observation>, health: Health) -> Self {
        Self { detector, health, tx, out: Vec::new() }
    }

    /// Starts the detector's alarm flags from what was last reported (see [`Detector::restore`]).
    pub fn restore(&mut self, reported: &Reported) {
        self.detector.restore(reported);
    }

    /// Samples by point name, and link changes.
    pub fn samples(&mut self, batch: Vec<Sample>) {
        self.health.record(&batch);
        self.out.extend(self.detector.apply(batch));
    }

    /// Values by point index, all read at `ts_ms` (a Modbus poll).
    pub fn values(&mut self, ts_ms: i64, values: impl IntoIterator<Item = (usize, crate::detect::Value)>) {
        self.out.extend(self.detector.apply_values(ts_ms, values));
    }

    /// Debounce timers that ran out by `now_ms`.
    pub fn tick(&mut self, now_ms: i64) {
        self.out.extend(self.detector.tick(now_ms));
    }

    /// Sends what the detector made; `false` once the observation channel is closed (the source should stop).
    pub async fn flush(&mut self) -> bool {
        for o in self.out.drain(..) {
            if self.tx.send(o).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Runs a [`Feed`] behind a sample channel; ticks debounce timers while no samples arrive (subscriptions
/// report only changes).
pub async fn detect_task(mut feed: Feed, mut rx: mpsc::Receiver<Sample>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => {
                    let mut batch = vec![s];
                    while let Ok(s) = rx.try_recv() {
                        batch.push(s);
                    }
                    feed.samples(batch);
                }
                None => return,
            },
            _ = tick.tick() => feed.tick(now_ms()),
        }
        if !feed.flush().await {
            return;
        }
    }
}
