//! Alerts (`managed_alerts`): changes between two complete scans of one target, and their
//! status (`open`, `acknowledged`, `resolved`).

use super::{fetch_page, on_db, MStore};
use crate::managed::alerts::{AlertKind, AlertStatus};
use crate::managed::as_json;
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;

/// An alert: a `managed_alerts` row, and the JSON of `/api/v1` and of monitor webhooks
/// (`AlertView` in the OpenAPI document: camelCase, times ISO 8601, no owner).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AlertView, description = "An alert.")]
pub struct AlertRow {
    /// `al-...`.
    pub id: String,
    /// Owner.
    #[serde(skip)]
    pub token_id: String,
    /// The scan that raised it.
    pub scan_id: String,
    /// Saved target.
    pub target_id: Option<String>,
    /// Target.
    pub target: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i64,
    /// `new_open_port`, `port_closed`, ...
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: AlertKind,
    /// Severity.
    pub severity: String,
    /// One line.
    pub message: String,
    /// Before.
    pub old_value: Option<String>,
    /// After.
    pub new_value: Option<String>,
    /// `open`, `acknowledged`, `resolved`.
    #[schema(value_type = String)]
    pub status: AlertStatus,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::iso")]
    #[schema(value_type = String)]
    pub created_at: i64,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::opt_iso")]
    #[schema(value_type = Option<String>)]
    pub acknowledged_at: Option<i64>,
    /// ISO 8601.
    #[serde(serialize_with = "as_json::opt_iso")]
    #[schema(value_type = Option<String>)]
    pub resolved_at: Option<i64>,
    /// Monitor notified.
    #[serde(skip)]
    pub notified: i64,
}

/// The statement of [`insert_alert!`].
pub(super) const INSERT_ALERT: &str = "INSERT INTO managed_alerts (id, token_id, scan_id, \
    target_id, target, host, port, kind, severity, message, old_value, new_value, status, \
    created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'open', $13)";

/// Inserts one alert (`&AlertRow`) on an executor of either backend (a transaction).
macro_rules! insert_alert {
    ($conn:expr, $a:expr) => {{
        let a: &$crate::store::AlertRow = $a;
        sqlx::query($crate::store::alerts::INSERT_ALERT)
            .bind(&a.id)
            .bind(&a.token_id)
            .bind(&a.scan_id)
            .bind(&a.target_id)
            .bind(&a.target)
            .bind(&a.host)
            .bind(a.port)
            .bind(&a.kind)
            .bind(&a.severity)
            .bind(&a.message)
            .bind(&a.old_value)
            .bind(&a.new_value)
            .bind(a.created_at)
            .execute($conn)
            .await
            .map(|_| ())
    }};
}
pub(super) use insert_alert;

impl MStore {
    /// Inserts alerts.
    pub async fn insert_alerts(&self, alerts: &[AlertRow]) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            for a in alerts {
                insert_alert!(&mut *tx, a)?;
            }
            tx.commit().await
        })
    }

    /// A page of a token's alerts (newest first), optionally by status, and the total.
    pub async fn alerts(
        &self,
        token: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AlertRow>, i64), sqlx::Error> {
        on_db!(&self.pool, |p| {
            let (rows, total) = fetch_page!(
                p, AlertRow from "managed_alerts" newest by "created_at",
                token, "status" = status, limit, offset
            );
            Ok((rows, total))
        })
    }

    /// Alerts raised by a scan.
    pub async fn alerts_of_scan(&self, scan: &str) -> Result<Vec<AlertRow>, sqlx::Error> {
        self.pool
            .all(
                "SELECT * FROM managed_alerts WHERE scan_id = $1 ORDER BY host, port, kind",
                scan,
            )
            .await
    }

    /// Sets an alert's status (`acknowledged` keeps a resolved alert resolved).
    pub async fn set_alert(
        &self,
        token: &str,
        id: &str,
        status: AlertStatus,
        now: i64,
    ) -> Result<Option<AlertRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let sql = match status {
                AlertStatus::Acknowledged => {
                    "UPDATE managed_alerts SET status = CASE WHEN status = 'resolved' THEN status \
                     ELSE 'acknowledged' END, acknowledged_at = COALESCE(acknowledged_at, $1) \
                     WHERE id = $2 AND token_id = $3"
                }
                _ => {
                    "UPDATE managed_alerts SET status = 'resolved', resolved_at = COALESCE(resolved_at, $1) \
                     WHERE id = $2 AND token_id = $3"
                }
            };
            sqlx::query(sql)
                .bind(now)
                .bind(id)
                .bind(token)
                .execute(p)
                .await?;
            sqlx::query_as("SELECT * FROM managed_alerts WHERE id = $1 AND token_id = $2")
                .bind(id)
                .bind(token)
                .fetch_optional(p)
                .await
        })
    }

    /// Marks alerts as notified.
    pub async fn mark_notified(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            for id in ids {
                sqlx::query("UPDATE managed_alerts SET notified = 1 WHERE id = $1")
                    .bind(id)
                    .execute(p)
                    .await?;
            }
            Ok(())
        })
    }
}
