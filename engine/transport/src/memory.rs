//! An in-memory transport: probes go to a scripted responder, its replies come back through
//! a channel. Lets the whole engine pipeline run in unit tests without privileges.

use crate::{PacketSink, PacketSource, RecvBatch, SendBatch, SendReport};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::time::Duration;

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
    tx: Sender<Vec<u8>>,
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
    rx: Receiver<Vec<u8>>,
    received: u64,
}

/// Builds a connected sink/source pair around `responder`. Also returns a sender that can
/// inject arbitrary frames (forgeries, garbage) into the receive side.
pub fn pair(responder: impl Responder + 'static) -> (MemorySink, MemorySource, Sender<Vec<u8>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        MemorySink {
            responder: Box::new(responder),
            tx: tx.clone(),
            sent_log: None,
        },
        MemorySource { rx, received: 0 },
        tx,
    )
}

impl PacketSink for MemorySink {
    fn send(&mut self, batch: &SendBatch) -> SendReport {
        for (_, pkt) in batch.iter() {
            if let Some(log) = &mut self.sent_log {
                log.push(pkt.to_vec());
            }
            let tx = &self.tx;
            self.responder.respond(pkt, &mut |r| {
                let _ = tx.send(r);
            });
        }
        SendReport {
            sent: batch.len(),
            ..SendReport::default()
        }
    }
}

impl PacketSource for MemorySource {
    fn recv(&mut self, batch: &mut RecvBatch, timeout: Duration) -> io::Result<()> {
        batch.clear();
        match self.rx.recv_timeout(timeout) {
            Ok(p) => {
                batch.push_copy(&p);
            }
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            // All senders gone: behave like an idle link.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                return Ok(());
            }
        }
        while batch.len() < batch.capacity() {
            match self.rx.try_recv() {
                Ok(p) => {
                    batch.push_copy(&p);
                }
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
        assert_eq!(sink.send(&b).sent, 1);
        inject.send(vec![9]).unwrap();
        let mut r = RecvBatch::new(8);
        src.recv(&mut r, Duration::from_millis(10)).unwrap();
        let got: Vec<&[u8]> = r.iter().collect();
        assert_eq!(got, vec![&[3u8, 2, 1][..], &[9u8][..]]);
        src.recv(&mut r, Duration::from_millis(1)).unwrap();
        assert!(r.is_empty());
    }
}
