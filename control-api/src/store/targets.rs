//! Saved managed targets (`managed_targets`) with their schedules and monitor settings.

use super::{on_db, MStore};
use crate::managed::as_json;
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;

/// A saved target: a `managed_targets` row, and the JSON of `/api/v1` (`TargetView` in its
/// OpenAPI document: camelCase, times ISO 8601, no owner).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TargetView, description = "A saved target.")]
pub struct TargetRow {
    /// `tg-...`.
    pub id: String,
    /// Owner.
    #[serde(skip)]
    pub token_id: String,
    /// IP, CIDR or name.
    pub target: String,
    /// Label.
    pub label: Option<String>,
    /// Profile.
    pub profile: String,
    /// Custom ports.
    pub ports: Option<String>,
    /// Seconds between scheduled scans.
    #[serde(rename = "interval")]
    pub interval_secs: Option<i64>,
    /// In the schedule and trigger-all.
    #[serde(serialize_with = "as_json::flag")]
    #[schema(value_type = bool)]
    pub enabled: i64,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::opt_iso")]
    #[schema(value_type = Option<String>)]
    pub next_run_at: Option<i64>,
    /// Monitor webhook.
    pub webhook_url: Option<String>,
    /// Alert threshold.
    pub alert_min_severity: Option<String>,
    /// Monitor e-mail.
    pub alert_email: Option<String>,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::iso")]
    #[schema(value_type = String)]
    pub created_at: i64,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::iso")]
    #[schema(value_type = String)]
    pub updated_at: i64,
}

impl TargetRow {
    /// A new enabled `fast` target of `token_id`, with no label, schedule or monitor yet.
    pub fn new(token_id: &str, target: String, now: i64) -> Self {
        TargetRow {
            id: format!("tg-{}", crate::util::random_hex(12)),
            token_id: token_id.to_string(),
            target,
            label: None,
            profile: "fast".into(),
            ports: None,
            interval_secs: None,
            enabled: 1,
            next_run_at: None,
            webhook_url: None,
            alert_min_severity: None,
            alert_email: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Binds a target's settings, then its id and owner: `$1` to `$13` of [`INSERT_TARGET`]
/// and [`UPDATE_TARGET`].
macro_rules! bind_target {
    ($q:expr, $t:expr) => {
        $q.bind(&$t.target)
            .bind(&$t.label)
            .bind(&$t.profile)
            .bind(&$t.ports)
            .bind($t.interval_secs)
            .bind($t.enabled)
            .bind($t.next_run_at)
            .bind(&$t.webhook_url)
            .bind(&$t.alert_min_severity)
            .bind(&$t.alert_email)
            .bind($t.updated_at)
            .bind(&$t.id)
            .bind(&$t.token_id)
    };
}

/// Inserts a target (`$14`: created at).
const INSERT_TARGET: &str = "INSERT INTO managed_targets (target, label, profile, ports, \
     interval_secs, enabled, next_run_at, webhook_url, alert_min_severity, alert_email, \
     updated_at, id, token_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Replaces a token's target's settings.
const UPDATE_TARGET: &str = "UPDATE managed_targets SET target = $1, label = $2, profile = $3, \
     ports = $4, interval_secs = $5, enabled = $6, next_run_at = $7, webhook_url = $8, \
     alert_min_severity = $9, alert_email = $10, updated_at = $11 \
     WHERE id = $12 AND token_id = $13";

impl MStore {
    /// Inserts a target.
    pub async fn insert_target(&self, t: &TargetRow) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            bind_target!(sqlx::query(INSERT_TARGET), t)
                .bind(t.created_at)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Replaces a target's settings.
    pub async fn update_target(&self, t: &TargetRow) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            bind_target!(sqlx::query(UPDATE_TARGET), t)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// A token's target.
    pub async fn target(&self, token: &str, id: &str) -> Result<Option<TargetRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as("SELECT * FROM managed_targets WHERE id = $1 AND token_id = $2")
                .bind(id)
                .bind(token)
                .fetch_optional(p)
                .await
        })
    }

    /// A target by id (any token).
    pub async fn target_any(&self, id: &str) -> Result<Option<TargetRow>, sqlx::Error> {
        self.pool
            .optional("SELECT * FROM managed_targets WHERE id = $1", id)
            .await
    }

    /// A token's targets, oldest first.
    pub async fn targets(&self, token: &str) -> Result<Vec<TargetRow>, sqlx::Error> {
        self.pool
            .all(
                "SELECT * FROM managed_targets WHERE token_id = $1 ORDER BY created_at, id",
                token,
            )
            .await
    }

    /// Deletes a token's target. Returns whether it existed.
    pub async fn delete_target(&self, token: &str, id: &str) -> Result<bool, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let r = sqlx::query("DELETE FROM managed_targets WHERE id = $1 AND token_id = $2")
                .bind(id)
                .bind(token)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Enabled targets with a schedule due at `now`.
    pub async fn due_targets(&self, now: i64) -> Result<Vec<TargetRow>, sqlx::Error> {
        self.pool
            .all(
                "SELECT * FROM managed_targets WHERE enabled = 1 AND interval_secs IS NOT NULL \
             AND next_run_at IS NOT NULL AND next_run_at <= $1 ORDER BY next_run_at, id",
                now,
            )
            .await
    }

    /// Claims the run of a due target that was listed with `next_run_at = was`: moves its
    /// next run to `next` only if no one moved it meanwhile. `true` for exactly one of any
    /// number of nodes (or ticks) that listed the same due run, so a run happens once
    /// across the cluster even when another node's scan of it has already finished.
    pub async fn claim_run(&self, id: &str, was: i64, next: i64) -> Result<bool, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let r = sqlx::query(
                "UPDATE managed_targets SET next_run_at = $1 WHERE id = $2 AND next_run_at = $3",
            )
            .bind(next)
            .bind(id)
            .bind(was)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }
}
