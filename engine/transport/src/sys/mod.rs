//! The Linux backend: [`RawSink`] sends hand-built IPv4/IPv6 packets through raw
//! `IPPROTO_RAW` sockets with `sendmmsg`; [`PacketSocketSource`] receives candidate replies
//! from an `AF_PACKET` socket filtered in the kernel by [`crate::bpf::reply_filter`], with
//! `recvmmsg`, or [`RingSource`] from the same socket through a `TPACKET_V3` ring
//! ([`SysSource`] is whichever [`RxRing`] chose). Also [`route_source`], the local address
//! the kernel would use for a target. [`LinkSink`] sends through `AF_PACKET` to a known
//! next hop, optionally with `PACKET_QDISC_BYPASS`.
//!
//! **This is the only place in the project with `unsafe` code**; every block says why it
//! is sound. It moves bytes and reports errnos; it does not build or parse packets, pace,
//! or decide anything about a scan.

/// Implements `Send` for an fd-owning type whose raw pointers point only into its own buffers
/// (the `// SAFETY:` comment above each call says why), and a `Debug` that names the listed
/// fields and elides the rest.
macro_rules! send_and_debug {
    ($ty:ident, [$($field:ident),* $(,)?]) => {
        // SAFETY: the caller's `// SAFETY:` comment (above the call) says why moving this type
        // to another thread cannot create shared access.
        unsafe impl Send for $ty {}

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

mod cpu;
mod link;
mod ring;
mod sink;
mod source;
mod stamp;
mod wake;

pub use cpu::{allowed_cpus, pin_current_thread};
pub use link::LinkSink;
pub use ring::{blocks_for, RingSource};
pub use sink::RawSink;
pub use source::PacketSocketSource;

use crate::privs::NEED_NET_RAW;
use crate::{KernelStats, PacketSource, RecvBatch, Waker};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};
use wake::Wake;

/// Adds the kernel's `(packets, drops)` since the last read (reading resets its counters) to
/// `totals`, and returns the new totals; a failed read adds nothing.
fn add_kernel_counts(totals: &mut KernelStats, counts: io::Result<(u32, u32)>) -> KernelStats {
    if let Ok((packets, drops)) = counts {
        totals.received += u64::from(packets);
        totals.dropped += u64::from(drops);
    }
    *totals
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysConfig {
    /// Lowest destination port of TCP replies to let through (our lowest source port).
    pub port_lo: u16,
    /// Highest such port.
    pub port_hi: u16,
    /// Receive only on this interface; `None` receives on all of them.
    pub interface: Option<String>,
    /// How replies are received.
    pub rx_ring: RxRing,
    /// Replies a one-shot scan can get (probes of its first round), which sizes the receive
    /// ring ([`blocks_for`]); `None` for a long-lived engine (the largest ring).
    pub expected_replies: Option<u64>,
}

/// Fewest expected replies for which [`RxRing::Auto`] sets up the ring for a one-shot scan.
/// The ring's setup and teardown cost three RCU grace periods (8 ms each on an idle machine
/// of ours) and the zeroing of its pages, `recvmmsg`'s socket one grace period; the ring
/// saves about 0.5 us of wall and 1.2 us of CPU a reply. With a one-shot ring of at most
/// 3 MiB ([`blocks_for`]), paired runs against `recvmmsg` (medians; ARCHITECTURE.md, "A
/// one-shot ring of 3 MiB"): 20,000 ports +12 ms, 40,000 ports -5 ms, one host x 65,535
/// -16 ms and 12% less CPU, four hosts -166 ms and 14% less CPU. A long-lived engine always
/// takes the ring.
pub const RING_MIN_REPLIES: u64 = 40_000;

/// How the receive side reads replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxRing {
    /// The `TPACKET_V3` ring, or `recvmmsg` if the ring cannot be set up or a one-shot
    /// scan expects fewer than [`RING_MIN_REPLIES`] replies.
    #[default]
    Auto,
    /// The ring; opening fails if it cannot be set up.
    On,
    /// `recvmmsg` on the capture socket.
    Off,
}

/// The receive half [`open`] chose.
#[derive(Debug)]
pub enum SysSource {
    /// A `TPACKET_V3` ring.
    Ring(RingSource),
    /// `recvmmsg` (the ring was off or could not be set up: the error says why).
    Socket(PacketSocketSource, Option<OpenError>),
}

impl SysSource {
    /// Opens the receive half as `cfg.rx_ring` says.
    pub fn open(cfg: &SysConfig) -> Result<Self, OpenError> {
        match cfg.rx_ring {
            RxRing::Off => Ok(SysSource::Socket(PacketSocketSource::open(cfg)?, None)),
            RxRing::On => Ok(SysSource::Ring(RingSource::open(cfg)?)),
            // A small one-shot scan: the ring's setup and teardown (three RCU grace
            // periods in the kernel and zeroing its pages, ~25 ms here) cost more than it
            // saves (~0.5 us of wall a reply).
            RxRing::Auto if cfg.expected_replies.is_some_and(|n| n < RING_MIN_REPLIES) => {
                Ok(SysSource::Socket(PacketSocketSource::open(cfg)?, None))
            }
            RxRing::Auto => match RingSource::open(cfg) {
                Ok(r) => Ok(SysSource::Ring(r)),
                Err(e @ OpenError::UnknownInterface(_)) => Err(e),
                Err(e) => Ok(SysSource::Socket(PacketSocketSource::open(cfg)?, Some(e))),
            },
        }
    }

    /// `"tpacket-v3 ring"` or `"recvmmsg"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SysSource::Ring(_) => "tpacket-v3 ring",
            SysSource::Socket(..) => "recvmmsg",
        }
    }

    /// Why the ring was not used although it was allowed (`RxRing::Auto`).
    pub fn ring_error(&self) -> Option<&OpenError> {
        match self {
            SysSource::Socket(_, e) => e.as_ref(),
            SysSource::Ring(_) => None,
        }
    }

    /// Whether the kernel's `PACKET_IGNORE_OUTGOING` is in effect.
    pub fn ignores_outgoing(&self) -> bool {
        match self {
            SysSource::Ring(r) => r.ignores_outgoing(),
            SysSource::Socket(s, _) => s.ignores_outgoing(),
        }
    }

    fn inner(&mut self) -> &mut dyn PacketSource {
        match self {
            SysSource::Ring(r) => r,
            SysSource::Socket(s, _) => s,
        }
    }

    fn inner_ref(&self) -> &dyn PacketSource {
        match self {
            SysSource::Ring(r) => r,
            SysSource::Socket(s, _) => s,
        }
    }
}

