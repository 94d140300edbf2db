//! PostgreSQL notifications of job changes (issue 8), so a node learns of another node's
//! commits without polling for them.
//!
//! A trigger on `job_scans` (installed with the queue's migrations, `queue::migrate_queue`)
//! sends `NOTIFY portscope_jobs` from the transaction of every chunk commit, scan failure
//! and cancellation, so it is heard once that transaction commits, never before its rows
//! are visible. [`listen`] is one process's subscriber: it calls `wake` for every
//! notification, and once after every (re)subscription, because notifications sent while it
//! was not listening are lost (PostgreSQL keeps none for absent listeners). It reconnects by
//! itself after a lost connection (a PostgreSQL restart), with backoff, until the pool is
//! closed. The finishers keep a slow poll as the safety net behind it.

use sqlx::postgres::{PgListener, PgPool};
use std::time::Duration;

/// The channel the trigger notifies (its payload is the job scan's id).
pub const CHANNEL: &str = "portscope_jobs";

/// The trigger (function and trigger, each idempotent): `NOTIFY` [`CHANNEL`] when a job
/// scan's chunk count or status changes.
pub(super) const TRIGGER_SQL: [&str; 2] = [
    "CREATE OR REPLACE FUNCTION portscope_notify_jobs() RETURNS trigger AS $$
     BEGIN PERFORM pg_notify('portscope_jobs', NEW.id); RETURN NULL; END;
     $$ LANGUAGE plpgsql",
    "CREATE OR REPLACE TRIGGER portscope_notify_jobs AFTER UPDATE OF chunks_done, status
     ON job_scans FOR EACH ROW
     WHEN (OLD.chunks_done IS DISTINCT FROM NEW.chunks_done OR OLD.status IS DISTINCT FROM NEW.status)
     EXECUTE FUNCTION portscope_notify_jobs()",
];

/// Longest pause between two subscription attempts while the server is away.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Listens on [`CHANNEL`] through one connection of `pool` (held while listening) and
/// calls `wake` for every notification and after every (re)subscription; returns when the
/// pool is closed.
pub async fn listen(pool: PgPool, wake: impl Fn()) {
    let mut pause = Duration::from_millis(100);
    let mut away = false;
    loop {
        if pool.is_closed() {
            return;
        }
        match subscribe(&pool).await {
            Ok(mut listener) => {
                tracing::info!(channel = CHANNEL, "listening for job notifications");
                pause = Duration::from_millis(100);
                away = false;
                // Whatever changed while nobody listened.
                wake();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake(),
                        Ok(None) => break,
                        Err(_) if pool.is_closed() => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "job notifications: connection error");
                            break;
                        }
                    }
                }
                tracing::warn!("job notifications: connection lost; subscribing again");
            }
            Err(_) if pool.is_closed() => return,
            Err(e) => {
                if !away {
                    tracing::warn!(error = %e, "job notifications: cannot subscribe; retrying");
                    away = true;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// A listener on [`CHANNEL`] that reports a lost connection (`Ok(None)`) instead of
/// reconnecting on its own: [`listen`] reconnects, then wakes.
async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
