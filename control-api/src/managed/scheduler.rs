//! The scheduler: every due saved target runs once (once across all API nodes: a node
//! claims the run before it scans) through the same checks as a POST, and the periodic work.

use super::order::ScanOrder;
use super::service::ManagedService;
use super::store::TargetRow;
use std::sync::Arc;

impl ManagedService {
    /// The scan order of a saved target.
    pub fn order_for(t: &TargetRow) -> ScanOrder {
        ScanOrder {
            target: t.target.clone(),
            domain: None,
            profile: Some(t.profile.clone()),
            ports: t.ports.clone(),
            target_id: Some(t.id.clone()),
        }
    }

    /// Periodic work: finish what is complete, then run due scheduled targets.
    pub async fn maintain(self: &Arc<Self>) -> usize {
        self.finish_pass().await;
        self.run_due().await
    }

    /// Runs every due scheduled target once, then sets its next run to now + interval, so
    /// a schedule missed during downtime runs once, not once per missed interval.
    pub async fn run_due(&self) -> usize {
        let now = self.now_secs();
        let due = match self.deps().store.due_targets(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot list due targets");
                return 0;
            }
        };
        let mut started = 0;
        for t in &due {
            started += usize::from(self.run_target(t, now).await);
        }
        started
    }

    /// Runs `t`, listed as due at `now`, if this node claims the run (another node that
    /// listed it too may have): whether a scan started.
    pub async fn run_target(&self, t: &TargetRow, now: i64) -> bool {
        let Some(was) = t.next_run_at else {
            return false;
        };
        // Checked: a stored interval is bounded by the API, but a row is not trusted
        // to be (an overflow would put the next run in the past: a scan every tick).
        let interval = t
            .interval_secs
            .unwrap_or(0)
            .clamp(super::MIN_INTERVAL, super::MAX_INTERVAL);
        match self
            .deps()
            .store
            .claim_run(&t.id, was, now.saturating_add(interval))
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::error!(error = %e, "cannot schedule target");
                return false;
            }
        }
        let token = match self.token_by_id(&t.token_id).await {
            Ok(Some(tok)) => tok,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(error = %e, "cannot load token");
                return false;
            }
        };
        match self.submit(&token, &Self::order_for(t)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(target_id = %t.id, error = %e, "scheduled scan not started");
                false
            }
        }
    }
}
