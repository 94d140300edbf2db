//! Monitors of saved targets: the new alerts of a scan at or above the target's threshold,
//! POSTed to its webhook (the body built by the HTTP layer's [`super::service::MonitorBody`])
//! and e-mailed when SMTP is configured ([`super::mail::MonitorEmail`]). Both are durable
//! delivery jobs ([`crate::delivery`]) queued by the transaction that completes the scan
//! (`MStore::complete`), so a crash between the two cannot lose them.

use super::findings::Severity;
use super::mail::MonitorEmail;
use super::service::ManagedService;
use super::store::{AlertRow, MScanRow};
use crate::delivery::DeliveryJob;
use crate::webhook::delivery_id;
use std::sync::Arc;

impl ManagedService {
    /// Monitor: the new alerts at or above the target's threshold, as delivery jobs for its
    /// webhook and, when SMTP is configured, its alert e-mail (none when nothing is picked).
    pub(super) async fn monitor(
        self: &Arc<Self>,
        row: &MScanRow,
        alerts: &[AlertRow],
    ) -> Vec<DeliveryJob> {
        let Some(tid) = &row.target_id else {
            return Vec::new();
        };
        let target = match self.deps().store.target_any(tid).await {
            Ok(Some(t)) => t,
            _ => return Vec::new(),
        };
        if target.webhook_url.is_none() && target.alert_email.is_none() {
            return Vec::new();
        }
        let min = target
            .alert_min_severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::High);
        let picked: Vec<AlertRow> = alerts
            .iter()
            .filter(|a| Severity::parse(&a.severity).is_some_and(|s| s >= min))
            .cloned()
            .collect();
        if picked.is_empty() {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        if let Some(url) = target.webhook_url {
            let body = (self.deps().monitor_body)(row, &picked);
            jobs.push(DeliveryJob {
                id: delivery_id("monitor", &row.id, &url),
                url,
                body: String::from_utf8_lossy(&body).into_owned(),
                alerts: picked.iter().map(|a| a.id.clone()).collect(),
                callback_of: None,
                email: None,
            });
        }
        if let (Some(to), true) = (target.alert_email, self.deps().mailer.is_some()) {
            jobs.push(DeliveryJob::email(
                &row.id,
                MonitorEmail::of_alerts(to, row, &picked),
            ));
        }
        jobs
    }
}
