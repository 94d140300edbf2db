//! [`PacketSocketSource`]: receives candidate replies from an `AF_PACKET`/`SOCK_DGRAM`
//! socket (packets start at the IP header) that the kernel filters with
//! [`crate::bpf::reply_filter`], many per `recvmmsg` call, straight into a [`RecvBatch`].
//! Each packet carries the kernel's receive stamp (`SO_TIMESTAMPNS`, [`super::stamp`]).
//! It does not parse or validate what it receives; the core's classifier does.

use super::stamp::{realtime_ns, stamp_of, Stamps};
use super::{add_kernel_counts, Wake};
use super::{
    cvt, link_addr, mmsg_vectors, packet_socket, poll_in, set_buffer, set_int_opt, OpenError,
    SysConfig,
};
use crate::{bpf, KernelStats, PacketSource, RecvBatch, Waker, RECV_SLOT};
use socket2::Socket;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// Messages per `recvmmsg` call.
const CHUNK: usize = 256;
/// Requested receive buffer (large, so bursts of replies are not dropped).
const RCVBUF: usize = 32 << 20;
/// At most this many packets are discarded by the drain at open time.
const DRAIN_MAX: usize = 1 << 16;

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux 4.20+).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `ret #k` (linux/filter.h `BPF_RET | BPF_K`): the accepting returns carry the snap length.
const BPF_RET_K: u16 = 0x06;
/// `PACKET_STATISTICS` (linux/if_packet.h).
const PACKET_STATISTICS: libc::c_int = 6;

/// `struct tpacket_stats` (linux/if_packet.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct TpacketStats {
    tp_packets: libc::c_uint,
    tp_drops: libc::c_uint,
}

