//! `xtask lab serve`: the listener process `Lab::up` starts inside the target namespace. Binds every open port of the truth and accepts forever.
//!
//! It is not a server: every accepted connection is closed at once. A SYN scanner only needs
//! the kernel's SYN-ACK; accepting keeps full connects (tests, connect scans) from filling the
//! queue. One blocking thread per listener keeps CPU at zero when idle.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use super::truth::Truth;

/// Listen backlog of every listener (the target namespace's somaxconn is raised to match).
const BACKLOG: i32 = 65535;

/// The line written to stdout once every listener is bound.
pub(crate) const READY: &str = "ready";

/// Addresses to bind: per family, ports open on every host of that family get one wildcard
/// listener; the rest get a listener on the host's own address.
pub(crate) fn plan(truth: &Truth) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (v4, wildcard) in [
        (true, IpAddr::from(Ipv4Addr::UNSPECIFIED)),
        (false, IpAddr::from(Ipv6Addr::UNSPECIFIED)),
    ] {
        let hosts: Vec<_> = truth
            .hosts
            .iter()
            .filter(|h| h.addr.is_ipv4() == v4)
            .collect();
        let Some(first) = hosts.first() else { continue };
        let common: BTreeSet<u16> = first
            .open
            .iter()
            .copied()
            .filter(|p| hosts.iter().all(|h| h.open.binary_search(p).is_ok()))
            .collect();
        out.extend(common.iter().map(|&p| SocketAddr::new(wildcard, p)));
        for h in &hosts {
            let own = h.open.iter().filter(|p| !common.contains(p));
            out.extend(own.map(|&p| SocketAddr::new(h.addr, p)));
        }
    }
    out
}

/// Bind `addr`. Binding a v6 address that is only covered by a `local` route (AnyIP) fails
/// with EADDRNOTAVAIL, unlike v4, so such binds are retried with IPV6_FREEBIND.
/// Returns the listener and whether FREEBIND was needed.
fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, bool)> {
    let open = |freebind: bool| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
            if freebind {
                socket.set_freebind_ipv6(true)?;
            }
        } else if freebind {
            socket.set_freebind(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket)
    };
    let wildcard = addr.ip().is_unspecified();
    let (socket, freebind) = match open(false) {
        Ok(s) => (s, false),
        Err(e) if !wildcard && e.kind() == std::io::ErrorKind::AddrNotAvailable => (
            open(true).with_context(|| format!("binding {addr} with FREEBIND"))?,
            true,
        ),
        Err(e) => return Err(e).with_context(|| format!("binding {addr}")),
    };
    Ok((socket.into(), freebind))
}

/// Run the listener: never returns unless binding fails.
pub fn run(truth_path: &Path) -> anyhow::Result<()> {
    let truth = Truth::load_from(truth_path)?;
    let addrs = plan(&truth);
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut freebinds = 0;
    for &addr in &addrs {
        let (listener, freebind) = bind(addr)?;
        freebinds += usize::from(freebind);
        listeners.push((addr, listener));
    }
    for (addr, listener) in listeners {
        std::thread::Builder::new()
            .name(format!("accept {addr}"))
            .stack_size(64 * 1024)
            .spawn(move || accept_forever(&listener))
            .with_context(|| format!("spawning the accept thread for {addr}"))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "lab {}: {} listeners ({} needed FREEBIND)\n{READY}",
        truth.lab,
        addrs.len(),
        freebinds
    )?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}

fn accept_forever(listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => drop(stream),
            // EMFILE and friends: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::truth::BASE_OPEN;

    #[test]
    fn plan_uses_wildcards_for_common_ports() {
        let plan = plan(&Truth::compute("x", 2));
        assert_eq!(plan.len(), 2 * BASE_OPEN.len() + 4);
        assert!(plan.contains(&"0.0.0.0:22".parse().unwrap()));
        assert!(plan.contains(&"[::]:65535".parse().unwrap()));
        assert!(plan.contains(&"198.19.0.2:20002".parse().unwrap()));
        assert!(plan.contains(&"[2001:2:0:1::1]:20001".parse().unwrap()));
    }
}
