//! Which `X-Callback-Url` webhook URLs and addresses are acceptable (no DNS here: the API
//! resolves a name and passes its addresses to [`CallbackRules::check_addrs`]).
//!
//! A callback must be `http`/`https` with a host and a port, and every address it
//! connects to must be public (the engine's default-deny target policy, and for IPv6 the
//! global unicast space) or in a range the operator allowed (`allow-callback`).

use crate::netaddr::{normalise, CidrSet};
use portscope_core::policy::TargetPolicy;
use std::net::{IpAddr, SocketAddr};
pub use url::Url;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Which callback destinations are acceptable.
#[derive(Debug, Clone)]
pub struct CallbackRules {
    /// Explicitly allowed ranges (lab, tests).
    allow: CidrSet,
    /// Public = not denied by the default target policy.
    deny: TargetPolicy,
}

/// Why a callback URL is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Malformed, wrong scheme, no host: permanent.
    #[error("{0}")]
    Invalid(String),
    /// Resolves to a non-public, non-allowed address: permanent.
    #[error("{0}")]
    NotPublic(String),
    /// The host did not resolve (may be transient).
    #[error("{0}")]
    Resolve(String),
}

impl CallbackRules {
    /// Public addresses plus `allow`.
    pub fn new(allow: CidrSet) -> Self {
        CallbackRules {
            allow,
            deny: TargetPolicy::default_deny(),
        }
    }

    /// Whether a callback may connect to `ip`: an allowed range, or else an address the
    /// engine's special-purpose table (`portscope_core::policy::DEFAULT_DENY`, the IANA
    /// registries of both families) does not deny and that, for IPv6, lies in the global
    /// unicast space 2000::/3 (the IANA IPv6 address-space registry reserves the rest,
    /// e.g. the deprecated IPv4-compatible `::a.b.c.d`).
    pub fn permitted(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        self.allow.contains(ip) || (global_unicast(ip) && self.deny.permits(ip).is_ok())
    }

    /// The syntactic half of the check (no DNS): length, URL syntax, scheme, host and port.
    pub fn parse(raw: &str) -> Result<Url, CallbackError> {
        use CallbackError::Invalid;
        if raw.len() > MAX_URL_LEN {
            return Err(Invalid(format!(
                "callback URL longer than {MAX_URL_LEN} bytes"
            )));
        }
        let url = Url::parse(raw)
            .map_err(|e| Invalid(format!("callback URL is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid("callback URL must be http or https".into()));
        }
        if url.host_str().is_none() {
            return Err(Invalid("callback URL has no host".into()));
        }
        if url.port_or_known_default().is_none() {
            return Err(Invalid("callback URL has no port".into()));
        }
        Ok(url)
    }

    /// The address of a URL whose host is an IP literal (checked without DNS).
    pub fn literal(url: &Url) -> Option<IpAddr> {
        let host = url.host_str()?;
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// Checks every address `host` resolved to (or its literal address); returns the first.
    pub fn check_addrs(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<SocketAddr, CallbackError> {
        let first = *addrs.first().ok_or_else(|| {
            CallbackError::Resolve(format!("callback host {host} has no addresses"))
        })?;
        if let Some(bad) = addrs.iter().find(|a| !self.permitted(a.ip())) {
            return Err(CallbackError::NotPublic(format!(
                "callback host {host} resolves to {}, which is not a public address",
                bad.ip()
            )));
        }
        Ok(first)
    }
}

/// IPv4 (the table decides), or IPv6 inside 2000::/3.
fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.segments()[0] & 0xe000 == 0x2000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::targets::parse_net;

    fn check(rules: &CallbackRules, raw: &str) -> Result<SocketAddr, CallbackError> {
        let url = CallbackRules::parse(raw)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let ip = CallbackRules::literal(&url).expect("the test uses IP literals");
        let port = url.port_or_known_default().expect("parse checked the port");
        rules.check_addrs(&host, &[SocketAddr::new(ip, port)])
    }

    #[test]
    fn only_public_or_allowed_http_urls() {
        let p = CallbackRules::new(CidrSet::default());
        for bad in [
            "ftp://93.184.216.34/x",
            "http://127.0.0.1/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest",
            // IPv4-compatible (::/96), NAT64 and 6to4 forms of loopback; reserved ::/8.
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[::1:2:3]/",
            "http://[4000::1]/",
            "not a url",
        ] {
            assert!(check(&p, bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(
            check(&p, "https://93.184.216.34/hook").unwrap(),
            "93.184.216.34:443".parse().unwrap()
        );
        assert!(check(&p, "http://[2606:4700::1111]/hook").is_ok());
        let lab = CallbackRules::new(CidrSet::new([parse_net("127.0.0.0/8").unwrap()]));
        assert!(check(&lab, "http://127.0.0.1:9/hook").is_ok());
        assert!(check(&lab, "http://[::1]:9/hook").is_err());
        assert_eq!(
            p.check_addrs("x.test", &[]),
            Err(CallbackError::Resolve(
                "callback host x.test has no addresses".into()
            ))
        );
        assert_eq!(
            check(&p, "http://10.0.0.1/hook"),
            Err(CallbackError::NotPublic(
                "callback host 10.0.0.1 resolves to 10.0.0.1, which is not a public address".into()
            ))
        );
    }
}