impl PacketSource for SysSource {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        self.inner().recv(batch, timeout)
    }

    fn kernel_stats(&mut self) -> KernelStats {
        self.inner().kernel_stats()
    }

    fn gather_time(&self) -> Duration {
        self.inner_ref().gather_time()
    }

    fn settle_time(&self) -> Duration {
        self.inner_ref().settle_time()
    }

    fn pending(&self) -> bool {
        self.inner_ref().pending()
    }

    fn waker(&self) -> Option<Waker> {
        self.inner_ref().waker()
    }
}

/// Opening the backend failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The kernel said no (`EPERM`/`EACCES`): the process lacks `CAP_NET_RAW`.
    #[error("{NEED_NET_RAW} (opening {what}: {source})")]
    Permission {
        /// Which socket or option.
        what: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Any other failure.
    #[error("could not open {what}: {source}")]
    Io {
        /// Which socket or option.
        what: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// [`SysConfig::interface`] names no interface of this host (or network namespace).
    #[error("no network interface named {0:?} (see `ip link`)")]
    UnknownInterface(String),
}

impl OpenError {
    /// Classifies `source` by errno.
    fn new(what: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => OpenError::Permission { what, source },
            _ => OpenError::Io { what, source },
        }
    }
}

/// Opens the sending and receiving halves. Fails with [`OpenError::Permission`] without
/// `CAP_NET_RAW`.
pub fn open(cfg: &SysConfig) -> Result<(RawSink, SysSource), OpenError> {
    let source = SysSource::open(cfg)?;
    let sink = RawSink::open()?;
    Ok((sink, source))
}

