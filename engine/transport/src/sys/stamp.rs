//! Kernel receive stamps for the `recvmmsg` path (`SO_TIMESTAMPNS`): a control buffer per
//! message and the `SCM_TIMESTAMPNS` read from it, and the clock both receive paths stamp on.
//! Without them a reply counts as received when the receive thread read it, and its RTT
//! sample carries the thread's lag (gathering, a CPU shared with a send thread) three times
//! into a round's `2 x p99 + p50` wait; with them the lag is measured apart and added once.

use super::set_int_opt;
use std::mem::size_of;
use std::os::fd::RawFd;

/// `CMSG_SPACE(sizeof(struct timespec))` in 8-byte words (aligned like a `cmsghdr`).
const WORDS: usize = CMSG_SPACE.div_ceil(8);
// SAFETY: `CMSG_SPACE` is pure arithmetic on its argument (header size plus the aligned
// length); it reads and writes no memory.
const CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::timespec>() as u32) } as usize;
// SAFETY: as above, `CMSG_LEN` is pure arithmetic.
const CMSG_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<libc::timespec>() as u32) } as usize;
const _: () = assert!(CMSG_LEN <= CMSG_SPACE && WORDS * 8 >= CMSG_SPACE);

/// Control buffers for up to `n` messages of one `recvmmsg` call, or none if the kernel
/// refused `SO_TIMESTAMPNS` (every packet then reads as unstamped).
pub(super) struct Stamps {
    bufs: Vec<[u64; WORDS]>,
}

impl Stamps {
    /// Asks the kernel to stamp every packet queued on `fd` and allocates `n` buffers.
    pub(super) fn enable(fd: RawFd, n: usize) -> Self {
        let on = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_ok();
        Stamps {
            bufs: if on { vec![[0; WORDS]; n] } else { Vec::new() },
        }
    }

    /// Points message `i`'s control area at its buffer, emptied (the kernel overwrites the
    /// length with what it wrote, so this is done before every call).
    pub(super) fn arm(&mut self, hdr: &mut libc::msghdr, i: usize) {
        match self.bufs.get_mut(i) {
            Some(b) => {
                hdr.msg_control = b.as_mut_ptr().cast();
                hdr.msg_controllen = size_of::<[u64; WORDS]>();
            }
            None => {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
        }
    }
}

/// The `SCM_TIMESTAMPNS` of a message the kernel filled through [`Stamps::arm`], in ns since
/// the Unix epoch; 0 if it carries none (stamps off, truncated control data).
pub(super) fn stamp_of(hdr: &libc::msghdr) -> u64 {
    if hdr.msg_control.is_null()
        || hdr.msg_controllen < CMSG_LEN
        || hdr.msg_flags & libc::MSG_CTRUNC != 0
    {
        return 0;
    }
    // SAFETY: `msg_control` points at a live buffer of `size_of::<[u64; WORDS]>()` bytes
    // (`Stamps::arm`) that the kernel filled with `msg_controllen` (<= that) bytes of
    // well-formed control messages; `CMSG_FIRSTHDR`/`CMSG_NXTHDR` stay within
    // `msg_controllen` and return null past it, and a data read is only made from a message
    // whose `cmsg_len` covers a whole `timespec` (read unaligned: no alignment is assumed).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let m = &*c;
            if m.cmsg_level == libc::SOL_SOCKET
                && m.cmsg_type == libc::SCM_TIMESTAMPNS
                && m.cmsg_len >= CMSG_LEN
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return timespec_ns(ts.tv_sec, ts.tv_nsec);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}

/// ns since the Unix epoch of a `timespec`; 0 (unstamped) before it.
fn timespec_ns(sec: libc::time_t, nsec: libc::c_long) -> u64 {
    match (u64::try_from(sec), u64::try_from(nsec)) {
        (Ok(s), Ok(n)) => s.saturating_mul(1_000_000_000).saturating_add(n),
        _ => 0,
    }
}

/// Now on the clock the kernel stamps packets with (`CLOCK_REALTIME`), in ns since the Unix
/// epoch; 0 if the clock is set before it (packets then read as just received).
pub(super) fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_buffer_holds_one_timestamp_message() {
        assert_eq!(
            CMSG_SPACE, 32,
            "cmsghdr (16) + timespec (16) on 64-bit Linux"
        );
    }

    #[test]
    fn timespecs_before_the_epoch_read_as_unstamped() {
        assert_eq!(timespec_ns(1, 5), 1_000_000_005);
        assert_eq!(timespec_ns(-1, 0), 0);
    }

    #[test]
    fn the_timestamp_message_is_read_and_a_truncated_one_is_not() {
        // SAFETY: msghdr is a plain C struct; all-zero bytes are a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        assert_eq!(stamp_of(&hdr), 0, "no control buffer");
        let mut buf = [[0u64; WORDS]; 1];
        hdr.msg_control = buf[0].as_mut_ptr().cast();
        hdr.msg_controllen = 0;
        assert_eq!(stamp_of(&hdr), 0, "nothing written");
        hdr.msg_controllen = CMSG_LEN;
        // SAFETY: `buf` is a live, 8-byte aligned buffer of CMSG_SPACE bytes and
        // `msg_controllen` (CMSG_LEN) covers one header and a timespec, which is what is
        // written: the header through CMSG_FIRSTHDR, the timespec unaligned at CMSG_DATA.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_len = CMSG_LEN;
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_TIMESTAMPNS;
            let ts = libc::timespec {
                tv_sec: 2,
                tv_nsec: 7,
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), ts);
        }
        assert_eq!(stamp_of(&hdr), 2_000_000_007);
        hdr.msg_flags = libc::MSG_CTRUNC;
        assert_eq!(stamp_of(&hdr), 0, "truncated");
    }
}
