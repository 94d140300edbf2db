//! A wake-up for a receive thread blocked in `ppoll`: an `eventfd` polled beside the capture
//! socket and written by whoever hands that thread new work, so a scan that starts or ends
//! is seen at once, not at the thread's next timeout.

use super::cvt;
use crate::Waker;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The `eventfd` (non-blocking), as a `File` so reading and writing it needs no `unsafe`.
#[derive(Debug)]
pub(super) struct Wake {
    fd: File,
}

impl Wake {
    /// A new, unsignalled wake-up.
    pub(super) fn new() -> std::io::Result<Arc<Wake>> {
        // SAFETY: `eventfd` takes no pointers; a non-negative return is a new descriptor.
        let raw = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `raw` was just returned by `eventfd`, so it is open and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Arc::new(Wake { fd: File::from(fd) }))
    }

    /// The descriptor to poll for `POLLIN`.
    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable (wakes a poll on it).
    fn signal(&self) {
        // A full counter (EAGAIN) is still readable, which is all a wake-up needs.
        let _ = (&self.fd).write(&1u64.to_ne_bytes());
    }

    /// Resets the counter after a poll saw it readable.
    pub(super) fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = (&self.fd).read(&mut b);
    }

    /// A [`Waker`] that signals this.
    pub(super) fn waker(self: &Arc<Self>) -> Waker {
        let w = Arc::clone(self);
        Waker::new(move || w.signal())
    }
}
