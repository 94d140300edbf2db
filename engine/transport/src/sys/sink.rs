//! [`RawSink`]: sends complete IP packets (header included) through one raw socket per
//! address family, many per `sendmmsg` call. It does not build packets or pace them.

use super::{mmsg_vectors, set_buffer, set_int_opt, OpenError, SNDBUF_OPTS};
use crate::{PacketSink, SendBatch, SendReport};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Messages per `sendmmsg` call (the kernel caps a call at `UIO_MAXIOV` = 1024).
const CHUNK: usize = 256;
/// Requested send buffer.
const SNDBUF: usize = 4 << 20;
/// How long one packet may wait out `ENOBUFS`/`EAGAIN` before it is counted as failed.
const MAX_STALL: Duration = Duration::from_millis(10);
/// How long one back-off waits when the device queue is full (`ENOBUFS`).
const NOBUFS_PAUSE: Duration = Duration::from_micros(50);
/// How long one back-off waits for socket buffer space (`EAGAIN`), in milliseconds.
const POLLOUT_MS: libc::c_int = 1;

/// `IPV6_HDRINCL` (linux/in6.h): we supply the IPv6 header ourselves.
const IPV6_HDRINCL: libc::c_int = 36;

/// Sends batches through raw `IPPROTO_RAW` sockets (IPv4 and, where the kernel has it,
/// IPv6). Packets must be complete IP packets; for IPv4 the kernel fills in the total
/// length, the checksum and a zero identification, for IPv6 nothing.
///
/// A full device queue (`ENOBUFS`) or socket buffer (`EAGAIN`) is waited out with short
/// back-offs for at most 10 ms per packet; a packet still refused after that counts as
/// failed with that errno. Any other refusal fails just that packet.
pub struct RawSink {
    v4: Socket,
    /// `Err(errno)` if this host cannot open IPv6 raw sockets (e.g. IPv6 disabled): IPv6
    /// packets then count as failed with that errno.
    v6: Result<Socket, i32>,
    /// The message array handed to `sendmmsg`. Entry `i` always points at `iovs[i]`;
    /// `msg_name` points at `sin[i]` or `sin6[i]` depending on the run's family.
    hdrs: Vec<libc::mmsghdr>,
    /// One buffer per message, pointing into the batch being sent.
    iovs: Vec<libc::iovec>,
    /// Destination per message (port 0), IPv4 runs.
    sin: Vec<libc::sockaddr_in>,
    /// Destination per message (port 0), IPv6 runs.
    sin6: Vec<libc::sockaddr_in6>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` point only into this struct's own heap
// buffers (`iovs`, `sin`, `sin6`, which are never resized) or, during `send`, into the
// borrowed batch. They are only dereferenced (by the kernel) inside `send`, which takes
// `&mut self`, so moving the sink to another thread cannot create shared access.
send_and_debug!(RawSink, [v4, v6]);

impl RawSink {
    /// Opens the raw sockets. IPv6 is optional: if the kernel lacks it
    /// (`EAFNOSUPPORT`), IPv6 packets fail per packet instead.
    pub fn open() -> Result<Self, OpenError> {
        let v4 = raw_socket(Domain::IPV4).map_err(|e| OpenError::new("IPv4 raw socket", e))?;
        RawFamily::V4.configure(&v4)?;
        let v6 = match raw_socket(Domain::IPV6) {
            Ok(s) => {
                RawFamily::V6.configure(&s)?;
                Ok(s)
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Err(libc::EAFNOSUPPORT),
            Err(e) => return Err(OpenError::new("IPv6 raw socket", e)),
        };

        let (iovs, hdrs) = mmsg_vectors(CHUNK);
        let sin = vec![sockaddr_v4(Ipv4Addr::UNSPECIFIED); CHUNK];
        let sin6 = vec![sockaddr_v6(Ipv6Addr::UNSPECIFIED); CHUNK];
        Ok(RawSink {
            v4,
            v6,
            hdrs,
            iovs,
            sin,
            sin6,
        })
    }

    /// Whether IPv6 packets can be sent.
    pub fn has_ipv6(&self) -> bool {
        self.v6.is_ok()
    }

    /// Points message `i` at `pkt` and `dst`.
    #[inline]
    fn fill(&mut self, i: usize, dst: IpAddr, pkt: &[u8]) {
        self.iovs[i] = libc::iovec {
            // The kernel only reads through this pointer (sendmmsg).
            iov_base: pkt.as_ptr().cast_mut().cast(),
            iov_len: pkt.len(),
        };
        let hdr = &mut self.hdrs[i].msg_hdr;
        match dst {
            IpAddr::V4(a) => {
                self.sin[i] = sockaddr_v4(a);
                hdr.msg_name = (&mut self.sin[i] as *mut libc::sockaddr_in).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            IpAddr::V6(a) => {
                self.sin6[i] = sockaddr_v6(a);
                hdr.msg_name = (&mut self.sin6[i] as *mut libc::sockaddr_in6).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
    }

    /// Sends messages `0..n` (already filled) on `fd`.
    fn send_run(&mut self, fd: RawFd, n: usize, report: &mut SendReport) {
        send_all(fd, &mut self.hdrs[..n], report);
    }
}

impl PacketSink for RawSink {
    fn send(&mut self, batch: &SendBatch) -> SendReport {
        let mut report = SendReport::default();
        let len = batch.len();
        let mut i = 0;
        while i < len {
            // A run: consecutive packets of one family, at most CHUNK of them.
            let v6 = batch.get(i).0.is_ipv6();
            let mut n = 0;
            while i + n < len && n < CHUNK {
                let (dst, pkt) = batch.get(i + n);
                if dst.is_ipv6() != v6 {
                    break;
                }
                self.fill(n, dst, pkt);
                n += 1;
            }
            let fd = if v6 {
                self.v6.as_ref().map(|s| s.as_raw_fd())
            } else {
                Ok(self.v4.as_raw_fd())
            };
            match fd {
                Ok(fd) => self.send_run(fd, n, &mut report),
                Err(&errno) => {
                    report.failed += n;
                    report.last_errno = Some(errno);
                }
            }
            i += n;
        }
        report
    }
}

fn raw_socket(domain: Domain) -> io::Result<Socket> {
    Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
}

/// The options one address family's raw socket gets, with their names for errors.
struct RawFamily {
    /// The option level (`IPPROTO_IP` or `IPPROTO_IPV6`).
    level: libc::c_int,
    /// We supply the IP header.
    hdrincl: (libc::c_int, &'static str),
    /// Without it a raw socket hides ENOBUFS (a full device queue): the packet is dropped
    /// and the send reports success. With it we see it and back off.
    recverr: (libc::c_int, &'static str),
    /// The send buffer's name.
    sndbuf: &'static str,
}

impl RawFamily {
    const V4: RawFamily = RawFamily {
        level: libc::IPPROTO_IP,
        hdrincl: (libc::IP_HDRINCL, "IP_HDRINCL"),
        recverr: (libc::IP_RECVERR, "IP_RECVERR"),
        sndbuf: "SO_SNDBUF (IPv4)",
    };
    /// IPPROTO_RAW implies IPV6_HDRINCL on current kernels; it is set anyway for older
    /// ones. (socket2's set_header_included_v6 passes IP_HDRINCL's number, not 36.)
    const V6: RawFamily = RawFamily {
        level: libc::IPPROTO_IPV6,
        hdrincl: (IPV6_HDRINCL, "IPV6_HDRINCL"),
        recverr: (libc::IPV6_RECVERR, "IPV6_RECVERR"),
        sndbuf: "SO_SNDBUF (IPv6)",
    };

    /// Sets the header option, the send buffer and the error queue on `s`.
    fn configure(&self, s: &Socket) -> Result<(), OpenError> {
        let fd = s.as_raw_fd();
        let (hdrincl, name) = self.hdrincl;
        set_int_opt(fd, self.level, hdrincl, 1).map_err(|e| OpenError::new(name, e))?;
        set_buffer(fd, SNDBUF_OPTS, SNDBUF, self.sndbuf)?;
        let (recverr, name) = self.recverr;
        set_int_opt(fd, self.level, recverr, 1).map_err(|e| OpenError::new(name, e))
    }
}

/// Waits a little after `EAGAIN` (socket buffer full: until writable, at most 1 ms) or
/// `ENOBUFS` (device queue full: a short sleep, since poll cannot tell when it drains).
fn back_off(fd: RawFd, errno: i32) {
    if errno == libc::EAGAIN {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pfd` is a live local and we pass a count of 1. Errors (EINTR) only mean
        // we retry sooner.
        unsafe { libc::poll(&mut pfd, 1, POLLOUT_MS) };
    } else {
        std::thread::sleep(NOBUFS_PAUSE);
    }
}

