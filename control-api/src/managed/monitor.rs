//! Monitors of saved targets: the new alerts of a scan at or above the target's threshold,
//! POSTed to its webhook (the body built by the HTTP layer's [`super::service::MonitorBody`];
//! a durable delivery job, [`crate::delivery`]) and e-mailed when SMTP is configured.

use super::findings::Severity;
use super::service::ManagedService;
use super::store::{AlertRow, MScanRow};
use crate::delivery::DeliveryJob;
use crate::webhook::delivery_id;
use std::sync::Arc;

impl ManagedService {
    /// Monitor: POSTs new alerts at or above the target's threshold to its webhook.
    pub(super) async fn notify(self: &Arc<Self>, row: &MScanRow, alerts: Vec<AlertRow>) {
        let Some(tid) = &row.target_id else {
            return;
        };
        let target = match self.deps().store.target_any(tid).await {
            Ok(Some(t)) => t,
            _ => return,
        };
        if target.webhook_url.is_none() && target.alert_email.is_none() {
            return;
        }
        let min = target
            .alert_min_severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::High);
        let picked: Vec<AlertRow> = alerts
            .into_iter()
            .filter(|a| Severity::parse(&a.severity).is_some_and(|s| s >= min))
            .collect();
        if picked.is_empty() {
            return;
        }
        let ids: Vec<String> = picked.iter().map(|a| a.id.clone()).collect();
        if let Some(url) = target.webhook_url.clone() {
            // A durable job: a crash mid-delivery resumes it (crate::delivery).
            let body = (self.deps().monitor_body)(row, &picked);
            let job = DeliveryJob {
                id: delivery_id("monitor", &row.id, &url),
                url,
                body: String::from_utf8_lossy(&body).into_owned(),
                alerts: ids.clone(),
                callback_of: None,
            };
            if let Err(e) = self.deps().deliveries.push(job).await {
                tracing::error!(error = %e, scan = %row.id, "cannot queue monitor webhook");
            }
        }
        if let (Some(to), Some(mailer)) = (target.alert_email.clone(), self.deps().mailer.clone()) {
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
}
