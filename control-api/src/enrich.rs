//! What a finished scan is enriched with: banners from ordinary (unprivileged) TCP
//! connects to its open ports, and the PTR name of its address. Both behind traits so
//! tests never touch the network.
//!
//! Banner rules: connect and read within one short deadline (1.5 s by default), at most
//! 256 bytes, stop early once the peer pauses after sending something; trailing CR/LF are
//! dropped, printable ASCII is kept and every other byte (and `\`) becomes `\xNN`; a
//! service that sends nothing has no banner (null). Connects run with bounded concurrency.

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

/// Grabs service banners.
#[async_trait]
pub trait BannerGrabber: Send + Sync + fmt::Debug + 'static {
    /// Banners of those of `ports` on `ip` that sent one.
    async fn grab(&self, ip: IpAddr, ports: &[u16]) -> HashMap<u16, String>;
}

/// Looks up PTR names.
#[async_trait]
pub trait PtrResolver: Send + Sync + fmt::Debug + 'static {
    /// The PTR name of `ip` without the trailing dot, or `None`.
    async fn ptr(&self, ip: IpAddr) -> Option<String>;
}

/// Grabs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBanners;

#[async_trait]
impl BannerGrabber for NoBanners {
    async fn grab(&self, _ip: IpAddr, _ports: &[u16]) -> HashMap<u16, String> {
        HashMap::new()
    }
}

/// Resolves nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPtr;

#[async_trait]
impl PtrResolver for NoPtr {
    async fn ptr(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// Banners by plain TCP connects.
#[derive(Debug, Clone)]
pub struct TcpBanners {
    /// Deadline per port for connect and read.
    pub timeout: Duration,
    /// Bytes read at most.
    pub max_bytes: usize,
    /// Connects in flight at most.
    pub concurrency: usize,
    /// Ports grabbed at most per scan (the lowest open ones).
    pub max_ports: usize,
}

impl Default for TcpBanners {
    fn default() -> Self {
        TcpBanners {
            timeout: Duration::from_millis(1500),
            max_bytes: 256,
            concurrency: 16,
            max_ports: 64,
        }
    }
}

/// After the first bytes, how long to wait for more before calling the banner done.
const PAUSE: Duration = Duration::from_millis(200);

impl TcpBanners {
    /// The banner of one port, if it sent one.
    pub async fn grab_one(&self, addr: SocketAddr) -> Option<String> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; self.max_bytes];
        let mut len = 0;
        while len < self.max_bytes {
            let until = if len == 0 {
                deadline
            } else {
                deadline.min(Instant::now() + PAUSE)
            };
            match timeout_at(until, stream.read(&mut buf[len..])).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => len += n,
            }
        }
        escape_banner(&buf[..len])
    }
}

#[async_trait]
impl BannerGrabber for TcpBanners {
    async fn grab(&self, ip: IpAddr, ports: &[u16]) -> HashMap<u16, String> {
        let limit = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut set = JoinSet::new();
        for &port in ports.iter().take(self.max_ports) {
            let me = self.clone();
            let limit = limit.clone();
            set.spawn(async move {
                let _permit = limit.acquire_owned().await.ok()?;
                me.grab_one(SocketAddr::new(ip, port))
                    .await
                    .map(|b| (port, b))
            });
        }
        let mut out = HashMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some((port, banner))) = r {
                out.insert(port, banner);
            }
        }
        out
    }
}

/// Printable ASCII kept, the rest as `\xNN`; trailing CR/LF dropped; `None` when empty.
pub fn escape_banner(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    if bytes.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    Some(s)
}

/// PTR lookups through hickory with the system's resolver configuration.
#[derive(Debug, Clone)]
pub struct HickoryPtr {
    resolver: TokioResolver,
    timeout: Duration,
}

impl HickoryPtr {
    /// Reads `/etc/resolv.conf`; one attempt per query within `timeout`.
    pub fn from_system(timeout_after: Duration) -> Result<Self, String> {
        let mut b = TokioResolver::builder_tokio().map_err(|e| e.to_string())?;
        b.options_mut().timeout = timeout_after;
        b.options_mut().attempts = 1;
        Ok(HickoryPtr {
            resolver: b.build(),
            timeout: timeout_after,
        })
    }
}

#[async_trait]
impl PtrResolver for HickoryPtr {
    async fn ptr(&self, ip: IpAddr) -> Option<String> {
        let lookup = timeout(self.timeout, self.resolver.reverse_lookup(ip))
            .await
            .ok()?
            .ok()?;
        let name = lookup.iter().next()?.to_string();
        let name = name.trim_end_matches('.');
        (!name.is_empty()).then(|| name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn banners_are_escaped() {
        assert_eq!(escape_banner(b""), None);
        assert_eq!(escape_banner(b"\r\n"), None);
        assert_eq!(
            escape_banner(b"SSH-2.0-OpenSSH_9.6\r\n").as_deref(),
            Some("SSH-2.0-OpenSSH_9.6")
        );
        assert_eq!(
            escape_banner(b"220 a\tb\\\xff\r\nx").as_deref(),
            Some("220 a\\x09b\\x5c\\xff\\x0d\\x0ax")
        );
    }

    #[tokio::test]
    async fn grabs_from_a_loopback_listener_and_null_for_silence() {
        let talker = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tp, sp) = (
            talker.local_addr().unwrap().port(),
            silent.local_addr().unwrap().port(),
        );
        tokio::spawn(async move {
            let (mut s, _) = talker.accept().await.unwrap();
            s.write_all(b"220 lab ESMTP\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        tokio::spawn(async move {
            let (_s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let g = TcpBanners {
            timeout: Duration::from_millis(500),
            ..TcpBanners::default()
        };
        let got = g.grab(IpAddr::from([127, 0, 0, 1]), &[tp, sp]).await;
        assert_eq!(got.get(&tp).map(String::as_str), Some("220 lab ESMTP"));
        assert!(!got.contains_key(&sp));
    }
}
