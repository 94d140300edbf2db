//! The send thread: a thin driver around the [`Schedule`]. It takes new scans from its
//! control channel, asks the schedule what is due now, hands full batches to the sink, tells
//! the receive thread which scans ended, and blocks (on the control channel, so a new scan
//! wakes it) until the schedule's next time, handing batches to extra send threads when
//! there are some (`crate::wire`). No decisions are made here.

use crate::clock::Clock;
use crate::recv_loop::{RecvCtl, RecvCtlTx};
use crate::scan::{Outcome, ScanShared};
use crate::schedule::{Next, Schedule};
use crate::stats::EngineStats;
use crate::wire::{send_counted, Wires};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use portscope_core::Nanos;
use portscope_transport::{PacketSink, SendBatch};
use rand::{rngs::SmallRng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Messages to the send thread.
#[derive(Debug)]
pub(crate) enum SendCtl {
    Add(Arc<ScanShared>),
}

/// Longest single block, so shutdown is noticed promptly.
const MAX_BLOCK: Duration = Duration::from_millis(5);

pub(crate) struct SendLoop {
    pub sink: Box<dyn PacketSink>,
    pub ctl: Receiver<SendCtl>,
    pub recv_ctl: RecvCtlTx,
    pub stats: Arc<EngineStats>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: Arc<AtomicBool>,
    pub max_rate: u64,
    pub batch: usize,
    /// TTL / hop limit written into every probe template.
    pub probe_ttl: u8,
    /// Sinks for extra send threads, each with the CPU to pin it to (`crate::wire`).
    pub extra: Vec<(Box<dyn PacketSink>, Option<usize>)>,
}

impl SendLoop {
    pub(crate) fn run(mut self) {
        let mut schedule =
            Schedule::new(self.max_rate, self.batch, self.probe_ttl, self.clock.now());
        let mut batch = SendBatch::new(self.batch);
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut ended: Vec<(u16, Outcome)> = Vec::new();
        let extra = std::mem::take(&mut self.extra);
        let mut wires = Wires::start(extra, &self.stats, |name, cpu, f| {
            crate::engine::spawn_pinned(name, cpu, "send", f)
        });
        while !self.shutdown.load(Relaxed) {
            while let Ok(SendCtl::Add(s)) = self.ctl.try_recv() {
                schedule.add(s, self.clock.now());
            }
            if wires.unsettled() && schedule.any_waiting() {
                self.settle(&mut wires, &mut schedule);
            }
            let now = self.clock.now();
            schedule.advance(now, &mut ended);
            for (slot, outcome) in ended.drain(..) {
                self.recv_ctl.send(RecvCtl::Remove(slot, outcome));
            }
            match schedule.poll(now, &mut batch, &mut rng) {
                Next::Send => {
                    batch = match wires.offer(batch, now) {
                        Ok(empty) => empty,
                        Err(mut full) => {
                            send_counted(self.sink.as_mut(), &mut full, &self.stats);
                            full
                        }
                    };
                    schedule.sent();
                }
                Next::Idle(until) => {
                    self.settle(&mut wires, &mut schedule);
                    if let Err(RecvTimeoutError::Disconnected) =
                        self.block(until, &mut schedule, now)
                    {
                        return;
                    }
                }
                Next::Empty => {
                    self.settle(&mut wires, &mut schedule);
                    match self.ctl.recv_timeout(Duration::from_millis(50)) {
                        Ok(SendCtl::Add(s)) => schedule.add(s, self.clock.now()),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        }
    }

    /// Waits until the extra send threads have sent all they were handed, then lets the
    /// rounds that ended since the first of those batches wait from now
    /// (`Schedule::on_wire`).
    fn settle(&self, wires: &mut Wires, schedule: &mut Schedule) {
        if let Some(since) = wires.flush() {
            schedule.on_wire(since, self.clock.now());
        }
    }

    /// Lets time pass until `until`, or until a new scan arrives.
    fn block(
        &self,
        until: Nanos,
        schedule: &mut Schedule,
        now: Nanos,
    ) -> Result<(), RecvTimeoutError> {
        if until <= now {
            return Ok(());
        }
        let d = self.clock.pass(until);
        if d.is_zero() {
            return Ok(());
        }
        match self.ctl.recv_timeout(d.min(MAX_BLOCK)) {
            Ok(SendCtl::Add(s)) => {
                schedule.add(s, self.clock.now());
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
