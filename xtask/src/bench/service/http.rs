//! The agent's HTTP/1.1 client: one `Connection: close` request bound to a lab host address,
//! and the response parsing it shares with the webhook receiver.
//!
//! Hand-written on purpose: every request must leave from its own lab host address (the
//! requester the API rate-limits and scans), chosen per request. `ureq` 2 cannot bind a
//! source address and `ureq` 3 only through its unversioned `Connector` API; `reqwest` binds
//! per client (a client and a runtime per source, up to a thousand). What it implements is
//! the small subset the bench sends and the API answers: no keep-alive, no TLS, no redirects.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};

use super::agent::AgentReq;
use super::{CONNECT_TIMEOUT, IO_TIMEOUT};

/// One HTTP/1.1 request (`Connection: close`) from `req.src` to the API; (status, body).
pub(super) fn http_call(api: SocketAddr, req: &AgentReq) -> anyhow::Result<(u16, String)> {
    if !matches!(req.method.as_str(), "GET" | "POST") || !req.path.starts_with("/v1/") {
        bail!("refusing {} {}", req.method, req.path);
    }
    let clean = |s: &str| !s.contains(['\r', '\n']);
    if !clean(&req.path) || !req.headers.iter().all(|(k, v)| clean(k) && clean(v)) {
        bail!("CR or LF in the request");
    }
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddr::new(req.src, 0).into())
        .with_context(|| format!("binding to {}", req.src))?;
    sock.connect_timeout(&api.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {api}"))?;
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {api}\r\nUser-Agent: portscope-bench\r\nAccept: */*\r\nConnection: close\r\n",
        req.method, req.path
    );
    if req.method == "POST" {
        text += "Content-Length: 0\r\n";
    }
    for (k, v) in &req.headers {
        let _ = write!(text, "{k}: {v}\r\n");
    }
    text += "\r\n";
    s.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the response")?;
    parse_response(&raw)
}

/// Splits an HTTP message into head and body (chunked or `Content-Length` bodies decoded).
pub(super) fn split_message(raw: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let rest = &raw[at + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            bail!("body cut short: {} of {n} bytes", rest.len());
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((head, body))
}

pub(super) fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("chunk cut short");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// (status, body) of a response.
pub(super) fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let (head, body) = split_message(raw)?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
