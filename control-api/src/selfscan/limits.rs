//! The self-scan limits of the seed's table (fast: per ASN; deep: per IP and per ASN),
//! checked and counted for new scans only (a coalesced POST is not counted), and given
//! back when the engine refuses the scan.

use super::ScanService;
use crate::http::error::ApiError;
use crate::model::ScanType;
use crate::ratelimit::{FixedWindow, Window};
use std::net::IpAddr;

impl ScanService {
    /// Takes back what [`Self::check_limits`] counted, for a scan the engine refused: the
    /// requester may try again (after `Retry-After`) without waiting out a scan limit.
    pub(super) async fn refund_limits(&self, ip: IpAddr, t: ScanType) {
        let l = &self.deps.limits;
        let group = self.deps.asn.group(ip);
        match t {
            ScanType::Fast => l.fast_asn.unhit(&group).await,
            ScanType::Deep => {
                l.deep_ip.unhit(&ip.to_string()).await;
                l.deep_asn.unhit(&group).await;
            }
        }
    }

    /// Checks and counts the per-type limits of a new scan (not for coalesced POSTs), at
    /// once across every API node on one PostgreSQL.
    pub(super) async fn check_limits(&self, ip: IpAddr, t: ScanType) -> Result<(), ApiError> {
        let now = self.deps.clock.now_secs();
        let l = &self.deps.limits;
        let group = self.deps.asn.group(ip);
        let ip_key = ip.to_string();
        let checks: Vec<(&FixedWindow, &str, &str)> = match t {
            ScanType::Fast => vec![(
                &l.fast_asn,
                group.as_str(),
                "2000 fast scans per network (ASN) per hour",
            )],
            ScanType::Deep => vec![
                (
                    &l.deep_ip,
                    ip_key.as_str(),
                    "1 deep scan per IP per 5 minutes",
                ),
                (
                    &l.deep_asn,
                    group.as_str(),
                    "200 deep scans per network (ASN) per hour",
                ),
            ],
        };
        // Count first, then give back: each hit is one atomic check-and-count (one upsert
        // on PostgreSQL), so two API nodes can never both pass a limit's last slot, as a
        // peek on each followed by a hit on each could. A refused hit counts nothing; the
        // hits a refusal makes void are taken back. (At a limit's edge a request may
        // briefly hold a slot it gives back, so a concurrent one may be refused: the limits
        // err towards refusing, never towards admitting more than they say.)
        let mut over: Vec<(Window, &str)> = Vec::new();
        let mut counted: Vec<(&FixedWindow, &str)> = Vec::new();
        for (lim, key, what) in checks {
            let w = lim.hit(key, now).await;
            if w.allowed {
                counted.push((lim, key));
            } else {
                over.push((w, what));
            }
        }
        if let Some(retry_after) = over.iter().map(|(w, _)| w.retry_after(now)).max() {
            for (lim, key) in counted {
                lim.unhit(key).await;
            }
            let what: Vec<&str> = over.iter().map(|(_, w)| *w).collect();
            return Err(ApiError::RateLimited {
                retry_after,
                message: format!("rate limit reached: {}", what.join("; ")),
            });
        }
        Ok(())
    }
}
