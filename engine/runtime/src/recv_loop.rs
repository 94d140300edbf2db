//! The receive thread: reads candidate replies in batches, validates them against the scan
//! that owns the destination port, de-duplicates, measures RTT, and emits observations.
//!
//! Everything that is not a valid first reply is counted by reason and dropped. This thread
//! is the only writer of `AnsweredSet`s and RTT estimates.
//!
//! A reply's destination port names its scan (the slot's block), except for scans with a
//! fixed source port: a reply to such a port is tried against each of them, and the cookie
//! picks the one that sent it. Their replies do not say which round they answer either: the
//! round the pair was last sent in stands in, and RTT samples are taken only from pairs
//! sent once (Karn's rule), so a reply to an earlier send never shortens the wait.

use crate::clock::Clock;
use crate::scan::{Msg, Outcome, ScanShared};
use crate::slots::Slots;
use crate::stats::EngineStats;
use crossbeam_channel::Receiver;
use portscope_core::classify::{split_port, Discard, DiscardCounts, Observation, SLOTS};
use portscope_core::reply;
use portscope_core::rtt::{self, RttEstimator};
use portscope_core::Nanos;
use portscope_transport::{PacketSource, RecvBatch, Waker};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Messages to the receive thread.
#[derive(Debug)]
pub(crate) enum RecvCtl {
    /// Start accepting replies for a scan; acknowledged once the slot is live, so the send
    /// thread never probes before replies can be matched.
    Add(Arc<ScanShared>, crossbeam_channel::Sender<()>),
    /// The scan is over: stop accepting, tell the handle, free the slot.
    Remove(u16, Outcome),
}

/// The sending end of the receive thread's control channel. Each message also wakes the
/// thread's source if it can be woken, so a scan that starts or ends is taken up at once,
/// not at the end of the thread's current wait.
#[derive(Debug, Clone)]
pub(crate) struct RecvCtlTx {
    tx: crossbeam_channel::Sender<RecvCtl>,
    wake: Option<Waker>,
}

impl RecvCtlTx {
    pub(crate) fn new(tx: crossbeam_channel::Sender<RecvCtl>, wake: Option<Waker>) -> Self {
        RecvCtlTx { tx, wake }
    }

    /// Sends `m` (dropped if the thread is gone) and wakes the thread.
    pub(crate) fn send(&self, m: RecvCtl) {
        let _ = self.tx.send(m);
        self.wake();
    }

