//! The managed-scan tables (`migrations/sqlite/0002_managed.sql`) through sqlx: scans and their
//! per-host ports, saved targets, alerts. Portable SQL as in [`crate::store`]; engine
//! updates only touch live rows (`queued`, `running`), so replays are idempotent and a
//! cancelled scan stays cancelled.

use sqlx::{FromRow, QueryBuilder, Sqlite, SqlitePool};

/// Live statuses.
pub const LIVE: &str = "status IN ('queued', 'running')";

/// A `managed_scans` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MScanRow {
    /// Id (a hyphenated UUID), also the engine's.
    pub id: String,
    /// Owner.
    pub token_id: String,
    /// Saved target it was run for.
    pub target_id: Option<String>,
    /// As requested (IP, CIDR or name), normalised.
    pub target: String,
    /// Domain label.
    pub domain: Option<String>,
    /// What the engine was given, comma-separated.
    pub addresses: String,
    /// Engine port spec.
    pub ports: String,
    /// Ports per host.
    pub port_count: i64,
    /// `fast`, `deep`, `custom`.
    pub profile: String,
    /// `queued|running|complete|failed|cancelled`.
    pub status: String,
    /// Submit sent.
    pub submitted: i64,
    /// Chunks done.
    pub chunks_complete: i64,
    /// Chunks.
    pub total_chunks: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Report page key.
    pub report_key: String,
    /// Grade when complete.
    pub grade: Option<String>,
    /// Score when complete.
    pub grade_score: Option<i64>,
    /// Engine time.
    pub duration_ms: Option<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix seconds.
    pub started_at: Option<i64>,
    /// Unix seconds.
    pub completed_at: Option<i64>,
}

impl MScanRow {
    /// Whether the scan can still change.
    pub fn is_live(&self) -> bool {
        self.status == "queued" || self.status == "running"
    }
}

/// A `managed_ports` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MPortRow {
    /// Host.
    pub host: String,
    /// Port.
    pub port: i64,
    /// `open` / `filtered`.
    pub state: String,
    /// Banner.
    pub banner: Option<String>,
}

/// A `managed_targets` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TargetRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub token_id: String,
    /// IP, CIDR or name.
    pub target: String,
    /// Label.
    pub label: Option<String>,
    /// `fast`, `deep`, `custom`.
    pub profile: String,
    /// Custom port spec.
    pub ports: Option<String>,
    /// Re-scan interval.
    pub interval_secs: Option<i64>,
    /// Scheduled and included in trigger-all.
    pub enabled: i64,
    /// Next scheduled run, Unix seconds.
    pub next_run_at: Option<i64>,
    /// Monitor webhook.
    pub webhook_url: Option<String>,
    /// Monitor threshold.
    pub alert_min_severity: Option<String>,
    /// Monitor e-mail recipient.
    pub alert_email: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
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

/// A `managed_alerts` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AlertRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub token_id: String,
    /// The scan that saw the change.
    pub scan_id: String,
    /// Saved target, if any.
    pub target_id: Option<String>,
    /// Scan target.
    pub target: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i64,
    /// `new_open_port`, `port_closed`, `banner_changed`.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Text.
    pub message: String,
    /// Before.
    pub old_value: Option<String>,
    /// After.
    pub new_value: Option<String>,
    /// `open`, `acknowledged`, `resolved`.
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub acknowledged_at: Option<i64>,
    /// Unix seconds.
    pub resolved_at: Option<i64>,
    /// Monitor notified.
    pub notified: i64,
}

/// The tables.
#[derive(Debug, Clone)]
pub struct MStore {
    pool: SqlitePool,
    /// Report keys are derived from it, never stored.
    secret: crate::secret::ServerSecret,
}

