//! Walking the frames of one `TPACKET_V3` receive-ring block (linux/if_packet.h), as plain
//! bounds-checked reads over a byte slice, so it is unit-tested on crafted buffers without
//! privileges. The ring itself (socket options, `mmap`, handing blocks back and forth with
//! the kernel) is [`crate::sys::RingSource`]'s.
//!
//! A block starts with a `tpacket_block_desc` (48 bytes): `block_status` at 8, `num_pkts`
//! at 12, `offset_to_first_pkt` at 16, `blk_len` (bytes in use) at 20. Each frame starts
//! with a `tpacket3_hdr`: `tp_next_offset` at 0 (relative to this frame; 0 on the last),
//! `tp_sec`/`tp_nsec` at 4/8 (when the kernel received it, `CLOCK_REALTIME`, stamped in
//! `tpacket_rcv`), `tp_snaplen` at 12 (bytes captured), `tp_len` at 16 (length on the wire)
//! and `tp_net` at 26 (offset of the IP header from the frame; `SOCK_DGRAM` rings have no
//! link header).
//! Anything inconsistent ends the walk of that block: it is the kernel's memory, but a
//! bug here must never read outside the block.

/// Size of the block descriptor.
pub const BLOCK_DESC_LEN: usize = 48;
/// Offset of `block_status` in the block descriptor.
pub const BLOCK_STATUS_AT: usize = 8;
/// Offset of `num_pkts` in the block descriptor (counted as the kernel reserves a frame).
pub const BLOCK_NUM_PKTS_AT: usize = 12;
/// Size of a `tpacket3_hdr`.
pub const FRAME_HDR_LEN: usize = 48;

/// One captured packet: its bytes from the IP header (`snaplen` of them), its length and
/// when the kernel received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The captured bytes, starting at the IP header.
    pub data: &'a [u8],
    /// The packet's full length (larger than `data.len()` if the capture was truncated).
    pub wire_len: usize,
    /// The kernel's receive time in nanoseconds since the Unix epoch (`CLOCK_REALTIME`), or
    /// 0 if the header holds none (or an impossible one).
    pub stamp_ns: u64,
}

/// Where a walk through one block stands: the next frame's offset and how many are left.
/// Plain numbers, so a reader can stop when its batch is full and resume on the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    at: usize,
    left: u32,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

impl Cursor {
    /// A walk from the first frame of `block` (a block the kernel handed to user space).
    /// A descriptor that does not fit the block gives an empty walk.
    pub fn start(block: &[u8]) -> Cursor {
        let parsed = (|| {
            let num = u32_at(block, 12)?;
            let first = usize::try_from(u32_at(block, 16)?).ok()?;
            (num == 0 || first >= BLOCK_DESC_LEN).then_some(Cursor {
                at: first,
                left: num,
            })
        })();
        parsed.unwrap_or(Cursor { at: 0, left: 0 })
    }

    /// Frames not yet returned (as the descriptor counts them).
    pub fn left(&self) -> u32 {
        self.left
    }

