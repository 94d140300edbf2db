//! [`RingSource`]: receives candidate replies through a memory-mapped `TPACKET_V3` ring on an
//! `AF_PACKET`/`SOCK_DGRAM` socket with the same kernel filter as [`super::PacketSocketSource`].
//! The kernel writes packets into fixed-size blocks and hands a block over when it is full
//! or `RETIRE_MS` after its first packet, so a burst of replies costs one wake-up per block
//! instead of a `recvmmsg` per burst. Frames are copied out into the [`RecvBatch`] (the
//! walk itself is [`crate::tpacket`]) with the kernel's receive stamp of each, and the
//! block is handed back at once.

use super::stamp::realtime_ns;
use super::{add_kernel_counts, cvt, poll_in, set_int_opt, source, OpenError, SysConfig, Wake};
use crate::tpacket::{Cursor, BLOCK_NUM_PKTS_AT, BLOCK_STATUS_AT};
use crate::{KernelStats, PacketSource, RecvBatch, Waker, RECV_SLOT};
use socket2::Socket;
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per block (a power-of-two number of pages; the kernel allocates each separately).
const BLOCK_SIZE: usize = 128 << 10;
/// Most blocks in a ring: 16 MiB, room for about 100,000 replies (a long-lived engine's).
const MAX_BLOCKS: usize = 128;
/// Most blocks of a one-shot scan's ring: 3 MiB, about 19,600 replies, 70 ms of the lab's
/// fastest answering (280k/s) and at least 24 ms (a block per `RETIRE_MS`) at any rate.
/// Smaller is faster to set up and stays in cache (ARCHITECTURE.md, "A one-shot ring of
/// 3 MiB"); 1 MiB rings dropped replies now and then.
const ONE_SHOT_MAX_BLOCKS: usize = 24;
/// Fewest blocks: 1 MiB.
const MIN_BLOCKS: usize = 8;
/// Bytes one reply takes in a block, rounded up: the frame header and `sockaddr_ll` (80)
/// plus an ICMP error quoting its probe (68); an IPv4 RST takes 128.
const REPLY_BYTES: u64 = 160;
/// The kernel's `tp_frame_size` (only checked for consistency by `TPACKET_V3`).
const FRAME_SIZE: usize = 2048;
/// A block holding at least one packet is handed over at most this long after it opened.
const RETIRE_MS: u32 = 1;

/// Receives IP packets that passed the reply filter through a `TPACKET_V3` ring.
pub struct RingSource {
    sock: Socket,
    /// Start of the mapping (`BLOCK_SIZE * blocks` bytes, page-aligned).
    map: NonNull<u8>,
    /// Blocks in the ring.
    blocks: usize,
    /// The block to read next (blocks are handed over in ring order).
    cur: usize,
    /// The walk through `cur` when it is user-owned and partly read.
    cursor: Option<Cursor>,
    ignores_outgoing: bool,
    totals: KernelStats,
    /// Ends a `recv` wait early (`PacketSource::waker`).
    wake: Arc<Wake>,
}

// SAFETY: the mapping is owned by this struct alone (nothing else holds a pointer into it)
// and is only read or written through `&mut self` (or `&self` reads of the status words,
// which are atomics), so moving the source to another thread cannot create shared access.
send_and_debug!(RingSource, [sock, cur, ignores_outgoing]);

