//! The agent's webhook receiver: accepts the API's completion POSTs, timestamps each when its
//! body has been read, and answers 204. The request head is parsed by `httparse`; the API
//! sends its webhooks with a `Content-Length` body.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::agent::{emit, micros_since, AgentMsg};

/// Largest webhook read.
const MAX_HOOK: usize = 4 << 20;

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
            bail!("the connection closed before the whole webhook came");
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_HOOK {
            bail!("webhook too large");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = req.parse(&raw)? else {
            continue;
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        if header("transfer-encoding").is_some() {
            bail!("webhook with a transfer encoding (a Content-Length body was expected)");
        }
        let len: usize = header("content-length")
            .map(|v| v.parse().context("webhook Content-Length"))
            .transpose()?
            .unwrap_or(0);
        if raw.len() < head + len {
            continue;
        }
        let t = Instant::now();
        if req.method != Some("POST") {
            bail!("webhook method {:?}", req.method);
        }
        let path = req.path.unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&raw[head..head + len]).into_owned();
        let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        return Ok((t, path, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Sends `parts` (with a pause between them) to a receiver; its result and reply.
    fn deliver(parts: &[&'static str]) -> (anyhow::Result<(String, String)>, String) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let parts = parts.to_vec();
        let sender = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for p in parts {
                s.write_all(p.as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            reply
        });
        let got = read_hook(l.accept().unwrap().0).map(|(_, path, body)| (path, body));
        (got, sender.join().unwrap())
    }

    #[test]
    fn webhooks_are_read_across_reads_and_answered_204() {
        let (got, reply) = deliver(&[
            "POST /hook/burst7 HTTP/1.1\r\nHost: h\r\ncontent-type: application/json\r\n",
            "Content-Length: 15\r\n\r\n{\"status\":",
            "\"ok\"}",
        ]);
        assert_eq!(
            got.unwrap(),
            ("/hook/burst7".to_owned(), "{\"status\":\"ok\"}".to_owned())
        );
        assert!(reply.starts_with("HTTP/1.1 204 "), "{reply}");
    }

    #[test]
    fn other_methods_and_short_or_chunked_bodies_are_refused() {
        for parts in [
            &["GET /hook/x HTTP/1.1\r\nHost: h\r\n\r\n"][..],
            &["POST /hook/x HTTP/1.1\r\nContent-Length: 9\r\n\r\nab"],
            &["POST /hook/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"],
        ] {
            let (got, reply) = deliver(parts);
            assert!(got.is_err(), "{parts:?}");
            assert_eq!(reply, "", "{parts:?}");
        }
    }
}
