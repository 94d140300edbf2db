//! The managed finisher: grades every live managed scan whose job scan completed (all
//! chunks committed): banners, alerts against the previous scan, the grade, then
//! `complete` with its alerts in one transaction (`MStore::complete`), and only the call
//! that made the row final notifies (its monitor webhook and e-mail are delivery jobs
//! queued by that transaction).
//! Woken by this process's worker after each commit and, on PostgreSQL, by every other
//! process's commit (`store::notify`); every `finisher-poll-ms` it also looks on its own
//! (another process's commits on SQLite, a lost notification). Exactly once across API
//! nodes: `complete` changes a live row once, and the loser of a race changes nothing and
//! notifies nobody.

use super::alerts::AlertKind;
use super::findings::{self, OpenPort};
use super::service::{ManagedService, BANNER_HOSTS};
use crate::store::managed::Completion;
use crate::util::lock;
use portscope_core::results::PortState;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

impl ManagedService {
    /// The finisher loop (a background task of the service).
    pub(super) async fn run_finisher(self: Arc<Self>) {
        crate::jobs::every_change(&self.changed, self.finisher_poll(), || self.finish_pass()).await;
    }

    /// One pass: finishes every live scan whose chunks are all committed.
    pub async fn finish_pass(self: &Arc<Self>) {
        let rows = match self.deps().store.engine_complete().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot list completed managed scans");
                return;
            }
        };
        for r in rows {
            if !lock(&self.busy).insert(r.id.clone()) {
                continue;
            }
            let me = self.clone();
            self.spawn(async move {
                if let Err(e) = me.finish_scan(&r.id).await {
                    tracing::error!(error = %e, id = %r.id, "cannot complete managed scan");
                }
                lock(&me.busy).remove(&r.id);
            });
        }
    }

    /// Banners, grade, `complete`, alerts against the previous scan, monitors.
    pub(super) async fn finish_scan(self: &Arc<Self>, id: &str) -> Result<(), sqlx::Error> {
        let store = &self.deps().store;
        let Some(row) = store.scan(id).await? else {
            return Ok(());
        };
        if !row.is_live() {
            return Ok(());
        }
        let ports = store.ports(id).await?;
        let mut by_host: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for p in ports.iter().filter(|p| p.state == PortState::Open.as_str()) {
            by_host
                .entry(p.host.clone())
                .or_default()
                .push(u16::try_from(p.port).unwrap_or(0));
        }
        let mut banners = Vec::new();
        for (host, open) in by_host.iter().take(BANNER_HOSTS) {
            let Ok(ip) = host.parse::<IpAddr>() else {
                continue;
            };
            let mut got: Vec<(u16, String)> = self
                .deps()
                .banners
                .grab(ip, open)
                .await
                .into_iter()
                .collect();
            got.sort_unstable();
            banners.extend(got.into_iter().map(|(p, b)| (host.clone(), p, b)));
        }
        let mut open: Vec<OpenPort> = ports
            .iter()
            .filter(|p| p.state == PortState::Open.as_str())
            .map(|p| {
                let port = u16::try_from(p.port).unwrap_or(0);
                OpenPort {
                    host: p.host.clone(),
                    port,
                    banner: banners
                        .iter()
                        .find(|(h, q, _)| *h == p.host && *q == port)
                        .map(|(_, _, b)| b.clone()),
                    new: false,
                }
            })
            .collect();
        // Compare with the previous complete scan first: newly open ports weigh in the grade.
        let alerts = self.diff(&row, &open).await?;
        for o in &mut open {
            o.new = alerts.iter().any(|a| {
                a.kind == AlertKind::NewOpenPort && a.host == o.host && a.port == i64::from(o.port)
            });
        }
        let (grade, score) = findings::grade(&findings::findings(&open));
        let monitor = if alerts.is_empty() {
            Vec::new()
        } else {
            self.monitor(&row, &alerts).await
        };
        if !store
            .complete(
                id,
                &Completion {
                    banners: &banners,
                    grade: &grade,
                    score,
                    duration_ms: row.duration_ms.unwrap_or(0).max(0) as u64,
                    now: self.now_secs(),
                    alerts: &alerts,
                    monitor: &monitor,
                },
            )
            .await?
        {
            return Ok(());
        }
        tracing::info!(%id, open = open.len(), %grade, "managed scan complete");
        if !monitor.is_empty() {
            tracing::info!(%id, deliveries = monitor.len(), "monitor deliveries queued");
        }
        Ok(())
    }
}