    /// Wakes the thread without a message (to see the shutdown flag).
    pub(crate) fn wake(&self) {
        if let Some(w) = &self.wake {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Entry {
    shared: Arc<ScanShared>,
    /// RTT samples: from each probe's send to its reply's arrival (`rtt::sample`).
    rtt: RttEstimator,
    /// How long the kernel held each stamped reply before this thread read it (a receive
    /// ring's block hand-over, `recvmmsg`'s gathering and this thread's lag). Empty without
    /// stamps (the memory transport, a kernel refusing them), where `rtt`'s samples run to
    /// the read and so include it.
    lag: RttEstimator,
    dirty: bool,
    /// When the RTT figures were last published (quantiles cost more than a batch).
    published: Nanos,
    /// This batch's first valid replies, sent to the handle as one message after it.
    found: Vec<(Observation, Nanos)>,
}

impl Entry {
    fn new(shared: Arc<ScanShared>) -> Self {
        Entry {
            shared,
            rtt: RttEstimator::new(),
            lag: RttEstimator::new(),
            dirty: false,
            published: Nanos(0),
            found: Vec::with_capacity(FOUND_ROOM),
        }
    }

    /// Sends the replies found in this batch to the handle, if any.
    fn send_found(&mut self) {
        if !self.found.is_empty() {
            let found = std::mem::replace(&mut self.found, Vec::with_capacity(FOUND_ROOM));
            let _ = self.shared.events.send(Msg::Ports(found));
        }
    }

    /// Publishes the RTT-derived wait and quantiles to the scan.
    fn publish(&mut self, now: Nanos) {
        self.dirty = false;
        self.published = now;
        let s = &self.shared;
        let lag = self.lag.quantile(0.99).unwrap_or(Nanos(0));
        s.wait_ns
            .store(self.rtt.wait_after(lag, s.bounds).0, Relaxed);
        if let (Some(p50), Some(p99)) = (self.rtt.quantile(0.5), self.rtt.quantile(0.99)) {
            s.rtt_p50_ns.store(p50.0, Relaxed);
            s.rtt_p99_ns.store(p99.0, Relaxed);
        }
    }
}

/// How often a scan's RTT figures are recomputed while replies arrive.
const PUBLISH_EVERY: Nanos = Nanos::from_micros(500);

/// Room for the replies of one batch to one scan (a full batch grows it).
const FOUND_ROOM: usize = 64;

pub(crate) struct RecvLoop {
    pub source: Box<dyn PacketSource>,
    pub ctl: Receiver<RecvCtl>,
    pub stats: Arc<EngineStats>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: Arc<AtomicBool>,
    pub slots: Arc<Slots>,
    pub batch: usize,
}

impl RecvLoop {
    pub(crate) fn run(mut self) {
        let mut table: Vec<Option<Entry>> = (0..SLOTS).map(|_| None).collect();
        // (fixed source port, slot) of the scans that have one.
        let mut fixed: Vec<(u16, u16)> = Vec::new();
        // Scans the send thread has ended, finished once the capture socket is drained and
        // the source's settle time has passed (replies in a ring block not yet handed over).
        let mut closing: Vec<(u16, Outcome, Nanos)> = Vec::new();
        let settle = Nanos(u64::try_from(self.source.settle_time().as_nanos()).unwrap_or(u64::MAX));
        let mut batch = RecvBatch::new(self.batch);
        let mut discards = DiscardCounts::default();
        let mut last_kstats = self.clock.now();
        while !self.shutdown.load(Relaxed) {
            while let Ok(m) = self.ctl.try_recv() {
                match m {
                    RecvCtl::Add(s, ack) => {
                        let slot = usize::from(s.space.slot());
                        if let Some(port) = s.space.fixed_port() {
                            fixed.push((port, s.space.slot()));
                        }
                        table[slot] = Some(Entry::new(s));
                        let _ = ack.send(());
                    }
                    // Not yet: replies already queued in the capture socket still count.
                    RecvCtl::Remove(slot, outcome) => {
                        tracing::debug!(slot, pending = self.source.pending(), "scan closing");
                        closing.push((slot, outcome, self.clock.now().add(settle)));
                    }
                }
            }
            let wait = match closing.iter().map(|c| c.2).min() {
                None => Duration::from_millis(2),
                // Nothing the kernel holds is hidden from us: read what is there and end.
                Some(_) if !self.source.pending() => Duration::ZERO,
                Some(due) => due.since(self.clock.now()).as_duration(),
            };
            if let Err(e) = self.source.recv(&mut batch, wait) {
                // A broken capture socket cannot recover by retrying fast.
                tracing::error!(error = %e, "receive error");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            // A batch that is not full means the socket was drained when it was read: every
            // reply that reached the kernel before the scan ended has now been seen.
            let drained = batch.len() < batch.capacity();
            if !batch.is_empty() {
                let now = self.clock.now();
                let mut accepted = 0;
                for i in 0..batch.len() {
                    let age = batch.age(i).map(Nanos::from);
                    match handle(batch.get(i), &mut table, &fixed, now, age) {
                        Ok(()) => accepted += 1,
                        Err(d) => discards.record(d),
                    }
                }
                self.stats.received.fetch_add(batch.len() as u64, Relaxed);
                self.stats.accepted.fetch_add(accepted, Relaxed);
            }
            if drained && !closing.is_empty() {
                // Read dry and nothing hidden in an open ring block: every reply that
                // reached the kernel before the scans ended is in.
                let settled = !self.source.pending();
                finish(
                    &mut closing,
                    &mut table,
                    &mut fixed,
                    &self.slots,
                    self.clock.now(),
                    settled,
                );
            }
            self.publish(&mut table, &mut discards, &mut last_kstats);
            // A thin batch: replies trickle in one wake-up each. Let them gather for a
            // moment, so the next call reads many per syscall (waits are >= 3 ms anyway).
            // (An empty batch has waited already.)
            let gather = self.source.gather_time();
            if !gather.is_zero()
                && !batch.is_empty()
                && batch.len() < batch.capacity() / 8
                && closing.is_empty()
            {
                std::thread::sleep(gather);
            }
        }
    }

    /// After each batch: every scan's found replies to its handle (one message each), its
    /// RTT figures if due, the discard counts and, now and then, the kernel's drop count.
    fn publish(
        &mut self,
        table: &mut [Option<Entry>],
        discards: &mut DiscardCounts,
        last: &mut Nanos,
    ) {
        self.stats.add_discards(discards);
        let now = self.clock.now();
        for e in table.iter_mut().flatten() {
            e.send_found();
            if e.dirty && now.since(e.published) >= PUBLISH_EVERY {
                e.publish(now);
            }
        }
        if now.since(*last) > Nanos::from_millis(100) {
            *last = now;
            let k = self.source.kernel_stats();
            self.stats.kernel_drops.store(k.dropped, Relaxed);
        }
    }
}

/// Ends the closing scans whose settle time is over by `now`, or all of them if the source
/// is `settled` (nothing received is hidden): no more replies are accepted, the handle is
/// told, the slot is free for a new scan (whose fresh key rejects any late reply to the
/// old one).
fn finish(
    closing: &mut Vec<(u16, Outcome, Nanos)>,
    table: &mut [Option<Entry>],
    fixed: &mut Vec<(u16, u16)>,
    slots: &Slots,
    now: Nanos,
    settled: bool,
) {
    // In place: called after every drained batch, so no allocation and no work when nothing
    // is closing.
    let mut i = 0;
    while i < closing.len() {
        if closing[i].2 > now && !settled {
            i += 1;
            continue;
        }
        let (slot, outcome, due) = closing.swap_remove(i);
        tracing::debug!(
            slot,
            ?outcome,
            settled,
            early_us = due.0.saturating_sub(now.0) / 1_000,
            "scan closed"
        );
        fixed.retain(|&(_, s)| s != slot);
        if let Some(mut e) = table[usize::from(slot)].take() {
            if e.dirty {
                e.publish(e.published);
            }
            e.send_found();
            let _ = e.shared.events.send(Msg::Ended(outcome));
        }
        slots.free(slot);
    }
}

/// Validates one frame read at `now` and, if it is a first valid reply, records it and
/// keeps it for the batch's message to its scan's handle. `age` is how long the kernel had
/// held it by then (its receive stamp), if known: the RTT sample runs to its arrival, not to
/// when this thread got to it (`rtt::sample`).
#[inline]
fn handle(
    frame: &[u8],
    table: &mut [Option<Entry>],
    fixed: &[(u16, u16)],
    now: Nanos,
    age: Option<Nanos>,
) -> Result<(), Discard> {
    let r = reply::parse(frame)?;
    let (slot, mut o) = owner(&r, table, fixed)?;
    let Some(e) = table[usize::from(slot)].as_mut() else {
        return Err(Discard::NoScan);
    };
    let s = &e.shared;
    let pos = s.space.position_of(o.pair);
    let once = s.space.fixed_port().is_some();
    if once {
        o.round = s.log.last_round(pos);
    }
    if !s.answered.insert(o.pair) {
        s.duplicates.fetch_add(1, Relaxed);
        return Err(Discard::Duplicate);
    }
    s.replies.fetch_add(1, Relaxed);
    s.round_replies[usize::from(o.round)].fetch_add(1, Relaxed);
    // A fixed-port pair sent in a later round may answer an earlier send: no sample.
    let sample = !once || o.round == 0;
    if let Some(sent) = s.log.sent_at(pos, o.round).filter(|_| sample) {
        e.rtt.record(rtt::sample(sent, now, age));
        if let Some(a) = age {
            e.lag.record(a);
        }
        e.dirty = true;
    }
    e.found.push((o, now));
    Ok(())
}

/// The scan a reply belongs to and what it proves: the scans sending from a fixed port equal
/// to the reply's first (the cookie decides), then the scan whose slot owns the port.
#[inline]
fn owner(
    r: &reply::Reply,
    table: &[Option<Entry>],
    fixed: &[(u16, u16)],
) -> Result<(u16, Observation), Discard> {
    let mut why = Discard::NoScan;
    for &(port, slot) in fixed {
        if port != r.local_port {
            continue;
        }
        if let Some(e) = &table[usize::from(slot)] {
            match e.shared.space.classify(r) {
                Ok(o) => return Ok((slot, o)),
                Err(d) => why = d,
            }
        }
    }
    match split_port(r.local_port) {
        Some((slot, _)) => match &table[usize::from(slot)] {
            Some(e) => e.shared.space.classify(r).map(|o| (slot, o)),
            None => Err(why),
        },
        None => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::retry::RetryPolicy;
    use portscope_core::rtt::WaitBounds;
    use std::net::IpAddr;

    fn table_with_scan() -> (Vec<Option<Entry>>, Arc<ScanShared>) {
        let (table, s, _rx) = table_with_events();
        (table, s)
    }

    fn table_with_events() -> (Vec<Option<Entry>>, Arc<ScanShared>, Receiver<Msg>) {
        let space = crate::scan::lab_space(3, "1-100");
        let (tx, rx) = crossbeam_channel::unbounded();
        let bounds = WaitBounds::default();
        let s = Arc::new(ScanShared::new(
            1,
            1,
            space,
            RetryPolicy::default(),
            1,
            bounds,
            tx,
        ));
        let mut table: Vec<Option<Entry>> = (0..SLOTS).map(|_| None).collect();
        table[usize::from(s.space.slot())] = Some(Entry::new(s.clone()));
        (table, s, rx)
    }

    #[test]
    fn a_batchs_first_replies_reach_the_handle_as_one_message_in_order() {
        let (mut table, s, rx) = table_with_events();
        let slot = usize::from(s.space.slot());
        let read = Nanos::from_millis(15);
        for pos in [4, 1, 7] {
            s.log.record(pos, 0, Nanos::from_millis(10));
            handle(&rst_to(&s, pos), &mut table, &[], read, None).unwrap();
        }
        // A duplicate is not kept twice.
        assert_eq!(
            handle(&rst_to(&s, 1), &mut table, &[], read, None),
            Err(Discard::Duplicate)
        );
        assert!(rx.is_empty(), "nothing is sent before the batch is over");
        let e = table[slot].as_mut().unwrap();
        e.send_found();
        e.send_found();
        let Ok(Msg::Ports(found)) = rx.try_recv() else {
            panic!("one Ports message")
        };
        let pairs: Vec<u64> = found.iter().map(|(o, _)| o.pair).collect();
        let want: Vec<u64> = [4, 1, 7].map(|p| s.space.pair_at(p)).to_vec();
        assert_eq!(pairs, want);
        assert!(found.iter().all(|(_, at)| *at == read));
        assert!(rx.is_empty(), "an empty batch sends nothing");
    }

    /// The target kernel's RST|ACK to round 0's probe of the pair at send position `pos`.
    fn rst_to(s: &ScanShared, pos: u64) -> Vec<u8> {
        let p = s.space.probe(s.space.pair_at(pos), 0);
        let (IpAddr::V4(d), IpAddr::V4(src)) = (p.dst, p.src) else {
            unreachable!()
        };
        let mut b = vec![0u8; 40];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        b[8] = 64;
        b[9] = 6;
        b[12..16].copy_from_slice(&d.octets());
        b[16..20].copy_from_slice(&src.octets());
        b[20..22].copy_from_slice(&p.dst_port.to_be_bytes());
        b[22..24].copy_from_slice(&p.src_port.to_be_bytes());
        b[28..32].copy_from_slice(&p.seq.wrapping_add(1).to_be_bytes());
        b[32] = 0x50;
        b[33] = 0x14;
        b
    }

    #[test]
    fn rtt_samples_run_to_the_kernels_receive_time_when_the_transport_has_it() {
        let (mut table, s) = table_with_scan();
        let slot = usize::from(s.space.slot());
        let sent = Nanos::from_millis(10);
        s.log.record(0, 0, sent);
        s.log.record(1, 0, sent);
        let read = Nanos::from_millis(15);
        // Held 4.6 ms in a ring block: a 400 us sample, not 5 ms.
        handle(
            &rst_to(&s, 0),
            &mut table,
            &[],
            read,
            Some(Nanos::from_micros(4_600)),
        )
        .unwrap();
        let e = table[slot].as_ref().unwrap();
        assert_eq!(e.rtt.samples(), 1);
        let p50 = e.rtt.quantile(0.5).unwrap();
        assert!(
            p50 >= Nanos::from_micros(400) && p50 < Nanos::from_micros(405),
            "{p50:?}"
        );
        // No stamp (the memory transport): the read time stands in.
        handle(&rst_to(&s, 1), &mut table, &[], read, None).unwrap();
        let e = table[slot].as_ref().unwrap();
        assert_eq!(e.rtt.samples(), 2);
        // The stamped reply's lag is kept apart, to be added to the wait once.
        assert_eq!(e.lag.samples(), 1);
        let lag = e.lag.quantile(0.5).unwrap();
        assert!(lag >= Nanos::from_micros(4_600) && lag < Nanos::from_micros(4_650));
        let max = e.rtt.quantile(1.0).unwrap();
        assert!(
            max >= Nanos::from_millis(5) && max < Nanos::from_micros(5_050),
            "{max:?}"
        );
        // A duplicate is no sample.
        let dup = handle(&rst_to(&s, 1), &mut table, &[], read, Some(Nanos(0)));
        assert_eq!(dup, Err(Discard::Duplicate));
        assert_eq!(table[slot].as_ref().unwrap().rtt.samples(), 2);
    }
}
