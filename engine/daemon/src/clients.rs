//! Connected clients and their outgoing frame queues: encoded frames are pushed with
//! `try_send` into each client's bounded queue, so a slow client can never stall the
//! daemon; one whose queue is full is dropped instead (it may reconnect and replay).

use portscope_proto::{encode, Event};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// One encoded protocol frame, shared by every queue it goes into and by the replay store.
pub(crate) type Frame = Arc<[u8]>;

/// Encodes one event.
pub(crate) fn frame(e: &Event) -> Frame {
    encode(e).into()
}

/// A connected client's outgoing side.
#[derive(Debug)]
struct ClientTx {
    frames: mpsc::Sender<Frame>,
    /// Woken when the daemon drops the client (its queue overflowed), so its connection
    /// task closes the socket even if the writer is stuck.
    kicked: Arc<Notify>,
}

/// Connected clients.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    map: HashMap<u64, ClientTx>,
    next_id: u64,
}

impl Clients {
    /// Adds a client whose first frame is `hello`. Returns its id and kick signal.
    pub(crate) fn add(&mut self, frames: mpsc::Sender<Frame>, hello: &Frame) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let kicked = Arc::new(Notify::new());
        let _ = frames.try_send(Arc::clone(hello));
        self.map.insert(
            id,
            ClientTx {
                frames,
                kicked: Arc::clone(&kicked),
            },
        );
        (id, kicked)
    }

    /// Removes a client: its writer drains what is queued, then closes.
    pub(crate) fn remove(&mut self, client: u64) {
        self.map.remove(&client);
    }

    /// Clients connected.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Queues `f` for one client; a client whose queue is full is dropped.
    pub(crate) fn send_to(&mut self, client: u64, f: &Frame) {
        let Some(c) = self.map.get(&client) else {
            return;
        };
        match c.frames.try_send(Arc::clone(f)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(client, "client fell behind; disconnecting it");
                if let Some(c) = self.map.remove(&client) {
                    c.kicked.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.map.remove(&client);
            }
        }
    }

    /// Queues `f` for every client.
    pub(crate) fn broadcast(&mut self, f: &Frame) {
        let ids: Vec<u64> = self.map.keys().copied().collect();
        for id in ids {
            self.send_to(id, f);
        }
    }
}