fn sockaddr_v4(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6(a: Ipv6Addr) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: a.octets(),
        },
        sin6_scope_id: 0,
    }
}

/// Sends every message of `hdrs` on `fd` with `sendmmsg`, waiting out back-pressure
/// (`EAGAIN`, `ENOBUFS`) for at most `MAX_STALL` per packet and counting refusals.
/// Each header must point at a live iovec (and address, if any) for the whole call.
pub(super) fn send_all(fd: RawFd, hdrs: &mut [libc::mmsghdr], report: &mut SendReport) {
    let n = hdrs.len();
    let mut k = 0;
    // When the current packet first met back-pressure.
    let mut stalled_since: Option<Instant> = None;
    while k < n {
        let rest = &mut hdrs[k..n];
        // SAFETY: `rest` is a live, exclusively borrowed slice of `n - k` initialised
        // mmsghdr entries; the caller guarantees each points at its own live iovec and
        // address (with the matching length) and through the iovec at a live packet. The
        // kernel reads those and writes only `msg_len` of the entries it sent.
        let ret = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if ret > 0 {
            k += ret as usize;
            report.sent += ret as usize;
            stalled_since = None;
            continue;
        }
        // ret == 0 should not happen with n > k; treat it like a full buffer.
        let errno = if ret == 0 {
            libc::EAGAIN
        } else {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        };
        match errno {
            libc::EINTR => {}
            libc::EAGAIN | libc::ENOBUFS
                if stalled_since.get_or_insert_with(Instant::now).elapsed() < MAX_STALL =>
            {
                back_off(fd, errno);
            }
            _ => {
                // The first remaining message was refused: count it, skip it.
                report.failed += 1;
                report.last_errno = Some(errno);
                k += 1;
                stalled_since = None;
            }
        }
    }
}
