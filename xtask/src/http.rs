//! HTTP/1.1 from a chosen lab address: `ureq` with a connector that binds every connection
//! to a source address before connecting, for the clients that must reach the API as a
//! given lab host (the agent of `bench --service`, `soak`).
//!
//! ureq has no source-address option; its `unversioned::transport` API takes a bespoke
//! [`Connector`] instead (that API is outside ureq's semver promise: Cargo.lock pins the
//! version, and a ureq update that changes it fails to compile here, nowhere else). The
//! connector opens the socket with `socket2`, binds it, connects, and hands the stream to
//! `BoundTcp`, which only moves bytes between the socket and ureq's buffers: ureq writes
//! the requests and parses the responses. Agents keep no idle connections, so every request
//! is its own connection (and its latency includes the connect), as with curl. URLs name
//! the API by address: no name is looked up.
//!
//! Cost, measured (`client_overhead_against_a_raw_request`, loopback, same run): about 20 µs
//! a request over a hand-written request (~50 µs against ~31 µs, connect included), against
//! the API's ~0.2 ms idle answers. That needs ureq optimised in dev builds too (the workspace
//! `Cargo.toml` sets `opt-level = 3` for ureq, ureq-proto and http) and 16 KiB buffers:
//! unoptimised, with its default 128 KiB buffers, it cost 1.2-1.5 ms of CPU a request and
//! raised the bench's idle GET p50 from 0.23 to 1.82 ms.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// A TCP connection from `src` (any port) to `dst`, given up after `timeout`.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&dst.into(), timeout)?;
    Ok(sock.into())
}

/// Bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting.
    pub connect: Duration,
    /// Each of: sending the request, receiving the response head, receiving the body.
    pub io: Duration,
}

/// An agent whose connections all leave from `src`: no idle connections kept, error
/// statuses returned as responses (not `Err`).
pub fn agent_from(src: IpAddr, timeouts: Timeouts) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(timeouts.connect))
        .timeout_send_request(Some(timeouts.io))
        .timeout_recv_response(Some(timeouts.io))
        .timeout_recv_body(Some(timeouts.io))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent("portscope-xtask")
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .build();
    ureq::Agent::with_parts(config, BoundConnector { src }, LiteralAddress)
}

/// `method url` (GET or POST, no body) from `src` with `headers`: (status, body).
pub fn call(
    src: IpAddr,
    timeouts: Timeouts,
    method: &str,
    url: &str,
    headers: &[(String, String)],
) -> anyhow::Result<(u16, String)> {
    fn with<B>(
        mut b: ureq::RequestBuilder<B>,
        headers: &[(String, String)],
    ) -> ureq::RequestBuilder<B> {
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b
    }
    let agent = agent_from(src, timeouts);
    let mut resp = match method {
        "GET" => with(agent.get(url), headers).call()?,
        "POST" => with(agent.post(url), headers).send_empty()?,
        other => anyhow::bail!("{other} is not GET or POST"),
    };
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string()?))
}

/// Takes the address from the URL, which must be `IP:PORT`: no name is ever looked up (the
/// lab has no resolver; ureq's own resolver would also spawn a thread per request).
#[derive(Debug)]
struct LiteralAddress;

impl Resolver for LiteralAddress {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addr: SocketAddr = uri
            .authority()
            .and_then(|a| a.as_str().parse().ok())
            .ok_or(ureq::Error::HostNotFound)?;
        let mut addrs = self.empty();
        addrs.push(addr);
        Ok(addrs)
    }
}

/// Opens every connection of an agent from one source address.
#[derive(Debug)]
struct BoundConnector {
    src: IpAddr,
}

impl Connector for BoundConnector {
    type Out = BoundTcp;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        _chained: Option<()>,
    ) -> Result<Option<BoundTcp>, ureq::Error> {
        let dst = *(&details.addrs)
            .into_iter()
            .next()
            .ok_or(ureq::Error::HostNotFound)?;
        let wait = details.timeout.not_zero().map_or(Duration::MAX, |t| *t);
        let stream = connect_from(self.src, dst, wait).map_err(|e| io_error(e, details.timeout))?;
        stream.set_nodelay(true)?;
        let config = details.config;
        Ok(Some(BoundTcp {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
        }))
    }
}

/// A connected socket and ureq's buffers for it.
#[derive(Debug)]
struct BoundTcp {
    stream: TcpStream,
    buffers: LazyBuffers,
}

impl Transport for BoundTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))?;
        let n = self
            .stream
            .read(self.buffers.input_append_buf())
            .map_err(|e| io_error(e, timeout))?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// Never reused: the agents keep no idle connections.
    fn is_open(&mut self) -> bool {
        false
    }
}

/// A socket error as ureq's: a timed-out wait becomes the timeout ureq was waiting on.
fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// A loopback server that answers one request with `response` and returns what it
    /// read and the peer's address.
    fn serve_once(
        response: &'static str,
    ) -> (SocketAddr, std::thread::JoinHandle<(String, SocketAddr)>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, peer) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "request cut short: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(response.as_bytes()).unwrap();
            (String::from_utf8(got).unwrap(), peer)
        });
        (addr, h)
    }

    const T: Timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(5),
    };

    #[test]
    fn requests_leave_from_the_source_address_and_statuses_are_answers() {
        // 127.0.0.2 is a loopback address too: the server sees it as the peer.
        let src: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
        let (addr, server) = serve_once(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"error\":\"x\"}",
        );
        let headers = [("X-Callback-Url".to_owned(), "http://h/1".to_owned())];
        let got = call(src, T, "POST", &format!("http://{addr}/v1/deep"), &headers).unwrap();
        assert_eq!(got, (429, "{\"error\":\"x\"}".to_owned()));
        let (request, peer) = server.join().unwrap();
        assert_eq!(peer.ip(), src);
        assert!(
            request.starts_with("POST /v1/deep HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("x-callback-url: http://h/1\r\n"),
            "{request}"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        let got = call(
            Ipv4Addr::LOCALHOST.into(),
            T,
            "GET",
            &format!("http://{addr}/"),
            &[],
        );
        assert_eq!(got.unwrap(), (200, "abcde".to_owned()));
        assert!(server.join().unwrap().0.starts_with("GET / HTTP/1.1\r\n"));
    }

    /// The client's own cost against a hand-written request to the same loopback server
    /// (run by hand: `cargo test -p xtask --lib client_overhead -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn client_overhead_against_a_raw_request() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut c in l.incoming().map_while(Result::ok) {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
            }
        });
        let src: IpAddr = Ipv4Addr::LOCALHOST.into();
        let url = format!("http://{addr}/v1/deep");
        let per_request = |f: &dyn Fn()| {
            let t0 = std::time::Instant::now();
            for _ in 0..500 {
                f();
            }
            t0.elapsed() / 500
        };
        for _ in 0..3 {
            let ureq = per_request(&|| assert_eq!(call(src, T, "GET", &url, &[]).unwrap().0, 200));
            let raw = per_request(&|| {
                let mut s = connect_from(src, addr, T.connect).unwrap();
                s.write_all(b"GET /v1/deep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).unwrap();
                assert!(out.starts_with(b"HTTP/1.1 200"));
            });
            eprintln!(
                "per request: ureq {ureq:?}, raw {raw:?} ({:.2}x)",
                ureq.as_secs_f64() / raw.as_secs_f64()
            );
        }
    }
}
