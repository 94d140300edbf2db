//! A minimal plain-SMTP server on 127.0.0.1 (no TLS) that records every session: the first
//! `refuse` sessions are greeted with `421` (the service is down: the client must try
//! again later) and closed, the others are served and their commands and DATA lines kept.
//! Shared by the suites that include it (`managed_smtp`).

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Sessions opened, refused ones included.
    pub sessions: usize,
    /// The lines of each message accepted (`DATA` ended by `.` and answered 250), commands
    /// included.
    pub messages: Vec<Vec<String>>,
}

/// Starts the server; returns its port and what it saw.
pub async fn smtp_server(refuse: usize) -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let n = {
                let mut s = log.lock().unwrap();
                s.sessions += 1;
                s.sessions
            };
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                if n <= refuse {
                    let _ = w.write_all(b"421 test service not available\r\n").await;
                    return;
                }
                session(BufReader::new(r), w, &log).await;
            });
        }
    });
    (port, seen)
}

/// Serves one session: every command is answered 250 (EHLO, MAIL, RCPT), DATA 354.
async fn session(
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    log: &Mutex<Seen>,
) {
    let mut lines = r.lines();
    let _ = w.write_all(b"220 test ESMTP\r\n").await;
    let mut in_data = false;
    let mut message = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        message.push(line.clone());
        let reply: &[u8] = if in_data {
            if line != "." {
                continue;
            }
            in_data = false;
            log.lock()
                .unwrap()
                .messages
                .push(std::mem::take(&mut message));
            b"250 queued\r\n"
        } else if line == "DATA" {
            in_data = true;
            b"354 go on\r\n"
        } else if line == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).await.is_err() {
            return;
        }
    }
}
