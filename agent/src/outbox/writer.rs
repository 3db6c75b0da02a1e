//! The outbox writer: one thread that takes observations from a bounded channel and commits everything queued
//! in one transaction (group commit).
//!
//! When a commit fails (disk full, I/O error) the observations stay in memory and the commit is retried every
//! [`RETRY`]; past `memory_bytes` the oldest in memory are dropped and counted, and the next successful commit
//! records them as a `StorageFailed` gap. While commits fail, the count that would be lost by a stop is kept in
//! the outbox's loss record, so a stop before the disk has room again still ends in that gap, recorded by the
//! next start's first commit. When the channel closes (shutdown) everything queued is committed before the
//! thread ends. After each commit the highest committed seq is published on a watch channel.

use super::{Outbox, OutboxError};
use crate::Observation;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Most observations committed in one transaction.
pub const MAX_GROUP: usize = 10_000;
/// Pause between commit attempts while the database cannot be written.
pub const RETRY: Duration = Duration::from_millis(500);
/// While no observation comes, the current run's `last_ms` is moved on this often (see [`super::runs`]): the
/// precision of the gap an unclean stop leaves.
pub const ALIVE: Duration = Duration::from_secs(1);

/// Spawns the writer thread. It ends when every sender of `rx` is dropped and the queue is committed.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    outbox: Arc<Mutex<Outbox>>,
    rx: mpsc::Receiver<Observation>,
    memory_bytes: u64,
    committed: watch::Sender<u64>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new().name("outbox-writer".into()).spawn(move || {
        Writer { outbox, rx, memory_bytes, committed, queue: Queue::default(), loss_record_failed: false }.run(&rt)
    })
}

struct Writer {
    outbox: Arc<Mutex<Outbox>>,
    rx: mpsc::Receiver<Observation>,
    memory_bytes: u64,
    committed: watch::Sender<u64>,
    queue: Queue,
    /// The loss record could not be written last time (warned once).
    loss_record_failed: bool,
}

/// Observations waiting for a commit, with their approximate size, and those already lost.
#[derive(Default)]
struct Queue {
    items: VecDeque<Observation>,
    bytes: u64,
    lost: u64,
}

impl Queue {
    /// Queues `o`; with a `limit`, drops the oldest queued observations beyond it.
    fn push(&mut self, o: Observation, limit: Option<u64>) {
        self.bytes += approx_size(&o);
        self.items.push_back(o);
        while limit.is_some_and(|l| self.bytes > l) {
            let Some(old) = self.items.pop_front() else { break };
            self.bytes -= approx_size(&old).min(self.bytes);
            self.lost += 1;
        }
    }
}

fn approx_size(o: &Observation) -> u64 {
    let strings = match &o.body {
        shiftlens_common::EventBody::State { reason, .. } => reason.as_ref().map_or(0, String::len),
        shiftlens_common::EventBody::Alarm(a) => a.id.len() + a.text.len() + a.class.as_ref().map_or(0, String::len),
        shiftlens_common::EventBody::Source { source, error, .. } => {
            source.len() + error.as_ref().map_or(0, String::len)
        }
        shiftlens_common::EventBody::Gap { .. } => 0,
    };
    (std::mem::size_of::<Observation>() + o.asset.as_str().len() + strings) as u64
}