impl MStore {
    /// On an open, migrated pool, with a fresh random secret (report links do not survive
    /// a restart: tests; the server uses [`MStore::with_secret`]).
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_secret(
            pool,
            crate::secret::ServerSecret::from_bytes(rand::random()),
        )
    }

    /// On an open, migrated pool, deriving report keys from `secret`.
    pub fn with_secret(pool: SqlitePool, secret: crate::secret::ServerSecret) -> Self {
        MStore { pool, secret }
    }

    /// The report key of a scan (derived from the server secret).
    pub fn report_key(&self, id: &str) -> String {
        self.secret.report_key(id)
    }

    /// A row as read, with its derived report key.
    fn keyed(&self, mut r: MScanRow) -> MScanRow {
        r.report_key = self.report_key(&r.id);
        r
    }

    /// Blanks report keys stored in the clear by earlier versions (their links now use the
    /// derived key). Run at start.
    pub async fn forget_stored_report_keys(&self) -> Result<u64, sqlx::Error> {
        let r = sqlx::query("UPDATE managed_scans SET report_key = '' WHERE report_key <> ''")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Inserts a queued scan.
    pub async fn insert_scan(&self, r: &MScanRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO managed_scans (id, token_id, target_id, target, domain, addresses, \
             ports, port_count, profile, status, report_key, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11)",
        )
        .bind(&r.id)
        .bind(&r.token_id)
        .bind(&r.target_id)
        .bind(&r.target)
        .bind(&r.domain)
        .bind(&r.addresses)
        .bind(&r.ports)
        .bind(r.port_count)
        .bind(&r.profile)
        .bind("") // report_key: derived, never stored
        .bind(r.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A scan by id.
    pub async fn scan(&self, id: &str) -> Result<Option<MScanRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_scans WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map(|o| o.map(|r| self.keyed(r)))
    }

    /// A scan by id, if it belongs to the token.
    pub async fn owned_scan(&self, token: &str, id: &str) -> Result<Option<MScanRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_scans WHERE id = $1 AND token_id = $2")
            .bind(id)
            .bind(token)
            .fetch_optional(&self.pool)
            .await
            .map(|o| o.map(|r| self.keyed(r)))
    }

    /// The live scan of a token's target.
    pub async fn live_for(
        &self,
        token: &str,
        target: &str,
    ) -> Result<Option<MScanRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT * FROM managed_scans WHERE token_id = $1 AND target = $2 AND {LIVE} \
             ORDER BY created_at_ms DESC LIMIT 1"
        ))
        .bind(token)
        .bind(target)
        .fetch_optional(&self.pool)
        .await
        .map(|o| o.map(|r| self.keyed(r)))
    }

    /// The newest complete scan of a token's target created before `before_ms`.
    pub async fn previous_complete(
        &self,
        token: &str,
        target: &str,
        before_ms: i64,
    ) -> Result<Option<MScanRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM managed_scans WHERE token_id = $1 AND target = $2 \
             AND status = 'complete' AND created_at_ms < $3 ORDER BY created_at_ms DESC LIMIT 1",
        )
        .bind(token)
        .bind(target)
        .bind(before_ms)
        .fetch_optional(&self.pool)
        .await
        .map(|o| o.map(|r| self.keyed(r)))
    }

    /// Counts: scans created since `since_ms`, live scans of the token, queued scans of all.
    pub async fn usage(&self, token: &str, since_ms: i64) -> Result<(i64, i64, i64), sqlx::Error> {
        let (month,): (i64,) = sqlx::query_as(
            // Scans the engine refused (`rejected_*`) cost no quota.
            "SELECT COUNT(*) FROM managed_scans WHERE token_id = $1 AND created_at_ms >= $2 \
             AND COALESCE(error, '') NOT LIKE 'rejected\\_%' ESCAPE '\\'",
        )
        .bind(token)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        let (live,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM managed_scans WHERE token_id = $1 AND {LIVE}"
        ))
        .bind(token)
        .fetch_one(&self.pool)
        .await?;
        let (queued,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM managed_scans WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        Ok((month, live, queued))
    }

    /// A page of a token's scans, newest first, and the total.
    pub async fn list_scans(
        &self,
        token: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MScanRow>, i64), sqlx::Error> {
        let filter = if target.is_some() {
            " AND target = $2"
        } else {
            ""
        };
        let count_sql = format!("SELECT COUNT(*) FROM managed_scans WHERE token_id = $1{filter}");
        let (lim, off) = if target.is_some() {
            ("$3", "$4")
        } else {
            ("$2", "$3")
        };
        let page_sql = format!(
            "SELECT * FROM managed_scans WHERE token_id = $1{filter} \
             ORDER BY created_at_ms DESC, id LIMIT {lim} OFFSET {off}"
        );
        let mut count = sqlx::query_as::<_, (i64,)>(&count_sql).bind(token);
        let mut page = sqlx::query_as::<_, MScanRow>(&page_sql).bind(token);
        if let Some(t) = target {
            count = count.bind(t);
            page = page.bind(t);
        }
        let (total,) = count.fetch_one(&self.pool).await?;
        let rows = page.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows.into_iter().map(|r| self.keyed(r)).collect(), total))
    }

    /// Every live scan, oldest first.
    pub async fn live(&self) -> Result<Vec<MScanRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT * FROM managed_scans WHERE {LIVE} ORDER BY created_at_ms"
        ))
        .fetch_all(&self.pool)
        .await
        .map(|v: Vec<MScanRow>| v.into_iter().map(|r| self.keyed(r)).collect())
    }

    /// Marks the submit sent.
    pub async fn mark_submitted(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE managed_scans SET submitted = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Engine progress; queue position 0 with a chunk count means running.
    pub async fn progress(
        &self,
        id: &str,
        running: bool,
        chunks_complete: Option<u32>,
        total_chunks: u32,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let status = if running { "running" } else { "queued" };
        sqlx::query(&format!(
            "UPDATE managed_scans SET status = $1, submitted = 1, \
             chunks_complete = COALESCE($2, chunks_complete), total_chunks = $3, \
             started_at = CASE WHEN $1 = 'running' THEN COALESCE(started_at, $4) ELSE started_at END \
             WHERE id = $5 AND {LIVE}"
        ))
        .bind(status)
        .bind(chunks_complete.map(i64::from))
        .bind(i64::from(total_chunks))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records open / filtered ports of a live scan (idempotent).
    pub async fn add_ports(
        &self,
        id: &str,
        ports: &[(String, u16, &str)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for batch in ports.chunks(300) {
            let mut q: QueryBuilder<'_, Sqlite> =
                QueryBuilder::new("INSERT INTO managed_ports (scan_id, host, port, state) ");
            q.push_values(batch, |mut b, (host, port, state)| {
                b.push_bind(id)
                    .push_bind(host.clone())
                    .push_bind(i64::from(*port))
                    .push_bind(*state);
            });
            q.push(" ON CONFLICT (scan_id, host, port) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// A scan's ports by host and port.
    pub async fn ports(&self, id: &str) -> Result<Vec<MPortRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT host, port, state, banner FROM managed_ports WHERE scan_id = $1 \
             ORDER BY host, port",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Completes a live scan with banners, grade and score, and its alerts, in one
    /// transaction. Returns whether it changed.
    pub async fn complete(
        &self,
        id: &str,
        banners: &[(String, u16, String)],
        (grade, score): (&str, i64),
        duration_ms: u64,
        now: i64,
        alerts: &[AlertRow],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (host, port, banner) in banners {
            sqlx::query(
                "UPDATE managed_ports SET banner = $1 WHERE scan_id = $2 AND host = $3 AND port = $4",
            )
            .bind(banner)
            .bind(id)
            .bind(host)
            .bind(i64::from(*port))
            .execute(&mut *tx)
            .await?;
        }
        let r = sqlx::query(&format!(
            "UPDATE managed_scans SET status = 'complete', grade = $1, grade_score = $2, \
             duration_ms = $3, completed_at = $4, chunks_complete = total_chunks, \
             started_at = COALESCE(started_at, $4) WHERE id = $5 AND {LIVE}"
        ))
        .bind(grade)
        .bind(score)
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false); // no longer live: nothing changes (rolled back on drop)
        }
        // The alerts commit with the completion: whoever sees `complete` sees its alerts
        // (and the findings they mark as new).
        for a in alerts {
            insert_alert(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a live scan as `failed` or `cancelled`. Returns whether it changed.
    pub async fn end(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(&format!(
            "UPDATE managed_scans SET status = $1, error = $2, completed_at = $3 \
             WHERE id = $4 AND {LIVE}"
        ))
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // --- targets ---

    /// Inserts a target.
    pub async fn insert_target(&self, t: &TargetRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO managed_targets (id, token_id, target, label, profile, ports, \
             interval_secs, enabled, next_run_at, webhook_url, alert_min_severity, created_at, \
             updated_at, alert_email) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&t.id)
        .bind(&t.token_id)
        .bind(&t.target)
        .bind(&t.label)
        .bind(&t.profile)
        .bind(&t.ports)
        .bind(t.interval_secs)
        .bind(t.enabled)
        .bind(t.next_run_at)
        .bind(&t.webhook_url)
        .bind(&t.alert_min_severity)
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(&t.alert_email)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces a target's settings.
    pub async fn update_target(&self, t: &TargetRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE managed_targets SET target = $1, label = $2, profile = $3, ports = $4, \
             interval_secs = $5, enabled = $6, next_run_at = $7, webhook_url = $8, \
             alert_min_severity = $9, updated_at = $10, alert_email = $13 \
             WHERE id = $11 AND token_id = $12",
        )
        .bind(&t.target)
        .bind(&t.label)
        .bind(&t.profile)
        .bind(&t.ports)
        .bind(t.interval_secs)
        .bind(t.enabled)
        .bind(t.next_run_at)
        .bind(&t.webhook_url)
        .bind(&t.alert_min_severity)
        .bind(t.updated_at)
        .bind(&t.id)
        .bind(&t.token_id)
        .bind(&t.alert_email)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token's target.
    pub async fn target(&self, token: &str, id: &str) -> Result<Option<TargetRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_targets WHERE id = $1 AND token_id = $2")
            .bind(id)
            .bind(token)
            .fetch_optional(&self.pool)
            .await
    }

    /// A target by id (any token).
    pub async fn target_any(&self, id: &str) -> Result<Option<TargetRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_targets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// A token's targets, oldest first.
    pub async fn targets(&self, token: &str) -> Result<Vec<TargetRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_targets WHERE token_id = $1 ORDER BY created_at, id")
            .bind(token)
            .fetch_all(&self.pool)
            .await
    }

    /// Deletes a token's target. Returns whether it existed.
    pub async fn delete_target(&self, token: &str, id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("DELETE FROM managed_targets WHERE id = $1 AND token_id = $2")
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Enabled targets with a schedule due at `now`.
    pub async fn due_targets(&self, now: i64) -> Result<Vec<TargetRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM managed_targets WHERE enabled = 1 AND interval_secs IS NOT NULL \
             AND next_run_at IS NOT NULL AND next_run_at <= $1 ORDER BY next_run_at, id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// Sets the next run.
    pub async fn set_next_run(&self, id: &str, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE managed_targets SET next_run_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- alerts ---

    /// Inserts alerts.
    pub async fn insert_alerts(&self, alerts: &[AlertRow]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for a in alerts {
            insert_alert(&mut tx, a).await?;
        }
        tx.commit().await
    }

    /// A page of a token's alerts (newest first), optionally by status, and the total.
    pub async fn alerts(
        &self,
        token: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AlertRow>, i64), sqlx::Error> {
        let filter = if status.is_some() {
            " AND status = $2"
        } else {
            ""
        };
        let (lim, off) = if status.is_some() {
            ("$3", "$4")
        } else {
            ("$2", "$3")
        };
        let count_sql = format!("SELECT COUNT(*) FROM managed_alerts WHERE token_id = $1{filter}");
        let page_sql = format!(
            "SELECT * FROM managed_alerts WHERE token_id = $1{filter} \
             ORDER BY created_at DESC, id LIMIT {lim} OFFSET {off}"
        );
        let mut count = sqlx::query_as::<_, (i64,)>(&count_sql).bind(token);
        let mut page = sqlx::query_as::<_, AlertRow>(&page_sql).bind(token);
        if let Some(s) = status {
            count = count.bind(s);
            page = page.bind(s);
        }
        let (total,) = count.fetch_one(&self.pool).await?;
        Ok((
            page.bind(limit).bind(offset).fetch_all(&self.pool).await?,
            total,
        ))
    }

    /// Alerts raised by a scan.
    pub async fn alerts_of_scan(&self, scan: &str) -> Result<Vec<AlertRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM managed_alerts WHERE scan_id = $1 ORDER BY host, port, kind")
            .bind(scan)
            .fetch_all(&self.pool)
            .await
    }

    /// Sets an alert's status (`acknowledged` keeps a resolved alert resolved).
    pub async fn set_alert(
        &self,
        token: &str,
        id: &str,
        status: &str,
        now: i64,
    ) -> Result<Option<AlertRow>, sqlx::Error> {
        let sql = match status {
            "acknowledged" => {
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
            .execute(&self.pool)
            .await?;
        sqlx::query_as("SELECT * FROM managed_alerts WHERE id = $1 AND token_id = $2")
            .bind(id)
            .bind(token)
            .fetch_optional(&self.pool)
            .await
    }

    /// Marks alerts as notified.
    pub async fn mark_notified(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        for id in ids {
            sqlx::query("UPDATE managed_alerts SET notified = 1 WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

/// Inserts one alert inside a transaction.
async fn insert_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    a: &AlertRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO managed_alerts (id, token_id, scan_id, target_id, target, host, port, \
         kind, severity, message, old_value, new_value, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'open', $13)",
    )
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}
