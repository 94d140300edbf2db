//! An in-memory transport: probes go to a scripted responder, its replies come back through
//! a channel. Lets the whole engine pipeline run in unit tests without privileges.
//! [`Quiet`] tells a simulated clock when every reply has been processed.

use crate::{PacketSink, PacketSource, RecvBatch, SendBatch, SendReport};
use crossbeam_channel::{Receiver, RecvTimeoutError, SendError, Sender};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// A frame in the channel; `counted` frames are the responder's replies (not injected).
#[derive(Debug)]
struct Frame {
    bytes: Vec<u8>,
    counted: bool,
}

/// Whether the pipeline is quiet: every reply the responder produced has been received
/// *and* the receiver has come back for more (so it finished processing it).
#[derive(Debug, Clone)]
pub struct Quiet(Arc<AtomicU64>);

impl Quiet {
    /// True when no reply is in flight or in processing.
    pub fn is_quiet(&self) -> bool {
        self.0.load(SeqCst) == 0
    }
}

/// Injects arbitrary frames (forgeries, garbage) into the receive side.
#[derive(Debug, Clone)]
pub struct Injector(Sender<Frame>);

impl Injector {
    /// Queues one frame for the source.
    pub fn send(&self, bytes: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        self.0
            .send(Frame {
                bytes,
                counted: false,
            })
            .map_err(|e| SendError(e.0.bytes))
    }
}

/// A responder: given one sent packet, pushes zero or more reply packets through `reply`.
pub trait Responder: Send {
    /// Reacts to one probe.
    fn respond(&mut self, probe: &[u8], reply: &mut dyn FnMut(Vec<u8>));
}

impl<F: FnMut(&[u8], &mut dyn FnMut(Vec<u8>)) + Send> Responder for F {
    fn respond(&mut self, probe: &[u8], reply: &mut dyn FnMut(Vec<u8>)) {
        self(probe, reply)
    }
}

/// Sending half.
pub struct MemorySink {
    responder: Box<dyn Responder>,
    tx: Sender<Frame>,
    pending: Arc<AtomicU64>,
    /// Every packet sent, if recording was asked for.
    pub sent_log: Option<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySink").finish_non_exhaustive()
    }
}

/// Receiving half.
#[derive(Debug)]
pub struct MemorySource {
    rx: Receiver<Frame>,
    received: u64,
    pending: Arc<AtomicU64>,
    /// Replies handed out by the last `recv`, settled when the receiver comes back.
    handed: u64,
}

impl MemorySource {
    /// A handle telling when every reply so far has been processed.
    pub fn quiet(&self) -> Quiet {
        Quiet(Arc::clone(&self.pending))
    }
}

/// Builds a connected sink/source pair around `responder`. Also returns an [`Injector`] for
/// arbitrary frames (forgeries, garbage) into the receive side.
pub fn pair(responder: impl Responder + 'static) -> (MemorySink, MemorySource, Injector) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let pending = Arc::new(AtomicU64::new(0));
    (
        MemorySink {
            responder: Box::new(responder),
            tx: tx.clone(),
            pending: Arc::clone(&pending),
            sent_log: None,
        },
        MemorySource {
            rx,
            received: 0,
            pending,
            handed: 0,
        },
        Injector(tx),
    )
}

impl MemorySink {
    /// Another sink into the same receive side, answering through `responder` (a second
    /// send thread's).
    pub fn sibling(&self, responder: impl Responder + 'static) -> MemorySink {
        MemorySink {
            responder: Box::new(responder),
            tx: self.tx.clone(),
            pending: Arc::clone(&self.pending),
            sent_log: None,
        }
    }
}

impl PacketSink for MemorySink {
    fn send(&mut self, batch: &SendBatch) -> SendReport {
        for (_, pkt) in batch.iter() {
            if let Some(log) = &mut self.sent_log {
                log.push(pkt.to_vec());
            }
            let (tx, pending) = (&self.tx, &self.pending);
            self.responder.respond(pkt, &mut |bytes| {
                pending.fetch_add(1, SeqCst);
                if tx
                    .send(Frame {
                        bytes,
                        counted: true,
                    })
                    .is_err()
                {
                    pending.fetch_sub(1, SeqCst);
                }
            });
        }
        SendReport {
            sent: batch.len(),
            ..SendReport::default()
        }
    }
}

impl MemorySource {
    fn take(&mut self, batch: &mut RecvBatch, f: Frame) {
        batch.push_copy(&f.bytes);
        self.handed += u64::from(f.counted);
    }
}

impl PacketSource for MemorySource {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        batch.clear();
        // Coming back for more: the previous batch has been processed.
        self.pending
            .fetch_sub(std::mem::take(&mut self.handed), SeqCst);
        match self.rx.recv_timeout(timeout) {
            Ok(p) => self.take(batch, p),
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            // All senders gone: behave like an idle link.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                return Ok(());
            }
        }
        while batch.len() < batch.capacity() {
            match self.rx.try_recv() {
                Ok(p) => self.take(batch, p),
                Err(_) => break,
            }
        }
        self.received += batch.len() as u64;
        Ok(())
    }

    fn kernel_stats(&mut self) -> crate::KernelStats {
        crate::KernelStats {
            received: self.received,
            dropped: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_through_the_responder() {
        let (mut sink, mut src, inject) =
            pair(|p: &[u8], out: &mut dyn FnMut(Vec<u8>)| out(p.iter().rev().copied().collect()));
        let mut b = SendBatch::new(4);
        b.push("198.18.0.2".parse().unwrap(), |buf| {
            buf[..3].copy_from_slice(&[1, 2, 3]);
            3
        });
        let quiet = src.quiet();
        assert!(quiet.is_quiet());
        assert_eq!(sink.send(&b).sent, 1);
        inject.send(vec![9]).unwrap();
        assert!(!quiet.is_quiet(), "a reply is in flight");
        let mut r = RecvBatch::new(8);
        src.recv(&mut r, Duration::from_millis(10)).unwrap();
        let got: Vec<&[u8]> = r.iter().collect();
        assert_eq!(got, vec![&[3u8, 2, 1][..], &[9u8][..]]);
        assert!(!quiet.is_quiet(), "received but not yet processed");
        src.recv(&mut r, Duration::from_millis(1)).unwrap();
        assert!(r.is_empty());
        assert!(quiet.is_quiet());
    }
}
