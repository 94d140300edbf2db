//! Self-scan webhooks: when a scan completes or fails, its GET body is POSTed to each
//! callback URL it carries (the delivery rules are [`crate::webhook`]'s), and the outcome is
//! recorded so a restart resumes what is still pending (a crash mid-delivery included: the
//! callback stays `pending` until its outcome is recorded), with the same delivery id.

use super::ScanService;
use crate::http::error::ApiError;
use crate::webhook::delivery_id;
use std::sync::Arc;

impl ScanService {
    pub(super) fn spawn_webhooks(self: &Arc<Self>, id: String) {
        let me = self.clone();
        self.spawn(async move {
            if let Err(e) = me.deliver_webhooks(&id).await {
                tracing::error!(error = %e, %id, "webhooks not delivered");
            }
        });
    }

    async fn deliver_webhooks(self: &Arc<Self>, id: &str) -> Result<(), ApiError> {
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
        for url in urls {
            let me = self.clone();
            let body = body.clone();
            let id = id.to_string();
            self.spawn(async move {
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
            });
        }
        Ok(())
    }
}
