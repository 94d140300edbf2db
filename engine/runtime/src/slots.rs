//! Scan slots: which source-port blocks are taken. The engine takes one per submitted scan;
//! the receive thread frees it once the scan's last replies are drained.

use std::sync::Mutex;

/// Free/used scan slots.
#[derive(Debug)]
pub(crate) struct Slots(Mutex<Vec<bool>>);

impl Slots {
    pub(crate) fn new(n: usize) -> Self {
        Slots(Mutex::new(vec![false; n]))
    }

    /// Takes a free slot, unless `limit` are in use already.
    pub(crate) fn take(&self, limit: usize) -> Option<u16> {
        let mut used = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if used.iter().filter(|u| **u).count() >= limit {
            return None;
        }
        let i = used.iter().position(|u| !*u)?;
        used[i] = true;
        Some(i as u16)
    }

    pub(crate) fn free(&self, slot: u16) {
        let mut used = self.0.lock().unwrap_or_else(|e| e.into_inner());
        used[usize::from(slot)] = false;
    }
}