impl RingSource {
    /// Opens the socket with the reply filter for `cfg.port_lo..=cfg.port_hi`, sets up and
    /// maps the ring, binds (to `cfg.interface` or all interfaces) and hands back anything
    /// captured meanwhile.
    pub fn open(cfg: &SysConfig) -> Result<Self, OpenError> {
        // Nothing is captured before `bind`, i.e. before the filter and ring.
        let (sock, ifindex, ignores_outgoing) = source::filtered_socket(cfg, RECV_SLOT as u32)?;
        let fd = sock.as_raw_fd();
        let blocks = blocks_for(cfg.expected_replies);
        set_int_opt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V3 as libc::c_int,
        )
        .map_err(|e| OpenError::new("PACKET_VERSION TPACKET_V3", e))?;
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE as libc::c_uint,
            tp_block_nr: blocks as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: (BLOCK_SIZE / FRAME_SIZE * blocks) as libc::c_uint,
            tp_retire_blk_tov: RETIRE_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        // SAFETY: `req` is a live, fully initialised tpacket_req3 and we pass its exact size;
        // the kernel only reads it.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req3).cast(),
                size_of::<libc::tpacket_req3>() as libc::socklen_t,
            )
        };
        cvt(ret).map_err(|e| OpenError::new("PACKET_RX_RING", e))?;
        // SAFETY: a fresh shared mapping of the ring the kernel just allocated for `fd`, at
        // an address of the kernel's choosing; nothing else in the process refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BLOCK_SIZE * blocks,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(OpenError::new(
                "mmap of the RX ring",
                io::Error::last_os_error(),
            ));
        }
        let map = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| OpenError::new("mmap of the RX ring", io::Error::other("null")))?;
        let mut src = RingSource {
            sock,
            map,
            blocks,
            cur: 0,
            cursor: None,
            ignores_outgoing,
            totals: KernelStats::default(),
            wake: Wake::new().map_err(|e| OpenError::new("eventfd", e))?,
        };
        source::bind_all_protocols(src.sock.as_raw_fd(), ifindex)?;
        src.drain();
        let _ = src.read_stats();
        Ok(src)
    }

    /// Whether the kernel's `PACKET_IGNORE_OUTGOING` is in effect.
    pub fn ignores_outgoing(&self) -> bool {
        self.ignores_outgoing
    }

    /// The status word of block `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        self.desc_word(i, BLOCK_STATUS_AT)
    }

    /// The 32-bit word at `at` (`BLOCK_STATUS_AT` or `BLOCK_NUM_PKTS_AT`) of block `i`'s
    /// descriptor, shared with the kernel.
    fn desc_word(&self, i: usize, at: usize) -> &AtomicU32 {
        debug_assert!(i < self.blocks);
        debug_assert!(at == BLOCK_STATUS_AT || at == BLOCK_NUM_PKTS_AT);
        // SAFETY: block `i` lies inside the mapping (i < blocks), whose blocks start at
        // page-aligned offsets, so the words at +8 and +12 are in bounds and 4-byte aligned.
        // They live as long as `self` (unmapped only in Drop). We only access them
        // atomically; the kernel writes them with plain stores (with barriers around the
        // status hand-over), so a read may be stale but is never torn.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(i * BLOCK_SIZE + at).cast::<u32>()) }
    }

    /// Whether block `i` is handed to user space (acquire: its contents are then visible).
    fn ready(&self, i: usize) -> bool {
        self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Block `i`'s bytes. Only call while [`Self::ready`] is true for it.
    fn block(&self, i: usize) -> &[u8] {
        debug_assert!(i < self.blocks);
        // SAFETY: in bounds as in `status`. The kernel does not write a block it has handed
        // over (status TP_STATUS_USER, observed with acquire ordering) until we store
        // TP_STATUS_KERNEL in `release`, which takes `&mut self` and so cannot overlap the
        // lifetime of this shared borrow.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(i * BLOCK_SIZE), BLOCK_SIZE) }
    }

    /// Hands block `cur` back to the kernel and moves on to the next one.
    fn release(&mut self) {
        // The count is the kernel's to reset when it opens the block again; until then
        // (after a full ring froze the queue) a stale count would read as `pending`.
        self.desc_word(self.cur, BLOCK_NUM_PKTS_AT)
            .store(0, Ordering::Relaxed);
        self.status(self.cur)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.cur = (self.cur + 1) % self.blocks;
        self.cursor = None;
    }

    /// Copies frames from the ready blocks into `buf`/`lens`/`stamps` from slot `got` until
    /// the batch is full or no block is ready; returns the new count.
    fn fill(
        &mut self,
        buf: &mut [u8],
        lens: &mut [usize],
        stamps: &mut [u64],
        mut got: usize,
    ) -> usize {
        let cap = lens.len().min(stamps.len());
        while got < cap {
            if self.cursor.is_none() {
                if !self.ready(self.cur) {
                    break;
                }
                self.cursor = Some(Cursor::start(self.block(self.cur)));
            }
            let mut cursor = self.cursor.take().unwrap_or(Cursor::start(&[]));
            let block = self.block(self.cur);
            while got < cap {
                let Some(f) = cursor.next(block) else { break };
                let n = f.data.len().min(RECV_SLOT);
                let at = got * RECV_SLOT;
                buf[at..at + n].copy_from_slice(&f.data[..n]);
                lens[got] = f.wire_len;
                stamps[got] = f.stamp_ns;
                got += 1;
            }
            if cursor.left() == 0 {
                self.release();
            } else {
                self.cursor = Some(cursor);
            }
        }
        got
    }

    /// Hands back every ready block unread (at open time).
    fn drain(&mut self) {
        for _ in 0..self.blocks {
            if !self.ready(self.cur) {
                break;
            }
            self.release();
        }
    }

    /// Reads (and so resets) the kernel's counters.
    fn read_stats(&self) -> io::Result<libc::tpacket_stats_v3> {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals and `len` holds the size of `st`, so the
        // kernel writes at most that many bytes into it.
        let ret = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        cvt(ret).map(|_| st)
    }
}

