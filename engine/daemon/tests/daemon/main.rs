//! The daemon end to end over the in-memory transport with a scripted target: a real Unix
//! socket in a temp directory, a real `tokio::net::UnixStream` client speaking the protocol.
//! No privileges needed (the peer-credential test runs a child as another uid only when it
//! can); no packet ever leaves the process. One test binary, one module per subject;
//! `support` holds the harness, the client and the readers of the event stream.

mod boundary;
mod metrics;
mod queue;
mod results;
mod support;