    /// The next frame of `block` (the same block `start` was given), or `None` at the end or
    /// at the first inconsistency (after which the walk stays ended).
    pub fn next<'a>(&mut self, block: &'a [u8]) -> Option<Frame<'a>> {
        if self.left == 0 {
            return None;
        }
        let frame = self.frame(block);
        match frame {
            Some((f, next)) => {
                self.left -= 1;
                match next {
                    Some(at) => self.at = at,
                    None => self.left = 0,
                }
                Some(f)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    /// The frame at `self.at` and the offset of the one after it (if the header says so and
    /// more are expected).
    fn frame<'a>(&self, block: &'a [u8]) -> Option<(Frame<'a>, Option<usize>)> {
        let at = self.at;
        if at.checked_add(FRAME_HDR_LEN)? > block.len() {
            return None;
        }
        let next = usize::try_from(u32_at(block, at)?).ok()?;
        let (sec, nsec) = (u32_at(block, at + 4)?, u32_at(block, at + 8)?);
        let stamp_ns = if nsec < 1_000_000_000 {
            u64::from(sec) * 1_000_000_000 + u64::from(nsec)
        } else {
            0
        };
        let snaplen = usize::try_from(u32_at(block, at + 12)?).ok()?;
        let wire_len = usize::try_from(u32_at(block, at + 16)?).ok()?;
        let net = usize::from(u16_at(block, at + 26)?);
        if net < FRAME_HDR_LEN {
            return None;
        }
        let start = at.checked_add(net)?;
        let data = block.get(start..start.checked_add(snaplen)?)?;
        // Frames only move forward, past this frame's header; a next offset of 0 marks the
        // last frame whatever the count says.
        let following = if self.left > 1 && next >= FRAME_HDR_LEN {
            Some(at.checked_add(next)?)
        } else {
            None
        };
        Some((
            Frame {
                data,
                wire_len: wire_len.max(snaplen),
                stamp_ns,
            },
            following,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a block of `size` bytes holding `pkts` as the kernel lays them out: a
    /// descriptor, then frames at 16-byte aligned offsets, each a header, 32 bytes standing
    /// for the `sockaddr_ll` and padding, then the packet. Frame `i` is stamped
    /// `STAMP_SEC + i` s and `i` ns.
    fn block(size: usize, pkts: &[(&[u8], u32)]) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        };
        put32(&mut b, 8, 1); // TP_STATUS_USER
        put32(&mut b, 12, pkts.len() as u32);
        put32(&mut b, 16, 64);
        let mut at = 64;
        for (i, (data, wire)) in pkts.iter().enumerate() {
            let net = 80usize;
            let len = (net + data.len()).next_multiple_of(16);
            let last = i + 1 == pkts.len();
            put32(&mut b, at, if last { 0 } else { len as u32 });
            put32(&mut b, at + 4, STAMP_SEC + i as u32);
            put32(&mut b, at + 8, i as u32);
            put32(&mut b, at + 12, data.len() as u32);
            put32(&mut b, at + 16, *wire);
            b[at + 26..at + 28].copy_from_slice(&(net as u16).to_ne_bytes());
            b[at + net..at + net + data.len()].copy_from_slice(data);
            at += len;
        }
        put32(&mut b, 20, at as u32);
        b
    }

    const STAMP_SEC: u32 = 1_700_000_000;

    fn walk(b: &[u8]) -> Vec<(Vec<u8>, usize)> {
        let mut c = Cursor::start(b);
        let mut out = Vec::new();
        while let Some(f) = c.next(b) {
            out.push((f.data.to_vec(), f.wire_len));
        }
        out
    }

    #[test]
    fn walks_every_frame_in_order() {
        let pkts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x45, i, i, i]).collect();
        let refs: Vec<(&[u8], u32)> = pkts.iter().map(|p| (&p[..], 4)).collect();
        let b = block(4096, &refs);
        let got = walk(&b);
        assert_eq!(got.len(), 5);
        for (i, (data, wire)) in got.iter().enumerate() {
            assert_eq!(data, &pkts[i]);
            assert_eq!(*wire, 4);
        }
    }

    #[test]
    fn each_frame_carries_the_kernels_receive_time() {
        let b = block(4096, &[(&[1; 8], 8), (&[2; 8], 8)]);
        let mut c = Cursor::start(&b);
        let s0 = u64::from(STAMP_SEC) * 1_000_000_000;
        assert_eq!(c.next(&b).unwrap().stamp_ns, s0);
        assert_eq!(c.next(&b).unwrap().stamp_ns, s0 + 1_000_000_001);
        // An impossible nanosecond field reads as no stamp, not as a wrong one.
        let mut b = block(4096, &[(&[1; 8], 8)]);
        b[64 + 8..64 + 12].copy_from_slice(&1_000_000_000u32.to_ne_bytes());
        assert_eq!(Cursor::start(&b).next(&b).unwrap().stamp_ns, 0);
    }

    #[test]
    fn a_truncated_capture_keeps_its_wire_length() {
        let b = block(4096, &[(&[1, 2, 3], 1500)]);
        assert_eq!(walk(&b), vec![(vec![1, 2, 3], 1500)]);
    }

    #[test]
    fn an_empty_block_walks_nothing() {
        let b = block(4096, &[]);
        assert!(walk(&b).is_empty());
        assert_eq!(Cursor::start(&b).left(), 0);
    }

    #[test]
    fn a_walk_resumes_where_it_stopped() {
        let pkts: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 20]).collect();
        let refs: Vec<(&[u8], u32)> = pkts.iter().map(|p| (&p[..], 20)).collect();
        let b = block(4096, &refs);
        let mut c = Cursor::start(&b);
        assert_eq!(c.next(&b).unwrap().data, &pkts[0][..]);
        let saved = c;
        let mut again = saved;
        assert_eq!(again.next(&b).unwrap().data, &pkts[1][..]);
        assert_eq!(c.left(), 3);
        let rest: Vec<_> = std::iter::from_fn(|| c.next(&b)).collect();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[2].data, &pkts[3][..]);
        assert!(c.next(&b).is_none());
    }

    #[test]
    fn a_frame_running_past_the_block_ends_the_walk() {
        let mut b = block(4096, &[(&[1; 8], 8), (&[2; 8], 8)]);
        // The second frame claims 1 MiB of captured bytes.
        let second = 64 + (80usize + 8).next_multiple_of(16);
        b[second + 12..second + 16].copy_from_slice(&(1u32 << 20).to_ne_bytes());
        assert_eq!(walk(&b), vec![(vec![1; 8], 8)]);
    }

    #[test]
    fn a_count_larger_than_the_frames_stops_at_the_last_link() {
        let mut b = block(4096, &[(&[7; 8], 8)]);
        // Claims 1000 frames, but the only frame's next offset is 0.
        b[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(walk(&b), vec![(vec![7; 8], 8)]);
    }

    #[test]
    fn garbage_offsets_never_read_outside() {
        // Every field of a small block set to every byte value: no panic, nothing outside.
        for v in [0u8, 1, 0x30, 0x7f, 0xff] {
            let b = vec![v; 256];
            let got = walk(&b);
            for (data, _) in got {
                assert!(data.len() <= 256);
            }
        }
        let mut b = block(256, &[(&[9; 8], 8)]);
        b[16..20].copy_from_slice(&4u32.to_ne_bytes()); // first frame inside the descriptor
        assert!(walk(&b).is_empty());
        let mut b = block(256, &[(&[9; 8], 8)]);
        b[64 + 26..64 + 28].copy_from_slice(&8u16.to_ne_bytes()); // IP header inside tp hdr
        assert!(walk(&b).is_empty());
    }
}