/// Blocks for a ring that will see about `replies` replies (`None`: a long-lived engine,
/// the most). A one-shot scan's ring holds all its replies up to `ONE_SHOT_MAX_BLOCKS`
/// (3 MiB): the kernel allocates and zeroes the whole ring at setup, on this VM's fresh
/// pages about 4-5 ms a MiB (`clear_page_erms` in `packet_set_ring`), which a short scan
/// should not pay. The receive thread hands each block back as soon as it has copied it out; a reply that
/// finds no free block is counted by the kernel (`kernel_drops` in the summary) and its
/// pair, silent, is probed again in the next round like any lost one.
pub fn blocks_for(replies: Option<u64>) -> usize {
    match replies {
        None => MAX_BLOCKS,
        Some(n) => {
            let bytes = n.saturating_mul(REPLY_BYTES);
            let need = bytes.div_ceil(BLOCK_SIZE as u64).saturating_add(1);
            usize::try_from(need)
                .unwrap_or(ONE_SHOT_MAX_BLOCKS)
                .clamp(MIN_BLOCKS, ONE_SHOT_MAX_BLOCKS)
        }
    }
}

impl Drop for RingSource {
    fn drop(&mut self) {
        // SAFETY: `map` is the mapping of exactly this length made in `open`; no borrow of
        // it outlives `&mut self`, so nothing refers to it after this. The socket is closed
        // after (field drop), which frees the ring.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), BLOCK_SIZE * self.blocks);
        }
    }
}

impl PacketSource for RingSource {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        batch.clear();
        let (buf, lens, stamps) = batch.raw_parts_stamped();
        let mut got = self.fill(buf, lens, stamps, 0);
        // Our next block is the kernel's open one: wait for it to be handed over.
        if got == 0 && !timeout.is_zero() && poll_in(self.sock.as_raw_fd(), &self.wake, timeout)? {
            got = self.fill(buf, lens, stamps, 0);
        }
        // After the last frame is copied: every frame's age is measured to this moment.
        batch.set_len_stamped(got, realtime_ns());
        Ok(())
    }

    fn waker(&self) -> Option<Waker> {
        Some(self.wake.waker())
    }

    fn kernel_stats(&mut self) -> KernelStats {
        let counts = self.read_stats().map(|st| (st.tp_packets, st.tp_drops));
        add_kernel_counts(&mut self.totals, counts)
    }

    /// A packet in the kernel's open block is not visible until the block is handed over,
    /// `RETIRE_MS` after it opened, which the kernel rounds up to whole jiffies (4 ms at
    /// HZ=250, 10 ms at HZ=100), plus timer slack. Only waited for while [`Self::pending`].
    fn settle_time(&self) -> Duration {
        Duration::from_millis(u64::from(RETIRE_MS) + 11)
    }

    /// The kernel's open block (our next one, not yet handed over) holds packets: the
    /// kernel counts a frame into `num_pkts` when it reserves it, before copying.
    fn pending(&self) -> bool {
        self.cursor.is_none()
            && !self.ready(self.cur)
            && self
                .desc_word(self.cur, BLOCK_NUM_PKTS_AT)
                .load(Ordering::Relaxed)
                > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_ring_holds_every_reply_of_its_scan_up_to_3_mib() {
        assert_eq!(blocks_for(None), MAX_BLOCKS);
        assert_eq!(blocks_for(Some(0)), MIN_BLOCKS);
        assert_eq!(blocks_for(Some(100)), MIN_BLOCKS);
        // 15,000 replies x 160 bytes = 19 blocks, plus the open one.
        assert_eq!(blocks_for(Some(15_000)), 20);
        assert!(blocks_for(Some(15_000)) * BLOCK_SIZE >= 15_000 * REPLY_BYTES as usize);
        // One host x 65,535 ports would need 81 blocks: a one-shot ring stops at 3 MiB.
        assert_eq!(blocks_for(Some(65_535)), ONE_SHOT_MAX_BLOCKS);
        assert_eq!(ONE_SHOT_MAX_BLOCKS * BLOCK_SIZE, 3 << 20);
        assert_eq!(blocks_for(Some(1 << 20)), ONE_SHOT_MAX_BLOCKS);
        assert_eq!(blocks_for(Some(u64::MAX)), ONE_SHOT_MAX_BLOCKS);
    }
}
