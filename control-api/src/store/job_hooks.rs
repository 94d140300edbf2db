//! The hooks of [`super::jobs::JobStore`]: the row of the same id a self-scan or managed
//! scan keeps beside its job scan, and the statements that move it with the job scan's
//! chunk commits and failure (see the module doc of [`super::jobs`]).

use super::jobs::MANAGED_KIND;

/// The row of the same id a job scan may carry, chosen by the job scan's kind: a managed
/// scan's (`custom`, in `managed_scans`) or a self-scan's (`fast`, `deep`, in `scans`).
/// Each statement also matches on the id, so a job scan without such a row (the
/// `jobs submit` path) is untouched.
pub(super) struct RowOf {
    /// Its table.
    table: &'static str,
    /// Its failure column.
    error: &'static str,
    /// Its ports' table and columns, and the columns of `port_results` they take.
    ports: &'static str,
    /// Those columns in `port_results`.
    from: &'static str,
    /// What a commit sets besides status and progress: its duration and its own columns
    /// (parameters as in [`RowOf::commit_sql`]).
    commit_sets: &'static str,
    /// Extra condition of a commit.
    commit_when: &'static str,
}

/// A scan's duration at a commit ($7 now, Unix ms; $2 scan): the wall time since its first
/// chunk claim (`job_scans.started_at_ms`), so the last commit makes it first claim to last
/// commit, whether the chunks ran side by side or one after another.
macro_rules! wall_ms {
    () => {
        "duration_ms = $7 - COALESCE((SELECT started_at_ms FROM job_scans WHERE id = $2), $7)"
    };
}

/// A self-scan's `scans` row.
const SELF_SCAN: RowOf = RowOf {
    table: "scans",
    error: "fail_reason",
    ports: "scan_ports (scan_id, port, state)",
    from: "port, state",
    commit_sets: concat!("queue_position = 0, engine_done = $4, ", wall_ms!()),
    commit_when: " AND engine_done = 0",
};

/// A managed scan's `managed_scans` row.
pub(super) const MANAGED: RowOf = RowOf {
    table: "managed_scans",
    error: "error",
    ports: "managed_ports (scan_id, host, port, state)",
    from: "address, port, state",
    commit_sets: concat!(
        "submitted = 1, started_at = COALESCE(started_at, $5), ",
        wall_ms!()
    ),
    commit_when: "",
};

impl RowOf {
    /// The row kind of a job scan of `kind`.
    pub(super) fn kind(kind: &str) -> &'static RowOf {
        if kind == MANAGED_KIND {
            &MANAGED
        } else {
            &SELF_SCAN
        }
    }

    /// Copies a chunk's open and filtered ports into the row's ports while the row is live:
    /// $1 scan, $2 chunk, $3 `closed`, $4 and $5 the live statuses.
    pub(super) fn ports_sql(&self) -> String {
        let RowOf {
            table, ports, from, ..
        } = self;
        format!(
            "INSERT INTO {ports} SELECT scan_id, {from} FROM port_results
             WHERE scan_id = $1 AND chunk = $2 AND state <> $3
               AND EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND status IN ($4, $5))
             ON CONFLICT DO NOTHING"
        )
    }

    /// Moves a live row on a commit: $1 `running`, $2 scan, $3 engine ms of the chunk
    /// (unused: both rows keep wall time), $4 whether the scan is complete (1 or 0), $5 now
    /// (Unix seconds), $6 `queued`, $7 now (Unix ms). Either row's duration is wall time from
    /// its first chunk claim (`wall_ms!`).
    pub(super) fn commit_sql(&self) -> String {
        let RowOf {
            table,
            commit_sets,
            commit_when,
            ..
        } = self;
        format!(
            "UPDATE {table} SET status = $1, {commit_sets},
               chunks_complete = (SELECT chunks_done FROM job_scans WHERE id = $2),
               total_chunks = (SELECT chunks_total FROM job_scans WHERE id = $2)
             WHERE id = $2 AND status IN ($6, $1){commit_when}"
        )
    }

    /// Ends a live row: $1 its final status (`failed`, `cancelled`), $2 the reason (or
    /// `NULL`), $3 now (Unix seconds), $4 scan, $5 and $6 the live statuses.
    pub(super) fn end_sql(&self) -> String {
        let RowOf { table, error, .. } = self;
        format!(
            "UPDATE {table} SET status = $1, {error} = $2, completed_at = $3
             WHERE id = $4 AND status IN ($5, $6)"
        )
    }
}

/// Ends the live row `$row` (a [`RowOf`]) of scan `$id` in transaction `$tx`: status
/// `$status`, reason `$reason` (or `None`), at `$now_s` (Unix seconds). Evaluates to the
/// statement's result.
macro_rules! end_row {
    ($tx:ident, $row:expr, $id:expr, $status:expr, $reason:expr, $now_s:expr) => {
        sqlx::query(sqlx::AssertSqlSafe($row.end_sql()))
            .bind($status.as_str())
            .bind($reason)
            .bind($now_s)
            .bind($id)
            .bind($crate::model::Status::Queued.as_str())
            .bind($crate::model::Status::Running.as_str())
            .execute(&mut *$tx)
            .await
    };
}
pub(super) use end_row;
