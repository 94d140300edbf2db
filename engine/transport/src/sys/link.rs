//! [`LinkSink`]: sends complete IP packets on one interface to one next-hop MAC through an
//! `AF_PACKET`/`SOCK_DGRAM` socket (the kernel adds the Ethernet header), skipping the IP
//! output path (route lookup, neighbour table, netfilter) and, with `PACKET_QDISC_BYPASS`,
//! the interface's queueing discipline too. For measurements and for links where the
//! caller knows the next hop (as masscan's `--router-mac`); [`super::RawSink`] is the
//! default.

use super::sink::send_all;
use super::{
    link_addr, mmsg_vectors, packet_socket, set_buffer, set_int_opt, OpenError, SNDBUF_OPTS,
};
use crate::{PacketSink, SendBatch, SendReport};
use socket2::Socket;
use std::mem::size_of;
use std::os::fd::AsRawFd;

/// Messages per `sendmmsg` call.
const CHUNK: usize = 256;
/// Requested send buffer.
const SNDBUF: usize = 4 << 20;

/// Sends IP packets as link-layer frames to one next hop.
pub struct LinkSink {
    sock: Socket,
    /// The message array; entry `i` always points at `iovs[i]`, and its name at `to[0]`
    /// (IPv4) or `to[1]` (IPv6).
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// Next-hop addresses for IPv4 and IPv6 frames (boxed: the headers point into it).
    to: Box<[libc::sockaddr_ll; 2]>,
    qdisc_bypass: bool,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` point only into this struct's own heap
// buffers (`iovs`, `to`, never resized or moved) or, during `send`, into the borrowed
// batch; they are only dereferenced (by the kernel) inside `send`, which takes `&mut self`.
send_and_debug!(LinkSink, [sock, qdisc_bypass]);

impl LinkSink {
    /// Opens a sender on `interface` to `next_hop`, asking for `PACKET_QDISC_BYPASS` if
    /// `qdisc_bypass` (see [`Self::qdisc_bypass`] for whether the kernel agreed).
    pub fn open(interface: &str, next_hop: [u8; 6], qdisc_bypass: bool) -> Result<Self, OpenError> {
        // Never bound to a protocol: a send-only socket, it never queues received packets.
        let (sock, ifindex) = packet_socket(Some(interface), "AF_PACKET socket (send)")?;
        let fd = sock.as_raw_fd();
        set_buffer(fd, SNDBUF_OPTS, SNDBUF, "SO_SNDBUF (AF_PACKET)")?;
        let qdisc_bypass =
            qdisc_bypass && set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1).is_ok();
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| OpenError::UnknownInterface(interface.to_owned()))?;
        let ll = |proto| link_addr(ifindex, proto, Some(next_hop));
        let (iovs, hdrs) = mmsg_vectors(CHUNK);
        Ok(LinkSink {
            sock,
            hdrs,
            iovs,
            to: Box::new([ll(libc::ETH_P_IP), ll(libc::ETH_P_IPV6)]),
            qdisc_bypass,
        })
    }

    /// Whether `PACKET_QDISC_BYPASS` is in effect.
    pub fn qdisc_bypass(&self) -> bool {
        self.qdisc_bypass
    }
}

impl PacketSink for LinkSink {
    fn send(&mut self, batch: &SendBatch) -> SendReport {
        let mut report = SendReport::default();
        let len = batch.len();
        let to: *mut libc::sockaddr_ll = self.to.as_mut_ptr();
        let mut i = 0;
        while i < len {
            let n = (len - i).min(CHUNK);
            for k in 0..n {
                let (dst, pkt) = batch.get(i + k);
                self.iovs[k] = libc::iovec {
                    // The kernel only reads through this pointer (sendmmsg).
                    iov_base: pkt.as_ptr().cast_mut().cast(),
                    iov_len: pkt.len(),
                };
                let hdr = &mut self.hdrs[k].msg_hdr;
                hdr.msg_name = to.wrapping_add(usize::from(dst.is_ipv6())).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            }
            send_all(self.sock.as_raw_fd(), &mut self.hdrs[..n], &mut report);
            i += n;
        }
        report
    }
}
