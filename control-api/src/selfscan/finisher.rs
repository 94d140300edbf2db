//! The self-scan finisher: completes every scan whose chunks are all committed
//! (`engine_done = 1`, not final: banners, PTR, then `complete`). Woken by this process's
//! worker after each commit and, on PostgreSQL, by every other process's commit
//! (`store::notify`); every `finisher-poll-ms` it also looks on its own (another process's
//! commits on SQLite, a lost notification).
//!
//! Idempotent across nodes: `Store::complete` changes a row once. Callbacks are not
//! delivered here: the transaction that makes a row final (`complete`, or a failed chunk's
//! `JobStore::fail_scan`) queues them as delivery jobs (`crate::delivery`), so two API
//! nodes deliver them once and a crash mid-delivery resumes them. At start the finisher
//! queues the pending callbacks of final scans an older version left behind.

use super::ScanService;
use crate::util::lock;
use portscope_core::results::PortState;
use std::net::IpAddr;
use std::sync::Arc;

impl ScanService {
    /// The finisher loop (a background task of the service).
    pub(super) async fn run_finisher(self: Arc<Self>) {
        match self.deps.store.queue_leftover_callbacks().await {
            Ok(ids) if !ids.is_empty() => tracing::info!(scans = ids.len(), "callbacks queued"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot queue pending callbacks"),
        }
        crate::jobs::every_change(&self.changed, self.settings.finisher_poll, || {
            self.finish_pass()
        })
        .await;
    }

    /// One pass: finish what the engine side completed.
    pub async fn finish_pass(self: &Arc<Self>) {
        match self.deps.store.non_final().await {
            Ok(rows) => {
                for r in rows.into_iter().filter(|r| r.engine_done == 1) {
                    self.spawn_once(r.id, |me, id| async move {
                        if let Err(e) = me.finalize(&id).await {
                            tracing::error!(error = %e, %id, "cannot complete scan");
                        }
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list live scans"),
        }
    }

    /// Runs `work(id)` in a task unless work on `id` is under way here already.
    fn spawn_once<F, Fut>(self: &Arc<Self>, id: String, work: F)
    where
        F: FnOnce(Arc<Self>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        if !lock(&self.busy).insert(id.clone()) {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            work(me.clone(), id.clone()).await;
            lock(&me.busy).remove(&id);
        });
    }

    /// Banners and PTR, then `complete` (which queues the callbacks).
    async fn finalize(self: &Arc<Self>, id: &str) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let Some(row) = store.get(id).await? else {
            return Ok(());
        };
        if row.is_final() || row.engine_done != 1 {
            return Ok(());
        }
        let Ok(ip) = row.ip.parse::<IpAddr>() else {
            return Ok(());
        };
        let open: Vec<u16> = store
            .ports(id)
            .await?
            .into_iter()
            .filter(|p| p.state == PortState::Open.as_str())
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect();
        let (banners, ptr) = tokio::join!(self.deps.banners.grab(ip, &open), self.deps.ptr.ptr(ip));
        let mut banners: Vec<(u16, String)> = banners.into_iter().collect();
        banners.sort_unstable();
        if store
            .complete(id, ptr.as_deref(), &banners, self.now_secs(), self.expiry())
            .await?
        {
            tracing::info!(%id, open = open.len(), "scan complete");
        }
        Ok(())
    }
}
