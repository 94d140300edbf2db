//! `xtask lab probe`: plain TCP connects, classified like a SYN scan would see them. Used to check a lab from inside its scanner namespace.
//!
//! Not a scanner: one blocking connect per address, in order. It exists so that tests and
//! `Lab::up` can check reachability without python, ping or bash's /dev/tcp.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::truth::Expected;

/// What a connect got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (SYN-ACK).
    Open,
    /// ECONNREFUSED (RST).
    Refused,
    /// No answer before the timeout.
    Timeout,
    /// An ICMP error: EHOSTUNREACH, ENETUNREACH or EACCES (ICMPv6 administratively prohibited).
    Unreachable,
    /// Anything else (the lab is broken).
    Error,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Error => "error",
        }
    }

    fn from_word(word: &str) -> Option<Outcome> {
        [
            Outcome::Open,
            Outcome::Refused,
            Outcome::Timeout,
            Outcome::Unreachable,
            Outcome::Error,
        ]
        .into_iter()
        .find(|o| o.word() == word)
    }

    /// The truth state this outcome shows, if any.
    pub fn as_expected(self) -> Option<Expected> {
        match self {
            Outcome::Open => Some(Expected::Open),
            Outcome::Refused => Some(Expected::Closed),
            Outcome::Timeout => Some(Expected::FilteredSilent),
            Outcome::Unreachable => Some(Expected::FilteredIcmp),
            Outcome::Error => None,
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub addr: SocketAddr,
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The OS error text, empty when connected.
    pub detail: String,
}

impl ProbeResult {
    /// One line: `ADDR OUTCOME MICROS DETAIL`.
    pub(crate) fn to_line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.addr,
            self.outcome.word(),
            self.elapsed.as_micros(),
            self.detail
        )
    }

    pub(crate) fn parse_line(line: &str) -> Option<ProbeResult> {
        let mut parts = line.splitn(4, ' ');
        let addr = parts.next()?.parse().ok()?;
        let outcome = Outcome::from_word(parts.next()?)?;
        let elapsed = Duration::from_micros(parts.next()?.parse().ok()?);
        let detail = parts.next().unwrap_or("").to_owned();
        Some(ProbeResult {
            addr,
            outcome,
            elapsed,
            detail,
        })
    }
}

/// Connect to `addr` once.
///
/// An ICMP error that reaches the socket while `connect()` still holds its lock only becomes
/// a soft error (the kernel counts it as TcpExtLockDroppedIcmps); on a veth that is the rule for
/// ICMPv6. So a timeout that left a soft error behind (SO_ERROR) is `Unreachable`, not `Timeout`.
pub fn probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let result = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .and_then(
            |socket| match socket.connect_timeout(&addr.into(), timeout) {
                Err(e) if is_timeout(&e) => match socket.take_error() {
                    Ok(Some(soft)) => Err(soft),
                    _ => Err(e),
                },
                other => other,
            },
        );
    let elapsed = start.elapsed();
    let (outcome, detail) = match result {
        Ok(()) => (Outcome::Open, String::new()),
        Err(e) => {
            let outcome = match e.kind() {
                ErrorKind::ConnectionRefused => Outcome::Refused,
                _ if is_timeout(&e) => Outcome::Timeout,
                ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::PermissionDenied => Outcome::Unreachable,
                _ => Outcome::Error,
            };
            (outcome, e.to_string())
        }
    };
    ProbeResult {
        addr,
        outcome,
        elapsed,
        detail,
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trip() {
        let r = ProbeResult {
            addr: "[2001:2::2]:23".parse().unwrap(),
            outcome: Outcome::Unreachable,
            elapsed: Duration::from_micros(812),
            detail: "Permission denied (os error 13)".into(),
        };
        assert_eq!(ProbeResult::parse_line(&r.to_line()), Some(r));
    }

    #[test]
    fn loopback_refused_and_open() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(probe(addr, Duration::from_secs(2)).outcome, Outcome::Open);
        drop(listener);
        assert_eq!(
            probe(addr, Duration::from_secs(2)).outcome,
            Outcome::Refused
        );
    }
}
