//! Alerts of a completed managed scan: ports open now and not in the previous complete
//! scan of the same token and target, ports open then and not now, changed banners, over
//! the (host, port) pairs both scans probed only.

use super::findings::{self, OpenPort, Severity};
use super::random_hex;
use super::service::ManagedService;
use super::store::{AlertRow, MScanRow};
use ipnet::IpNet;
use portscope_core::results::PortState;
use portscope_core::targets::PortSet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What an alert says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A port open now and not before.
    NewOpenPort,
    /// A port open before and not now.
    PortClosed,
    /// Both open, two different banners.
    BannerChanged,
}

impl AlertKind {
    /// `new_open_port`, `port_closed`, `banner_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NewOpenPort => "new_open_port",
            AlertKind::PortClosed => "port_closed",
            AlertKind::BannerChanged => "banner_changed",
        }
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<AlertKind> {
        [
            AlertKind::NewOpenPort,
            AlertKind::PortClosed,
            AlertKind::BannerChanged,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// New.
    Open,
    /// Seen.
    Acknowledged,
    /// Dealt with.
    Resolved,
}

impl AlertStatus {
    /// Every status.
    pub const ALL: [AlertStatus; 3] = [
        AlertStatus::Open,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ];

    /// `open`, `acknowledged`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The (host, port) pairs a scan probed: its ports on its addresses.
#[derive(Debug)]
struct Coverage(Vec<(Vec<IpNet>, PortSet)>);

impl Coverage {
    fn of(row: &MScanRow) -> Coverage {
        let nets = row
            .addresses
            .split(',')
            .filter_map(|a| {
                a.parse::<IpNet>()
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        // An unparsable spec covers nothing: no alert rather than a false one.
        let ports = PortSet::parse(&row.ports).unwrap_or_else(|_| PortSet::from_ports([]));
        Coverage(vec![(nets, ports)])
    }

    /// Covered by both.
    fn and(mut self, other: Coverage) -> Coverage {
        self.0.extend(other.0);
        self
    }

    fn covers(&self, host: &str, port: u16) -> bool {
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let ip = crate::netaddr::normalise(ip);
        self.0.iter().all(|(nets, ports)| {
            ports.index_of(port).is_some() && nets.iter().any(|n| n.contains(&ip))
        })
    }
}

impl ManagedService {
    /// Alerts: ports open now but not in the previous complete scan of the same target,
    /// ports open then but not now, and changed banners. No previous scan, no alerts.
    pub(super) async fn diff(
        &self,
        row: &MScanRow,
        open: &[OpenPort],
    ) -> Result<Vec<AlertRow>, sqlx::Error> {
        let store = &self.deps().store;
        let Some(prev) = store
            .previous_complete(&row.token_id, &row.target, row.created_at_ms)
            .await?
        else {
            return Ok(Vec::new());
        };
        // Only what both scans probed is compared: a fast scan after a deep one says
        // nothing about the ports it did not probe.
        let covered = Coverage::of(&prev).and(Coverage::of(row));
        let before: BTreeMap<(String, u16), Option<String>> = store
            .ports(&prev.id)
            .await?
            .into_iter()
            .filter(|p| p.state == PortState::Open.as_str())
            .map(|p| ((p.host, u16::try_from(p.port).unwrap_or(0)), p.banner))
            .filter(|((h, port), _)| covered.covers(h, *port))
            .collect();
        let now: BTreeMap<(String, u16), Option<String>> = open
            .iter()
            .map(|p| ((p.host.clone(), p.port), p.banner.clone()))
            .filter(|((h, port), _)| covered.covers(h, *port))
            .collect();
        let at = self.now_secs();
        let mk = |host: &str, port: u16, kind: AlertKind, sev: Severity, msg: String, old, new| {
            AlertRow {
                id: format!("al-{}", random_hex(12)),
                token_id: row.token_id.clone(),
                scan_id: row.id.clone(),
                target_id: row.target_id.clone(),
                target: row.target.clone(),
                host: host.to_string(),
                port: i64::from(port),
                kind,
                severity: sev.as_str().to_string(),
                message: msg,
                old_value: old,
                new_value: new,
                status: AlertStatus::Open,
                created_at: at,
                acknowledged_at: None,
                resolved_at: None,
                notified: 0,
            }
        };
        let mut out = Vec::new();
        for ((host, port), banner) in &now {
            match before.get(&(host.clone(), *port)) {
                None => {
                    let sev = findings::new_port_severity(*port);
                    out.push(mk(
                        host,
                        *port,
                        AlertKind::NewOpenPort,
                        sev,
                        format!("port {port}/tcp is newly open on {host}"),
                        Some(PortState::Closed.as_str().into()),
                        Some(PortState::Open.as_str().into()),
                    ));
                }
                Some(old) => {
                    if let (Some(o), Some(n)) = (old, banner) {
                        if o != n {
                            out.push(mk(
                                host,
                                *port,
                                AlertKind::BannerChanged,
                                Severity::Low,
                                format!("the banner of {host}:{port}/tcp changed"),
                                Some(o.clone()),
                                Some(n.clone()),
                            ));
                        }
                    }
                }
            }
        }
        for (host, port) in before.keys() {
            if !now.contains_key(&(host.clone(), *port)) {
                out.push(mk(
                    host,
                    *port,
                    AlertKind::PortClosed,
                    Severity::Info,
                    format!("port {port}/tcp is no longer open on {host}"),
                    Some(PortState::Open.as_str().into()),
                    Some("not open".into()),
                ));
            }
        }
        Ok(out)
    }
}
