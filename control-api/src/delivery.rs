//! Deliveries as durable jobs on the job queue (issue 8): monitor webhooks and e-mails and
//! self-scan callbacks. A [`DeliveryJob`]
//! is written into the job queue of the API's own database (namespace [`NAMESPACE`], beside
//! the chunk jobs) by the transaction that makes it due, and run by a delivery worker inside
//! every API process. A process that dies mid-delivery leaves its job claimed; any live
//! delivery worker gives it back once the dead one has been silent for the orphan timeout
//! (a few seconds, `jobs::queue::QueueTiming`), and it is delivered again with the same id
//! ([`crate::webhook::delivery_id`]).
//! At-least-once: receivers dedupe on the id.
//!
//! A job runs the whole [`Webhooks::deliver`] (its attempts and backoff), then records the
//! outcome: a monitor webhook marks its alerts notified when delivered; a self-scan callback
//! (queued by the transaction that made its scan final, `store::callbacks`) POSTs the scan's
//! GET body, built when delivered, and records `delivered` or `failed` on its callback row
//! (a job whose callback is no longer `queued` delivers nothing: it ran before a crash).
//! A monitor e-mail (`email`, queued with its scan's completion like the webhook) is sent
//! once per run through the configured mailer (`managed::mail`); an SMTP failure fails the
//! run and the queue runs it again, up to [`MAX_ATTEMPTS`] in all. Otherwise only a database
//! error fails the job (the queue retries it).

use crate::jobs::queue::{run_queue_worker, Queue, QueueTiming};
use crate::managed::mail::{self, Mailer, MonitorEmail};
use crate::metrics::Metrics;
use crate::store::callbacks::CallbackState;
use crate::store::jobs::QueueSpec;
use crate::store::{Db, MStore, Store};
use crate::webhook::{delivery_id, Webhooks};
use apalis::prelude::{Attempt, BoxDynError, Data};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The queue's namespace (apalis `job_type`) for deliveries.
pub const NAMESPACE: &str = "portscope::delivery";

/// How often the queue runs a delivery job that failed (on the database, or an e-mail's SMTP).
pub const MAX_ATTEMPTS: i32 = 5;

/// One delivery: a monitor webhook, a self-scan callback (`callback_of`) or a monitor e-mail
/// (`email`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// Its id (the `X-Portscope-Delivery` header).
    pub id: String,
    /// Where to.
    pub url: String,
    /// A monitor webhook's JSON body, as built when the scan completed (empty for a
    /// callback).
    #[serde(default)]
    pub body: String,
    /// The alerts it reports (marked notified once delivered).
    #[serde(default)]
    pub alerts: Vec<String>,
    /// A self-scan callback: the scan whose GET body it delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_of: Option<String>,
    /// A monitor e-mail (`url` is then `mailto:` its recipient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<MonitorEmail>,
}

impl DeliveryJob {
    /// The delivery of self-scan `scan`'s callback to `url`.
    pub fn callback(scan: &str, url: &str) -> DeliveryJob {
        DeliveryJob {
            id: delivery_id("callback", scan, url),
            url: url.to_owned(),
            body: String::new(),
            alerts: Vec::new(),
            callback_of: Some(scan.to_owned()),
            email: None,
        }
    }

    /// The delivery of managed scan `scan`'s monitor e-mail.
    pub fn email(scan: &str, mail: MonitorEmail) -> DeliveryJob {
        let url = format!("mailto:{}", mail.to);
        DeliveryJob {
            id: delivery_id("monitor", scan, &url),
            url,
            body: String::new(),
            alerts: Vec::new(),
            callback_of: None,
            email: Some(mail),
        }
    }
}

/// What the store writes into the queue's table for a delivery job.
pub fn queue_spec() -> QueueSpec<'static> {
    QueueSpec {
        job_type: NAMESPACE,
        max_attempts: MAX_ATTEMPTS,
    }
}

#[derive(Debug)]
struct Ctx {
    webhooks: Webhooks,
    store: MStore,
    scans: Store,
    metrics: Metrics,
    mailer: Option<Arc<dyn Mailer>>,
}

