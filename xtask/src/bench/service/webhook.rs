//! The agent's webhook receiver: accepts the API's completion POSTs, timestamps each on arrival
//! and answers 204.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::agent::{emit, micros_since, AgentMsg};
use super::http::split_message;

pub(super) fn serve_hooks(listener: &TcpListener, t0: Instant) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        thread::spawn(move || {
            if let Ok((t, path, body)) = read_hook(conn) {
                emit(&AgentMsg::Hook {
                    t_us: micros_since(t0, t),
                    path,
                    body,
                });
            }
        });
    }
}

/// Reads one webhook POST, answers 204; (arrival time, path, body).
pub(super) fn read_hook(mut c: TcpStream) -> anyhow::Result<(Instant, String, String)> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > 4 << 20 {
            bail!("webhook too large");
        }
        if let Ok((head, body)) = split_message(&raw) {
            let want = head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if want.is_none_or(|n| body.len() >= n) {
                break;
            }
        }
    }
    let t = Instant::now();
    let (head, body) = split_message(&raw)?;
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "POST" {
        bail!("webhook method {method}");
    }
    let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    Ok((
        t,
        path.to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