/// Receives IP packets that passed the reply filter, from all interfaces or one.
pub struct PacketSocketSource {
    sock: Socket,
    /// Whether the kernel skips our own outgoing packets (`PACKET_IGNORE_OUTGOING`); if
    /// not, the BPF program rejects them instead ([`bpf::reject_outgoing`]).
    ignores_outgoing: bool,
    /// Kernel statistics accumulated so far (reading them resets the kernel's counters).
    totals: KernelStats,
    /// Ends a `recv` wait early (`PacketSource::waker`).
    wake: Arc<Wake>,
    /// The message array handed to `recvmmsg`; entry `i` always points at `iovs[i]`.
    hdrs: Vec<libc::mmsghdr>,
    /// One buffer per message, pointing into the batch being filled.
    iovs: Vec<libc::iovec>,
    /// One control buffer per message, for the kernel's receive stamp.
    stamps: Stamps,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` point only into this struct's own `iovs`
// and `stamps` buffers (never resized) or, during `recv`, into the exclusively borrowed
// batch. They are only dereferenced (by the kernel) inside `recv`, which takes `&mut self`,
// so moving the source to another thread cannot create shared access.
send_and_debug!(PacketSocketSource, [sock, ignores_outgoing, totals]);

impl PacketSocketSource {
    /// Opens the socket, attaches the reply filter for `cfg.port_lo..=cfg.port_hi`, then
    /// binds it (to `cfg.interface` or to all interfaces) and drains anything queued.
    pub fn open(cfg: &SysConfig) -> Result<Self, OpenError> {
        // The socket receives nothing until `bind` names ETH_P_ALL, so no packet can be
        // queued before the filter is in place.
        let (sock, ifindex, ignores_outgoing) = filtered_socket(cfg, bpf::ACCEPT)?;
        let fd = sock.as_raw_fd();
        let rcvbuf = (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
        set_buffer(fd, rcvbuf, RCVBUF, "SO_RCVBUF")?;
        bind_all_protocols(fd, ifindex)?;

        let (iovs, hdrs) = mmsg_vectors(CHUNK);
        let stamps = Stamps::enable(fd, CHUNK);
        let mut src = PacketSocketSource {
            sock,
            ignores_outgoing,
            totals: KernelStats::default(),
            wake: Wake::new().map_err(|e| OpenError::new("eventfd", e))?,
            hdrs,
            iovs,
            stamps,
        };
        src.drain();
        // Start the statistics from here: forget what the drain consumed.
        let _ = src.read_stats();
        Ok(src)
    }

    /// Whether the kernel's `PACKET_IGNORE_OUTGOING` is in effect (false on kernels before
    /// 4.20, where the BPF program filters our own packets out instead).
    pub fn ignores_outgoing(&self) -> bool {
        self.ignores_outgoing
    }

    /// Discards whatever is queued (bounded), without waiting.
    fn drain(&mut self) {
        let mut scratch = [0u8; 64];
        for _ in 0..DRAIN_MAX {
            // SAFETY: `scratch` is a live local buffer and we pass its length; the kernel
            // writes at most that many bytes (MSG_TRUNC only changes the return value).
            let ret = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if ret < 0 {
                break;
            }
        }
    }

    /// Reads (and so resets) the kernel's counters.
    fn read_stats(&self) -> io::Result<TpacketStats> {
        let mut st = TpacketStats::default();
        let mut len = size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals and `len` holds the size of `st`, so the
        // kernel writes at most that many bytes into it.
        let ret = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        cvt(ret).map(|_| st)
    }
}

impl PacketSource for PacketSocketSource {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        batch.clear();
        if !poll_in(self.sock.as_raw_fd(), &self.wake, timeout)? {
            return Ok(());
        }
        let fd = self.sock.as_raw_fd();
        let cap = batch.capacity();
        let (buf, lens, stamps) = batch.raw_parts_stamped();
        let mut got = 0;
        while got < cap {
            let n = (cap - got).min(CHUNK);
            for i in 0..n {
                let at = (got + i) * RECV_SLOT;
                let slot = &mut buf[at..at + RECV_SLOT];
                self.iovs[i] = libc::iovec {
                    iov_base: slot.as_mut_ptr().cast(),
                    iov_len: slot.len(),
                };
                self.hdrs[i].msg_len = 0;
                self.hdrs[i].msg_hdr.msg_flags = 0;
                self.stamps.arm(&mut self.hdrs[i].msg_hdr, i);
            }
            // SAFETY: `hdrs[..n]` are initialised mmsghdr entries, each pointing at its own
            // iovec in `self.iovs`, which points at a distinct RECV_SLOT-byte slot of `buf`
            // (in bounds: the slices above were bounds-checked). `buf` is exclusively
            // borrowed from the batch and not touched until the call returns. The kernel
            // writes at most `iov_len` bytes per slot, plus `msg_len`/`msg_flags`, and at most
            // `msg_controllen` bytes into each entry's own control buffer (`Stamps::arm`).
            let ret = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if ret < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // Hand over what we have; the error will come back on the next call.
                    _ if got > 0 => break,
                    _ => return Err(e),
                }
            }
            let r = ret as usize;
            let filled = lens[got..got + r].iter_mut().zip(&mut stamps[got..got + r]);
            for ((len, stamp), hdr) in filled.zip(&self.hdrs) {
                // With MSG_TRUNC this is the packet's real length, possibly > RECV_SLOT.
                *len = hdr.msg_len as usize;
                *stamp = stamp_of(&hdr.msg_hdr);
            }
            got += r;
            if r < n {
                break;
            }
        }
        // After the last packet is taken: every packet's age is measured to this moment.
        batch.set_len_stamped(got, realtime_ns());
        Ok(())
    }

    /// One `ppoll` + `recvmmsg` per reply at moderate rates costs more than the replies:
    /// 200 us of gathering cut context switches of a 65,535-port scan from ~15,000 to
    /// ~1,800 (ARCHITECTURE.md, receive path).
    fn gather_time(&self) -> Duration {
        Duration::from_micros(200)
    }

    fn waker(&self) -> Option<Waker> {
        Some(self.wake.waker())
    }

    fn kernel_stats(&mut self) -> KernelStats {
        // On TPACKET_V1 sockets the kernel reports tp_packets including drops.
        let counts = self.read_stats().map(|st| (st.tp_packets, st.tp_drops));
        add_kernel_counts(&mut self.totals, counts)
    }
}

/// Binds an `AF_PACKET` socket to every protocol (`ETH_P_ALL`) on interface `ifindex`
/// (0 = all interfaces).
pub(super) fn bind_all_protocols(fd: RawFd, ifindex: u32) -> Result<(), OpenError> {
    let bind = |addr: libc::sockaddr_ll| {
        // SAFETY: `addr` is a live, fully initialised sockaddr_ll and we pass its exact
        // size; the kernel only reads it.
        let ret = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        cvt(ret).map(drop)
    };
    i32::try_from(ifindex)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        .and_then(|i| bind(link_addr(i, libc::ETH_P_ALL, None)))
        .map_err(|e| OpenError::new("AF_PACKET bind", e))
}

/// Opens the receive socket for `cfg.interface` ([`packet_socket`]) and attaches the reply
/// filter accepting `snap` bytes ([`attach_reply_filter`]). Returns the socket, the index of
/// the interface (0 = all) and whether `PACKET_IGNORE_OUTGOING` is in effect.
pub(super) fn filtered_socket(
    cfg: &SysConfig,
    snap: u32,
) -> Result<(Socket, u32, bool), OpenError> {
    let (sock, ifindex) = packet_socket(cfg.interface.as_deref(), "AF_PACKET socket")?;
    let ignores_outgoing = attach_reply_filter(&sock, cfg, snap)?;
    Ok((sock, ifindex, ignores_outgoing))
}

/// Skips our own outgoing packets (`PACKET_IGNORE_OUTGOING`, or in the filter on kernels
/// before 4.20) and attaches [`bpf::reply_filter`], accepting `snap` bytes of each packet.
/// Returns whether the socket option is in effect.
fn attach_reply_filter(sock: &Socket, cfg: &SysConfig, snap: u32) -> Result<bool, OpenError> {
    let ignores_outgoing = set_int_opt(
        sock.as_raw_fd(),
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        1,
    )
    .is_ok();
    let mut prog = bpf::reply_filter(cfg.port_lo, cfg.port_hi);
    if !ignores_outgoing {
        prog = bpf::reject_outgoing(&prog);
    }
    let prog: Vec<libc::sock_filter> = prog
        .iter()
        .map(|f| libc::sock_filter {
            code: f.code,
            jt: f.jt,
            jf: f.jf,
            // Accepting returns the bytes to capture.
            k: if f.code == BPF_RET_K && f.k == bpf::ACCEPT {
                snap
            } else {
                f.k
            },
        })
        .collect();
    sock.attach_filter(&prog)
        .map_err(|e| OpenError::new("SO_ATTACH_FILTER", e))?;
    Ok(ignores_outgoing)
}
