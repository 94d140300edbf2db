//! `X-Callback-Url` webhooks: which URLs are acceptable, and delivery with retries.
//!
//! A callback must be `http`/`https` and its host must resolve only to public addresses
//! (the engine's default-deny target policy) or to ranges the operator allowed
//! (`allow-callback`). The check runs before the scan is queued (422 `invalid_callback`)
//! and again at every delivery attempt, and the request is pinned to the address that was
//! checked, so a DNS answer that changes in between (rebinding) cannot redirect it.
//! Redirects are not followed and environment proxies are ignored.
//!
//! Every delivery carries a stable id in [`DELIVERY_HEADER`], the same on every attempt and
//! after a restart resumes it (deliveries are at-least-once), so receivers can dedupe.

use crate::netaddr::CidrSet;
pub use portscope_input::callback::{CallbackError, MAX_URL_LEN};
use portscope_input::callback::{CallbackRules, Url};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Which callback destinations are acceptable: the pure rules of
/// [`portscope_input::callback`] plus DNS resolution with a deadline.
#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    /// Scheme, host, port and address rules.
    rules: CallbackRules,
    /// DNS resolution deadline.
    resolve_timeout: Duration,
}

/// Where to send a callback: the URL and the checked address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL.
    pub url: Url,
    /// The host name, if the URL has one (not an IP literal).
    pub domain: Option<String>,
    /// The checked address.
    pub addr: SocketAddr,
}

impl CallbackPolicy {
    /// Public addresses plus `allow`.
    pub fn new(allow: CidrSet) -> Self {
        CallbackPolicy {
            rules: CallbackRules::new(allow),
            resolve_timeout: Duration::from_secs(3),
        }
    }

    /// Whether a callback may connect to `ip` ([`CallbackRules::permitted`]).
    pub fn permitted(&self, ip: IpAddr) -> bool {
        self.rules.permitted(ip)
    }

    /// Parses and checks a URL; the message says what is wrong.
    pub async fn check(&self, raw: &str) -> Result<Destination, CallbackError> {
        self.resolve(Self::parse(raw)?).await
    }

    /// The syntactic half of [`CallbackPolicy::check`] (no DNS): length, URL syntax,
    /// scheme, host and port.
    pub fn parse(raw: &str) -> Result<Url, CallbackError> {
        CallbackRules::parse(raw)
    }

    /// The address of a URL whose host is an IP literal (checked without DNS).
    pub fn literal(url: &Url) -> Option<IpAddr> {
        CallbackRules::literal(url)
    }

    /// Resolves the URL's host and checks every address; returns the first.
    pub async fn resolve(&self, url: Url) -> Result<Destination, CallbackError> {
        use CallbackError::{Invalid, Resolve};
        let host = url
            .host_str()
            .ok_or_else(|| Invalid("callback URL has no host".into()))?
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Invalid("callback URL has no port".into()))?;
        let (domain, addrs): (Option<String>, Vec<SocketAddr>) = match Self::literal(&url) {
            Some(ip) => (None, vec![SocketAddr::new(ip, port)]),
            None => {
                let found = tokio::time::timeout(
                    self.resolve_timeout,
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .await
                .map_err(|_| Resolve(format!("callback host {host} did not resolve in time")))?
                .map_err(|e| Resolve(format!("callback host {host} does not resolve: {e}")))?;
                (Some(host.clone()), found.collect())
            }
        };
        let addr = self.rules.check_addrs(&host, &addrs)?;
        Ok(Destination { url, domain, addr })
    }
}

/// The header carrying a delivery's id.
pub const DELIVERY_HEADER: &str = "x-portscope-delivery";

/// The id of the delivery of `subject` (a scan id) of `kind` (`callback`, `monitor`) to
/// `url`: derived, not stored, so a delivery resumed after a crash (on any node) has the
/// same id. `dlv_` and 32 hex digits of SHA-256.
pub fn delivery_id(kind: &str, subject: &str, url: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{kind}\n{subject}\n{url}").as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("dlv_{hex}")
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Destination checks.
    pub policy: CallbackPolicy,
    /// Attempts per callback.
    pub attempts: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Delay before the second attempt; doubles after each.
    pub backoff: Duration,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Whether a 2xx answer came back.
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
}

impl Webhooks {
    /// POSTs `body` (JSON) to `url` as delivery `id` ([`delivery_id`]), retrying failures
    /// with backoff. `on_retry` is called before each retry (for metrics).
    pub async fn deliver(
        &self,
        url: &str,
        body: &[u8],
        id: &str,
        mut on_retry: impl FnMut(),
    ) -> Delivery {
        let mut delay = self.backoff;
        let mut attempts = 0;
        for attempt in 1..=self.attempts.max(1) {
            attempts = attempt;
            if attempt > 1 {
                on_retry();
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let dest = match self.policy.check(url).await {
                Ok(d) => d,
                Err(why) => {
                    tracing::warn!(%url, %why, "callback refused at delivery");
                    if matches!(why, CallbackError::Resolve(_)) {
                        continue;
                    }
                    break;
                }
            };
            match self.post(&dest, body, id).await {
                Ok(status) if status.is_success() => {
                    return Delivery {
                        delivered: true,
                        attempts,
                    }
                }
                Ok(status) => tracing::warn!(%url, %status, attempt, "callback answered an error"),
                Err(e) => tracing::warn!(%url, error = %e, attempt, "callback failed"),
            }
        }
        Delivery {
            delivered: false,
            attempts,
        }
    }

    async fn post(
        &self,
        dest: &Destination,
        body: &[u8],
        id: &str,
    ) -> Result<reqwest::StatusCode, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .user_agent(concat!("portscope-api/", env!("CARGO_PKG_VERSION")));
        if let Some(domain) = &dest.domain {
            b = b.resolve(domain, dest.addr);
        }
        let client = b.build()?;
        let resp = client
            .post(dest.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, id)
            .body(body.to_vec())
            .send()
            .await?;
        Ok(resp.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::targets::parse_net;

    #[tokio::test]
    async fn only_public_or_allowed_http_urls() {
        let p = CallbackPolicy::new(CidrSet::default());
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
            assert!(p.check(bad).await.is_err(), "{bad} must be refused");
        }
        // IP literals resolve without DNS.
        let ok = p.check("https://93.184.216.34/hook").await.unwrap();
        assert!(p.check("http://[2606:4700::1111]/hook").await.is_ok());
        assert_eq!(ok.addr, "93.184.216.34:443".parse().unwrap());
        let lab = CallbackPolicy::new(CidrSet::new([parse_net("127.0.0.0/8").unwrap()]));
        assert!(lab.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(lab.check("http://[::1]:9/hook").await.is_err());
    }
}
