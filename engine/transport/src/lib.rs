//! Packet I/O behind two small traits: [`PacketSink`] sends a batch of IP packets,
//! [`PacketSource`] receives a batch. Backends: [`memory`] (in-process, a scripted
//! responder, no privileges: for tests) and [`sys`] (Linux raw IP sockets with `sendmmsg`
//! for sending, an `AF_PACKET` socket with a kernel BPF filter and a `TPACKET_V3` ring or
//! `recvmmsg` for receiving). This crate does not know what a scan is; it moves bytes.
//!
//! **Architecture invariant:** all `unsafe` code of the project lives in `sys/`.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

pub mod bpf;
pub mod memory;
#[cfg(target_os = "linux")]
pub mod netlink;
pub mod nexthop;
pub mod privs;
#[cfg(feature = "scripted")]
pub mod scripted;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod sys;
pub mod tpacket;

/// Bytes reserved per packet in a [`SendBatch`].
pub const SEND_SLOT: usize = 128;
/// Bytes captured per packet in a [`RecvBatch`] (enough for any reply header plus an ICMP
/// quote of a probe; longer packets are truncated, which only affects non-replies).
pub const RECV_SLOT: usize = 512;

/// A batch of outgoing IP packets in one flat buffer (no allocation after creation).
#[derive(Debug)]
pub struct SendBatch {
    buf: Vec<u8>,
    lens: Vec<u16>,
    dsts: Vec<IpAddr>,
    cap: usize,
}

impl SendBatch {
    /// A batch holding up to `cap` packets.
    pub fn new(cap: usize) -> Self {
        SendBatch {
            buf: vec![0; cap * SEND_SLOT],
            lens: Vec::with_capacity(cap),
            dsts: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Capacity in packets.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Whether full.
    pub fn is_full(&self) -> bool {
        self.lens.len() == self.cap
    }

    /// Removes all packets.
    pub fn clear(&mut self) {
        self.lens.clear();
        self.dsts.clear();
    }

    /// Appends a packet to `dst` written by `fill`, which returns the packet length.
    /// Panics if the batch is full or `fill` claims more than [`SEND_SLOT`] bytes.
    #[inline]
    pub fn push(&mut self, dst: IpAddr, fill: impl FnOnce(&mut [u8]) -> usize) {
        assert!(!self.is_full(), "SendBatch overflow");
        let i = self.lens.len();
        let n = fill(&mut self.buf[i * SEND_SLOT..(i + 1) * SEND_SLOT]);
        assert!(n <= SEND_SLOT);
        self.lens.push(n as u16);
        self.dsts.push(dst);
    }

    /// Packet `i` and its destination.
    #[inline]
    pub fn get(&self, i: usize) -> (IpAddr, &[u8]) {
        let n = usize::from(self.lens[i]);
        (self.dsts[i], &self.buf[i * SEND_SLOT..i * SEND_SLOT + n])
    }

    /// All packets.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &[u8])> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

/// A batch of received IP packets (each starts at the IP header), with the kernel's
/// receive time of each where the backend has it (see [`Self::age`]).
#[derive(Debug)]
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    /// Per packet: the kernel's receive time, ns since the Unix epoch (`CLOCK_REALTIME`), 0
    /// for none. Only meaningful while `read_at` is set.
    stamps: Vec<u64>,
    /// When the backend read the batch (`CLOCK_REALTIME`, ns), if it stamped its packets.
    read_at: Option<u64>,
    count: usize,
    cap: usize,
}

impl RecvBatch {
    /// A batch receiving up to `cap` packets.
    pub fn new(cap: usize) -> Self {
        RecvBatch {
            buf: vec![0; cap * RECV_SLOT],
            lens: vec![0; cap],
            stamps: vec![0; cap],
            read_at: None,
            count: 0,
            cap,
        }
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of packets received in the last call.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Packet `i` (truncated to [`RECV_SLOT`]).
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        debug_assert!(i < self.count);
        &self.buf[i * RECV_SLOT..i * RECV_SLOT + self.lens[i].min(RECV_SLOT)]
    }

    /// All packets of the last call.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.count).map(move |i| self.get(i))
    }

    /// How long packet `i` had been in the kernel when the batch was read: from the kernel's
    /// receive stamp to the backend's read, never negative (a clock step between the two
    /// reads as 0). `None` where the backend has no stamps (the memory transport): the packet
    /// then counts as received when it was read.
    #[inline]
    pub fn age(&self, i: usize) -> Option<Duration> {
        debug_assert!(i < self.count);
        let read = self.read_at?;
        let stamp = self.stamps[i];
        (stamp != 0).then(|| Duration::from_nanos(read.saturating_sub(stamp)))
    }

    /// Empties the batch (backends call this before filling).
    pub fn clear(&mut self) {
        self.count = 0;
        self.read_at = None;
    }

    /// Copies one packet in (used by backends without zero-copy receive).
    pub fn push_copy(&mut self, pkt: &[u8]) -> bool {
        if self.count == self.cap {
            return false;
        }
        let n = pkt.len().min(RECV_SLOT);
        let at = self.count * RECV_SLOT;
        self.buf[at..at + n].copy_from_slice(&pkt[..n]);
        self.lens[self.count] = pkt.len();
        self.count += 1;
        true
    }

    /// Raw parts for backends that receive in place: the buffer (slots of [`RECV_SLOT`]) and
    /// the per-slot length array. Call [`Self::set_len`] afterwards.
    pub fn raw_parts(&mut self) -> (&mut [u8], &mut [usize]) {
        (&mut self.buf, &mut self.lens)
    }

    /// [`Self::raw_parts`] plus the per-slot receive stamps (ns since the Unix epoch, 0 for
    /// none), for backends that know when the kernel received each packet. Call
    /// [`Self::set_len_stamped`] afterwards.
    pub fn raw_parts_stamped(&mut self) -> (&mut [u8], &mut [usize], &mut [u64]) {
        (&mut self.buf, &mut self.lens, &mut self.stamps)
    }

    /// Sets the number of valid packets after an in-place receive.
    pub fn set_len(&mut self, n: usize) {
        assert!(n <= self.cap);
        self.count = n;
        self.read_at = None;
    }

    /// Sets the number of valid packets after an in-place receive whose stamps were filled,
    /// and when (ns since the Unix epoch, `CLOCK_REALTIME`) the backend read them: after
    /// the last packet was taken, so every age is measured to one moment.
    pub fn set_len_stamped(&mut self, n: usize, read_at: u64) {
        assert!(n <= self.cap);
        self.count = n;
        self.read_at = Some(read_at);
    }
}

/// What happened to a batch handed to a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Packets the kernel accepted.
    pub sent: usize,
    /// Packets refused (e.g. no route to that destination); counted, not retried.
    pub failed: usize,
    /// The errno of the last refusal, for diagnostics.
    pub last_errno: Option<i32>,
}