impl Writer {
    fn run(mut self, rt: &tokio::runtime::Handle) {
        // A loss the previous run could not record is recorded by the first commit.
        self.queue.lost = self.outbox.lock().unwrap_or_else(PoisonError::into_inner).take_recovered_loss();
        let mut loss_recorded = self.queue.lost > 0;
        let mut failing_since: Option<Instant> = None;
        let mut last_attempt = Instant::now();
        let mut closed = false;
        let mut alive = Instant::now();
        loop {
            // Wait for work: until the next alive tick when idle, until the next retry while failing, not at all
            // otherwise.
            if !closed {
                let wait = match (self.queue.items.is_empty() && self.queue.lost == 0, failing_since) {
                    (true, None) => Some(ALIVE.saturating_sub(alive.elapsed()).max(Duration::from_millis(1))),
                    (_, Some(_)) => Some(RETRY.saturating_sub(last_attempt.elapsed())),
                    (false, None) => Some(Duration::ZERO),
                };
                closed = self.receive(rt, wait, failing_since.is_some());
            }
            if failing_since.is_none() && self.queue.items.is_empty() && alive.elapsed() >= ALIVE {
                alive = Instant::now();
                let touched = self
                    .outbox
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .touch_run(shiftlens_common::clock::now_ms());
                if let Err(e) = touched {
                    tracing::debug!(error = %e, "cannot record that the run is alive");
                }
            }
            let retry_due = failing_since.is_none() || last_attempt.elapsed() >= RETRY || closed;
            if retry_due && (!self.queue.items.is_empty() || self.queue.lost > 0) {
                last_attempt = Instant::now();
                match self.commit() {
                    Ok(()) => {
                        alive = Instant::now();
                        if let Some(since) = failing_since.take() {
                            tracing::warn!(after_ms = since.elapsed().as_millis() as u64, "outbox writable again");
                        }
                        if std::mem::take(&mut loss_recorded) {
                            self.record_pending_loss(0);
                        }
                    }
                    Err(e) => {
                        if failing_since.is_none() {
                            tracing::error!(error = %e, disk_full = e.is_disk_full(), "outbox commit failed; holding events in memory");
                            failing_since = Some(Instant::now());
                        }
                        let pending = self.queue.items.len() as u64 + self.queue.lost;
                        let recorded = self.record_pending_loss(pending);
                        loss_recorded = true;
                        if closed {
                            if recorded {
                                tracing::error!(
                                    lost = pending,
                                    "shutting down with events that could not be stored; the next start records them as a gap"
                                );
                            } else {
                                tracing::error!(lost = pending, "shutting down with events that could not be stored");
                            }
                            return;
                        }
                    }
                }
            }
            if closed && self.queue.items.is_empty() && self.queue.lost == 0 {
                return;
            }
        }
    }

    /// Takes queued observations (waiting up to `wait` for the first); returns true once the channel is closed.
    /// While commits work, a full memory queue leaves the rest in the channel (back-pressure); while they
    /// fail, the channel keeps draining and the oldest in memory are dropped, so sources never stall.
    fn receive(&mut self, rt: &tokio::runtime::Handle, wait: Option<Duration>, failing: bool) -> bool {
        let limit = failing.then_some(self.memory_bytes);
        let first = match wait {
            None => rt.block_on(self.rx.recv()).map(Some),
            Some(d) if d.is_zero() => Some(None),
            Some(d) => match rt.block_on(async { tokio::time::timeout(d, self.rx.recv()).await }) {
                Ok(o) => o.map(Some),
                Err(_) => Some(None),
            },
        };
        match first {
            None => return true,
            Some(Some(o)) => self.queue.push(o, limit),
            Some(None) => {}
        }
        let mut taken = 0;
        while taken < MAX_GROUP && (failing || self.queue.bytes < self.memory_bytes) {
            taken += 1;
            match self.rx.try_recv() {
                Ok(o) => self.queue.push(o, limit),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
        false
    }

    /// Keeps the number of events a stop would lose now in the outbox's loss record; false if it failed.
    fn record_pending_loss(&mut self, count: u64) -> bool {
        match self.outbox.lock().unwrap_or_else(PoisonError::into_inner).record_pending_loss(count) {
            Ok(()) => {
                self.loss_record_failed = false;
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.loss_record_failed, true) {
                    tracing::warn!(error = %e, count, "cannot keep the count of events at risk");
                }
                false
            }
        }
    }

    fn commit(&mut self) -> Result<(), OutboxError> {
        let n = self.queue.items.len().min(MAX_GROUP);
        let group: Vec<Observation> = self.queue.items.range(..n).cloned().collect();
        let appended = self.outbox.lock().unwrap_or_else(PoisonError::into_inner).append(&group, self.queue.lost)?;
        if self.queue.lost > 0 {
            tracing::error!(lost = self.queue.lost, "events lost while the outbox could not be written; gap recorded");
        }
        self.queue.lost = 0;
        for o in self.queue.items.drain(..n) {
            self.queue.bytes -= approx_size(&o).min(self.queue.bytes);
        }
        self.committed.send_replace(appended.last_seq);
        Ok(())
    }
}
