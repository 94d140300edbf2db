//! Self-scan webhooks: when a scan completes or fails, its GET body is POSTed to each
//! callback URL it carries (the delivery rules are [`crate::webhook`]'s), and the outcome is
//! recorded so a restart resumes what is still pending (a crash mid-delivery included: the
//! callback stays `pending` until its outcome is recorded), with the same delivery id. The
//! finisher (`super::finisher`) calls it and holds the scan until every URL's delivery
//! has ended, so a pending callback is never delivered twice by one process.

use super::ScanService;
use crate::http::error::ApiError;
use crate::webhook::delivery_id;
use std::sync::Arc;

impl ScanService {
    /// Delivers the scan's pending callbacks, all URLs at once; returns when all ended.
    pub(super) async fn deliver_webhooks(self: &Arc<Self>, id: &str) -> Result<(), ApiError> {
        let urls = self.deps.store.pending_callbacks(id).await?;
        if urls.is_empty() {
            return Ok(());
        }
        let Some(row) = self.deps.store.get(id).await? else {
            return Ok(());
        };
        let body = Arc::new(
            serde_json::to_vec(&self.view(&row).await?)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        let deliveries = urls.into_iter().map(|url| {
            let me = self.clone();
            let body = body.clone();
            let id = id.to_string();
            async move {
                let metrics = me.deps.metrics.clone();
                let d = me
                    .deps
                    .webhooks
                    .deliver(&url, &body, &delivery_id("callback", &id, &url), || {
                        metrics.webhook("retried")
                    })
                    .await;
                let state = if d.delivered { "delivered" } else { "failed" };
                metrics.webhook(state);
                tracing::info!(%id, %url, state, attempts = d.attempts, "webhook");
                if let Err(e) = me
                    .deps
                    .store
                    .set_callback(&id, &url, state, d.attempts)
                    .await
                {
                    tracing::error!(error = %e, "cannot record webhook outcome");
                }
            }
        });
        futures_util::future::join_all(deliveries).await;
        Ok(())
    }
}