/// The local address the kernel would use as source to reach `dst` (by connecting a UDP
/// socket, which sends nothing, and reading its local address).
pub fn route_source(dst: IpAddr) -> io::Result<IpAddr> {
    let dst = SocketAddr::new(dst, 9);
    let sock = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
    sock.connect(&SockAddr::from(dst))?;
    sock.local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::other("UDP socket has a non-IP local address"))
}

/// The link-layer address of `protocol` (an `ETH_P_*`) on interface `ifindex` (0 = all),
/// to MAC `to` if given.
fn link_addr(ifindex: i32, protocol: libc::c_int, to: Option<[u8; 6]>) -> libc::sockaddr_ll {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&to.unwrap_or_default());
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: (protocol as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: if to.is_some() { 6 } else { 0 },
        sll_addr,
    }
}

/// Result of a libc call returning -1 on error.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `setsockopt` with a C `int` value.
fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int on our stack and we pass its exact size; the kernel
    // only reads it during the call. A bad `fd` is reported as EBADF, not UB.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// Sets a socket buffer size with the `*FORCE` option (which ignores `net.core.*mem_max`
/// but needs `CAP_NET_ADMIN`), falling back to the plain option (capped by the sysctl).
/// `what` names the option in the error.
fn set_buffer(
    fd: RawFd,
    (force, plain): (libc::c_int, libc::c_int),
    bytes: usize,
    what: &'static str,
) -> Result<(), OpenError> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_opt(fd, libc::SOL_SOCKET, force, bytes)
        .or_else(|_| set_int_opt(fd, libc::SOL_SOCKET, plain, bytes))
        .map_err(|e| OpenError::new(what, e))
}

/// `SO_SNDBUFFORCE`, `SO_SNDBUF` for [`set_buffer`].
const SNDBUF_OPTS: (libc::c_int, libc::c_int) = (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);

/// Opens an `AF_PACKET`/`SOCK_DGRAM` socket (packets start at the IP header) with protocol
/// 0, so it receives nothing until it is bound, and finds the index of `interface` (0 = all
/// interfaces). `what` names the socket in the error.
fn packet_socket(interface: Option<&str>, what: &'static str) -> Result<(Socket, u32), OpenError> {
    let ifindex = match interface {
        None => 0,
        Some(name) => pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .map(|i| i.index)
            .ok_or_else(|| OpenError::UnknownInterface(name.to_owned()))?,
    };
    let sock =
        Socket::new(Domain::PACKET, Type::DGRAM, None).map_err(|e| OpenError::new(what, e))?;
    Ok((sock, ifindex))
}

/// `n` empty iovecs and `n` message headers for `sendmmsg`/`recvmmsg`, header `i` pointing
/// at iovec `i`. The pointers stay valid while the iovec vector is neither resized nor
/// dropped (moving the `Vec` does not move its heap buffer).
fn mmsg_vectors(n: usize) -> (Vec<libc::iovec>, Vec<libc::mmsghdr>) {
    let mut iovs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        n
    ];
    let hdrs = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is a plain C struct (pointers, lengths, flags) for which
            // all-zero bytes are a valid value: null pointers and zero lengths.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    (iovs, hdrs)
}

/// Waits until `fd` is readable, `wake` is signalled or `timeout` passes (forever if it
/// overflows an `Instant`); `Ok(true)` only when `fd` is readable.
fn poll_in(fd: RawFd, wake: &Wake, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let mut pfds = [fd, wake.raw()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let ts = deadline.map(|d| {
            let rest = d.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: libc::time_t::try_from(rest.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: rest.subsec_nanos().into(),
            }
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pfds` is a live local array and we pass its length; `ts_ptr` is null
        // (wait forever) or points at the live local `ts`; a null signal mask is allowed.
        let ret = unsafe { libc::ppoll(pfds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
        match ret {
            0 => return Ok(false),
            1.. => {
                if pfds[1].revents & libc::POLLIN != 0 {
                    wake.clear();
                }
                return Ok(pfds[0].revents & libc::POLLIN != 0);
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
        }
    }
}
