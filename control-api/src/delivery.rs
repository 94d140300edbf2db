//! Monitor webhook deliveries as durable jobs on the job queue (issue 8): a [`DeliveryJob`]
//! is pushed to apalis-sql's storage of the API's own database (namespace
//! [`NAMESPACE`], beside the chunk jobs) and run by a delivery worker inside every API
//! process. A process that dies mid-delivery leaves its job `Running`; it is re-enqueued
//! when a delivery worker starts (apalis re-enqueues the `Running` jobs of silent workers
//! at start) or, on PostgreSQL, by any live node once the dead one has been silent for the
//! orphan timeout, and delivered again with the same id ([`crate::webhook::delivery_id`]).
//! At-least-once: receivers dedupe on the id.
//!
//! A job runs the whole [`Webhooks::deliver`] (its attempts and backoff), then marks the
//! alerts notified when it was delivered; only a database error fails the job (the queue
//! retries it).

use crate::jobs::queue::run_queue_worker;
use crate::jobs::queue::QueueTiming;
use crate::store::jobs::migrate_queue;
use crate::store::{Db, MStore};
use crate::webhook::Webhooks;
use apalis::prelude::{Data, Error as QueueError, Storage};
use apalis_sql::context::SqlContext;
use apalis_sql::postgres::PostgresStorage;
use apalis_sql::sqlite::SqliteStorage;
use apalis_sql::Config;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The queue's namespace (apalis `job_type`) for deliveries.
pub const NAMESPACE: &str = "portscope::delivery";

/// How often the queue runs a delivery job that failed on the database.
const MAX_ATTEMPTS: i32 = 5;

/// One monitor webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// Its id (the `X-Portscope-Delivery` header).
    pub id: String,
    /// Where to.
    pub url: String,
    /// The JSON body, as built when the scan completed.
    pub body: String,
    /// The alerts it reports (marked notified once delivered).
    pub alerts: Vec<String>,
}

#[derive(Debug, Clone)]
enum Queue {
    Sqlite(SqliteStorage<DeliveryJob>),
    Postgres(PostgresStorage<DeliveryJob>),
}

#[derive(Debug)]
struct Ctx {
    webhooks: Webhooks,
    store: MStore,
}

/// The delivery queue of one API process and its worker.
#[derive(Debug)]
pub struct Deliveries {
    queue: Queue,
    stop: CancellationToken,
    worker: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Deliveries {
    /// Opens the queue on the API's database `db`, runs the queue migrations
    /// and starts this process's delivery worker.
    pub async fn start(
        db: &Db,
        webhooks: Webhooks,
        store: MStore,
    ) -> Result<Arc<Deliveries>, sqlx::Error> {
        let timing = QueueTiming::for_backend(db.backend());
        let config = Config::new(NAMESPACE)
            .set_keep_alive(timing.keep_alive)
            .set_reenqueue_orphaned_after(timing.orphaned_after)
            .set_poll_interval(timing.poll)
            .set_buffer_size(4);
        migrate_queue(db).await?;
        // The store's pools already run PostgreSQL sessions in UTC, as apalis needs.
        let queue = match db {
            Db::Sqlite(pool) => Queue::Sqlite(SqliteStorage::new_with_config(pool.clone(), config)),
            Db::Postgres(pool) => {
                Queue::Postgres(PostgresStorage::new_with_config(pool.clone(), config))
            }
        };
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx { webhooks, store });
        let id = format!(
            "api-deliveries-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let worker_stop = stop.clone();
        let q = queue.clone();
        let worker = tokio::spawn(async move {
            match q {
                Queue::Sqlite(s) => {
                    run_queue_worker!(s, &id, 4, ctx, handle, worker_stop, "deliveries")
                }
                Queue::Postgres(s) => {
                    run_queue_worker!(s, &id, 4, ctx, handle, worker_stop, "deliveries")
                }
            }
        });
        Ok(Arc::new(Deliveries {
            queue,
            stop,
            worker: tokio::sync::Mutex::new(Some(worker)),
        }))
    }

    /// Queues a delivery (durable once this returns).
    pub async fn push(&self, job: DeliveryJob) -> Result<(), sqlx::Error> {
        let mut ctx = SqlContext::new();
        ctx.set_max_attempts(MAX_ATTEMPTS);
        let req = apalis::prelude::Request::new_with_ctx(job, ctx);
        match self.queue.clone() {
            Queue::Sqlite(mut s) => s.push_request(req).await?,
            Queue::Postgres(mut s) => s.push_request(req).await?,
        };
        tracing::info!("monitor webhook queued");
        Ok(())
    }

    /// Stops the worker (a delivery in flight is abandoned and resumed by the next start).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(w) = self.worker.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), w).await;
        }
    }
}

/// The job handler apalis calls: delivered or not (after every attempt) ends the job.
async fn handle(job: DeliveryJob, ctx: Data<Arc<Ctx>>) -> Result<bool, QueueError> {
    let d = ctx
        .webhooks
        .deliver(&job.url, job.body.as_bytes(), &job.id, || {})
        .await;
    tracing::info!(url = %job.url, delivery = %job.id, delivered = d.delivered,
        attempts = d.attempts, "monitor webhook");
    if d.delivered {
        ctx.store.mark_notified(&job.alerts).await.map_err(|e| {
            tracing::error!(error = %e, "cannot record monitor delivery");
            QueueError::Failed(Arc::new(Box::new(e)))
        })?;
    }
    Ok(d.delivered)
}