/// Sends batches of IP packets. Implementations retry transient back-pressure
/// (`ENOBUFS`, `EAGAIN`) themselves and report per-packet refusals in the report.
pub trait PacketSink: Send {
    /// Sends every packet of `batch`.
    fn send(&mut self, batch: &SendBatch) -> SendReport;
}

/// Kernel-side receive statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets that passed the filter.
    pub received: u64,
    /// Packets the kernel dropped because the socket buffer was full.
    pub dropped: u64,
}

/// Receives batches of IP packets (already filtered to candidate replies where the backend
/// can filter).
pub trait PacketSource: Send {
    /// Clears `batch` and fills it with up to `batch.capacity()` packets, waiting at most
    /// `timeout` for the first. Returning an empty batch on timeout is not an error.
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()>;

    /// Cumulative kernel statistics since the source was opened.
    fn kernel_stats(&mut self) -> KernelStats {
        KernelStats::default()
    }

    /// How long a receiver should let packets gather after a thin batch, so the next call
    /// reads many per wake-up (a kernel socket); zero where a call costs nothing (memory).
    fn gather_time(&self) -> Duration {
        Duration::ZERO
    }

    /// The longest a packet the kernel has received may stay invisible to [`Self::recv`]
    /// (a ring block not yet handed over): a receiver that ends a scan once a batch comes
    /// back short must keep reading this long after the scan's end. Zero for sockets.
    fn settle_time(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether the kernel holds received packets that [`Self::recv`] cannot return yet (a
    /// ring block it is still filling). A receiver that has just read the source dry and
    /// sees `false` need not wait out [`Self::settle_time`]. Always `false` for sockets.
    fn pending(&self) -> bool {
        false
    }

    /// A handle another thread can use to end a [`Self::recv`] wait early (it then returns
    /// an empty batch). `None` where `recv` cannot be woken: its caller's waits stay short.
    fn waker(&self) -> Option<Waker> {
        None
    }
}

/// Ends a [`PacketSource::recv`] wait from another thread (see [`PacketSource::waker`]).
#[derive(Clone)]
pub struct Waker(std::sync::Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that runs `wake`.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Waker(std::sync::Arc::new(wake))
    }

    /// Wakes the source's waiting `recv`, or its next one if none is waiting.
    pub fn wake(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl<T: PacketSink + ?Sized> PacketSink for Box<T> {
    fn send(&mut self, batch: &SendBatch) -> SendReport {
        (**self).send(batch)
    }
}

impl<T: PacketSource + ?Sized> PacketSource for Box<T> {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        (**self).recv(batch, timeout)
    }
    fn kernel_stats(&mut self) -> KernelStats {
        (**self).kernel_stats()
    }
    fn gather_time(&self) -> Duration {
        (**self).gather_time()
    }
    fn settle_time(&self) -> Duration {
        (**self).settle_time()
    }
    fn pending(&self) -> bool {
        (**self).pending()
    }
    fn waker(&self) -> Option<Waker> {
        (**self).waker()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packets_age_runs_from_its_kernel_stamp_to_the_read_and_is_never_negative() {
        let mut b = RecvBatch::new(4);
        let (buf, lens, stamps) = b.raw_parts_stamped();
        buf[..3].copy_from_slice(&[1, 2, 3]);
        lens[..3].copy_from_slice(&[1, 1, 1]);
        stamps[..3].copy_from_slice(&[1_000_000_000, 1_004_000_000, 0]);
        b.set_len_stamped(3, 1_004_500_000);
        assert_eq!(b.age(0), Some(Duration::from_micros(4_500)));
        assert_eq!(b.age(1), Some(Duration::from_micros(500)));
        assert_eq!(b.age(2), None, "no stamp: the read time stands in");
        // The realtime clock stepped back between the stamp and the read: age 0.
        b.set_len_stamped(3, 900_000_000);
        assert_eq!(b.age(0), Some(Duration::ZERO));
        // Unstamped reads (the memory transport) forget the last stamps.
        b.set_len(3);
        assert_eq!(b.age(0), None);
        b.clear();
        assert!(b.push_copy(&[9]));
        assert_eq!(b.age(0), None);
    }
}
