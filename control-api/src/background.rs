//! A service's background tasks (finisher, scheduler, maintenance, deliveries): spawned
//! under one cancellation token, cancelled and awaited together at shutdown. Both scan
//! services own one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of one service.
#[derive(Debug, Default)]
pub struct Background {
    /// Every task spawned here, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Cancelled at shutdown; tasks from [`Background::spawn`] stop at their next await.
    cancel: CancellationToken,
}

impl Background {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` until it ends or shutdown cancels it.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Runs `fut` to its end: for work that stops by itself on [`Background::child_token`]
    /// (shutdown waits for it instead of dropping it mid-way).
    pub fn track(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    /// Runs `pass(svc)` every `period` (not at all for a zero period) until shutdown; a
    /// tick missed while a pass runs is delayed, not bunched.
    pub fn every<S, F, Fut>(&self, period: Duration, svc: &Arc<S>, pass: F)
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if period.is_zero() {
            return;
        }
        let svc = svc.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                pass(svc.clone()).await;
            }
        });
    }

    /// A token that shutdown cancels, for work that stops by itself.
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Cancels every task and waits for all of them to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
