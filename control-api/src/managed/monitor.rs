//! Monitors of saved targets: the new alerts of a scan at or above the target's threshold,
//! POSTed to its webhook (the body built by the HTTP layer's [`super::service::MonitorBody`];
//! a durable delivery job, [`crate::delivery`], queued by the transaction that completes the
//! scan) and e-mailed when SMTP is configured.

use super::findings::Severity;
use super::service::ManagedService;
use super::store::{AlertRow, MScanRow};
use crate::delivery::DeliveryJob;
use crate::webhook::delivery_id;
use std::sync::Arc;

/// What a scan's new alerts trigger on its saved target, worked out before the scan is
/// made final: the webhook's delivery job is queued by the same transaction
/// (`MStore::complete`), so a crash between the two cannot lose it.
#[derive(Debug, Default)]
pub(super) struct Monitor {
    /// The target's webhook delivery.
    pub webhook: Option<DeliveryJob>,
    /// The e-mail (to, subject, text), sent once the scan is final.
    pub email: Option<(String, String, String)>,
}

impl ManagedService {
    /// Monitor: the new alerts at or above the target's threshold, as a webhook delivery
    /// job for its webhook and an e-mail when SMTP is configured.
    pub(super) async fn monitor(self: &Arc<Self>, row: &MScanRow, alerts: &[AlertRow]) -> Monitor {
        let none = Monitor::default();
        let Some(tid) = &row.target_id else {
            return none;
        };
        let target = match self.deps().store.target_any(tid).await {
            Ok(Some(t)) => t,
            _ => return none,
        };
        if target.webhook_url.is_none() && target.alert_email.is_none() {
            return none;
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
            return none;
        }
        let webhook = target.webhook_url.clone().map(|url| {
            let body = (self.deps().monitor_body)(row, &picked);
            DeliveryJob {
                id: delivery_id("monitor", &row.id, &url),
                url,
                body: String::from_utf8_lossy(&body).into_owned(),
                alerts: picked.iter().map(|a| a.id.clone()).collect(),
                callback_of: None,
            }
        });
        let email = match (target.alert_email.clone(), self.deps().mailer.is_some()) {
            (Some(to), true) => {
                let worst = picked
                    .iter()
                    .filter_map(|a| Severity::parse(&a.severity))
                    .max()
                    .unwrap_or(Severity::Info);
                let subject = format!(
                    "[portscope] {} alert(s) on {} ({})",
                    picked.len(),
                    row.target,
                    worst.as_str()
                );
                let mut text = format!(
                    "Scan {} of {} found changes since the previous scan:\n\n",
                    row.id, row.target
                );
                for a in &picked {
                    text.push_str(&format!("- [{}] {}\n", a.severity, a.message));
                }
                text.push_str(&format!(
                    "\nReport: /report/{}?key={}\n",
                    row.id, row.report_key
                ));
                Some((to, subject, text))
            }
            _ => None,
        };
        Monitor { webhook, email }
    }

    /// Sends a monitor e-mail (retried with backoff, in the background).
    pub(super) fn send_email(self: &Arc<Self>, (to, subject, text): (String, String, String)) {
        let Some(mailer) = self.deps().mailer.clone() else {
            return;
        };
        let attempts = self.deps().webhooks.attempts.max(1);
        let backoff = self.deps().webhooks.backoff;
        self.spawn(async move {
            let mut delay = backoff;
            for attempt in 1..=attempts {
                match mailer.send(&to, &subject, &text).await {
                    Ok(()) => {
                        tracing::info!(%to, attempt, "monitor e-mail sent");
                        return;
                    }
                    Err(e) => tracing::warn!(%to, attempt, error = %e, "monitor e-mail failed"),
                }
                if attempt < attempts {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        });
    }
}