/// The delivery queue of one API process and its worker.
#[derive(Debug)]
pub struct Deliveries {
    stop: CancellationToken,
    worker: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Deliveries {
    /// Opens the queue on the API's database `db`, runs the queue migrations
    /// and starts this process's delivery worker (`metrics` counts callback outcomes;
    /// `mailer` sends monitor e-mails).
    pub async fn start(
        db: &Db,
        webhooks: Webhooks,
        store: MStore,
        metrics: Metrics,
        mailer: Option<Arc<dyn Mailer>>,
    ) -> Result<Arc<Deliveries>, sqlx::Error> {
        let timing = QueueTiming::for_backend(db.backend());
        let queue: Queue<DeliveryJob> = Queue::open(db, NAMESPACE, timing, 4).await?;
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            webhooks,
            scans: Store::new(db.clone()),
            store,
            metrics,
            mailer,
        });
        let id = format!(
            "api-deliveries-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let worker_stop = stop.clone();
        let worker = tokio::spawn(async move {
            let never = crate::jobs::queue::Pause::default();
            run_queue_worker!(queue, &id, 4, never, ctx, handle, worker_stop, "deliveries")
        });
        Ok(Arc::new(Deliveries {
            stop,
            worker: tokio::sync::Mutex::new(Some(worker)),
        }))
    }

    /// Stops the worker (a delivery in flight is abandoned and resumed by the next start).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(w) = self.worker.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), w).await;
        }
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> BoxDynError {
    Box::new(e)
}

/// The job handler apalis calls: a webhook delivered or not (after every attempt) ends the
/// job; an e-mail not sent fails this run (`attempt`) of it.
async fn handle(
    job: DeliveryJob,
    ctx: Data<Arc<Ctx>>,
    attempt: Attempt,
) -> Result<bool, BoxDynError> {
    if let Some(email) = &job.email {
        let run = mail::Run {
            delivery: &job.id,
            attempt: attempt.current(),
            attempts: MAX_ATTEMPTS as usize,
            backoff: ctx.webhooks.backoff,
        };
        return mail::send_monitor_email(ctx.mailer.as_ref(), email, run)
            .await
            .map(|()| true)
            .map_err(failed);
    }
    if let Some(scan) = &job.callback_of {
        return deliver_callback(&job, scan, &ctx).await.map_err(|e| {
            tracing::error!(error = %e, %scan, "cannot deliver callback");
            failed(e)
        });
    }
    let d = ctx
        .webhooks
        .deliver(&job.url, job.body.as_bytes(), &job.id, || {})
        .await;
    tracing::info!(url = %job.url, delivery = %job.id, delivered = d.delivered,
        attempts = d.attempts, "monitor webhook");
    if d.delivered {
        ctx.store.mark_notified(&job.alerts).await.map_err(|e| {
            tracing::error!(error = %e, "cannot record monitor delivery");
            failed(e)
        })?;
    }
    Ok(d.delivered)
}

/// A self-scan callback: the scan's GET body to its URL, the outcome on its callback row.
async fn deliver_callback(job: &DeliveryJob, scan: &str, ctx: &Ctx) -> Result<bool, sqlx::Error> {
    let store = &ctx.scans;
    if store.callback_state(scan, &job.url).await? != Some(CallbackState::Queued) {
        return Ok(false); // recorded by an earlier run, or expired with its scan
    }
    let Some(row) = store.get(scan).await? else {
        return Ok(false);
    };
    let body = serde_json::to_vec(&crate::selfscan::service::view_of(store, &row).await?)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let metrics = ctx.metrics.clone();
    let d = ctx
        .webhooks
        .deliver(&job.url, &body, &job.id, || metrics.webhook("retried"))
        .await;
    let state = if d.delivered {
        CallbackState::Delivered
    } else {
        CallbackState::Failed
    };
    ctx.metrics.webhook(state.as_str());
    tracing::info!(%scan, url = %job.url, state = state.as_str(), attempts = d.attempts, "webhook");
    store
        .set_callback(scan, &job.url, state, d.attempts)
        .await?;
    Ok(d.delivered)
}
