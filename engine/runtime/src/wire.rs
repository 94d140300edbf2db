//! Extra send threads (`Engine::start_sending_on`, pinned to `EngineConfig::wire_cpus`):
//! each owns a sink of its own and puts on the wire the batches the send thread hands it.
//! On a veth, and on any NIC whose driver transmits in the caller's context, most of a
//! probe's cost is kernel work done in the sending thread's `sendmmsg` (the whole output
//! path, and in the lab the target's answer too), so a second CPU sending doubles what the
//! wire can take; deciding what to send (the schedule, stamping, pacing) stays on the one
//! send thread.
//!
//! **Invariant:** a round's wait runs from when its last probe left: the send thread
//! [`Wires::flush`]es before it idles and while a scan waits out a round, and then moves
//! the start of such a wait to the flush (`Schedule::on_wire`).

use crate::stats::EngineStats;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use portscope_core::Nanos;
use portscope_transport::{PacketSink, SendBatch};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches a thread may hold at once: one sending, one waiting.
const PER_THREAD: usize = 2;

/// The extra send threads and the batches in flight to them.
pub(crate) struct Wires {
    /// Full batches to the threads (each takes the next one that is free).
    to: Option<Sender<SendBatch>>,
    /// Sent batches, emptied, back to be filled again.
    back: Receiver<SendBatch>,
    /// Batches handed over and not yet back (at most [`PER_THREAD`] per thread).
    in_flight: usize,
    /// Empty batches back from the threads, to fill again.
    spare: Vec<SendBatch>,
    /// When the first batch since the last [`Self::flush`] was handed over.
    since: Option<Nanos>,
    threads: Vec<JoinHandle<()>>,
}

impl Wires {
    /// Starts one thread per sink, pinned to its CPU if given (`spawn`). With no sinks,
    /// every batch is sent by the send thread itself.
    pub(crate) fn start(
        sinks: Vec<(Box<dyn PacketSink>, Option<usize>)>,
        stats: &Arc<EngineStats>,
        spawn: impl Fn(&str, Option<usize>, Box<dyn FnOnce() + Send>) -> JoinHandle<()>,
    ) -> Wires {
        let (to, from) = crossbeam_channel::bounded::<SendBatch>(sinks.len());
        let (back_tx, back) = crossbeam_channel::unbounded();
        let threads: Vec<JoinHandle<()>> = sinks
            .into_iter()
            .enumerate()
            .map(|(i, (sink, cpu))| {
                let (from, back_tx, stats) = (from.clone(), back_tx.clone(), Arc::clone(stats));
                spawn(
                    &format!("ps-wire-{}", i + 1),
                    cpu,
                    Box::new(move || run(sink, &from, &back_tx, &stats)),
                )
            })
            .collect();
        Wires {
            to: (!threads.is_empty()).then_some(to),
            back,
            in_flight: 0,
            spare: Vec::new(),
            since: None,
            threads,
        }
    }

    /// Hands `batch` (filled at `now`) to a free thread and gives back an empty one to
    /// fill, or gives `batch` back full when every thread is busy (the caller sends it
    /// itself, [`send_counted`]).
    pub(crate) fn offer(&mut self, batch: SendBatch, now: Nanos) -> Result<SendBatch, SendBatch> {
        let Some(to) = &self.to else {
            return Err(batch);
        };
        while let Ok(b) = self.back.try_recv() {
            self.in_flight -= 1;
            self.spare.push(b);
        }
        if self.in_flight >= PER_THREAD * self.threads.len() {
            return Err(batch);
        }
        let cap = batch.capacity();
        match to.try_send(batch) {
            Ok(()) => {
                self.in_flight += 1;
                self.since.get_or_insert(now);
                Ok(self.spare.pop().unwrap_or_else(|| SendBatch::new(cap)))
            }
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => Err(b),
        }
    }

    /// Whether a batch was handed over since the last [`Self::flush`].
    pub(crate) fn unsettled(&self) -> bool {
        self.since.is_some()
    }

    /// Waits until every batch handed over is on the wire. Returns when the first of them
    /// since the last flush was handed over, if any was.
    pub(crate) fn flush(&mut self) -> Option<Nanos> {
        while self.in_flight > 0 {
            let Ok(b) = self.back.recv() else { break };
            self.in_flight -= 1;
            self.spare.push(b);
        }
        self.since.take()
    }
}

impl Drop for Wires {
    fn drop(&mut self) {
        self.to = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One extra send thread: sends what it is handed until the send thread hangs up.
fn run(
    mut sink: Box<dyn PacketSink>,
    from: &Receiver<SendBatch>,
    back: &Sender<SendBatch>,
    stats: &EngineStats,
) {
    while let Ok(mut batch) = from.recv() {
        send_counted(sink.as_mut(), &mut batch, stats);
        if back.send(batch).is_err() {
            return;
        }
    }
}

/// Sends `batch` through `sink`, counts it into the engine's stats and empties it.
pub(crate) fn send_counted(sink: &mut dyn PacketSink, batch: &mut SendBatch, stats: &EngineStats) {
    let report = sink.send(batch);
    stats.sent.fetch_add(report.sent as u64, Relaxed);
    stats.send_failed.fetch_add(report.failed as u64, Relaxed);
    batch.clear();
}
