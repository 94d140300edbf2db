//! The engine conversation of the managed service (the self-scan service runs its scans
//! as chunk jobs, `crate::jobs`, and has left it): submit, connect and reconnect (submit
//! what was never sent, re-ask `Status` for the rest), the engine's events, finish, and the
//! grace period after which live scans fail with `engine_unavailable`. A service keeps only
//! what differs, behind [`Book`]: its rows, how it finishes a scan, what it does after a
//! failure.
//!
//! [`demux`] splits one engine connection between the managed service and the self-scan
//! chunk runs by scan id; [`reason`] is why a scan failed, as both services store it.

pub mod demux;
pub mod reason;

use crate::clock::Clock;
use crate::engine::{EngineClient, EngineError, EngineNotice};
use crate::util::lock;
use async_trait::async_trait;
use portscope_core::results::{PortResult, PortState};
use portscope_proto::{Event, Outcome, RejectCode, Request};
use reason::{EngineReason, FailReason};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where a live scan stands with the engine, for a (re)connect.
#[derive(Debug)]
pub enum Step {
    /// Never sent: this `Submit` is sent now.
    Unsent(Request),
    /// Sent: `Status` is re-asked, the engine replays progress, ports and the end.
    Submitted,
    /// The engine is done; the service's finishing (enrichment) is resumed.
    EngineDone,
}

/// A live scan.
#[derive(Debug)]
pub struct Live {
    /// Scan id.
    pub id: String,
    /// Where it stands.
    pub step: Step,
}

/// What a service keeps of its scans: the rows the conversation reads and writes, and the
/// service's own steps after the engine is done or a scan failed.
#[async_trait]
pub trait Book: Send + Sync + 'static {
    /// What the logs call these scans (`scan`, `managed scan`).
    const KIND: &'static str;

    /// The conversation's shared parts.
    fn lifecycle(&self) -> &Lifecycle;

    /// Live scans (queued or running, not finished).
    async fn live(&self) -> Result<Vec<Live>, sqlx::Error>;

    /// The engine has the scan (sent, or it answered `duplicate`).
    async fn mark_submitted(&self, id: &str) -> Result<(), sqlx::Error>;

    /// `Accepted` (`chunks_complete` `None`) or `Progress`.
    async fn progress(
        &self,
        id: &str,
        queue_position: u32,
        chunks_complete: Option<u32>,
        total_chunks: u32,
    ) -> Result<(), sqlx::Error>;

    /// The open and filtered ports of one chunk (never empty), for a scan still live.
    async fn ports(&self, id: &str, results: &[&PortResult]) -> Result<(), sqlx::Error>;

    /// The engine completed the scan: records it; `true` when the service should finish it.
    async fn engine_done(&self, id: &str, duration_ms: u64) -> Result<bool, sqlx::Error>;

    /// Finishes a scan the engine completed (runs as a task, once per scan at a time).
    async fn finish(self: Arc<Self>, id: String, duration_ms: u64) -> Result<(), sqlx::Error>;

    /// Fails a live scan; `true` when it was live (and is failed now).
    async fn fail(&self, id: &str, reason: &FailReason) -> Result<bool, sqlx::Error>;

    /// After a scan failed (for example, webhooks).
    fn failed(self: Arc<Self>, _id: String) {}

    /// The engine link went up or down (for example, a gauge).
    fn link_changed(&self, _connected: bool) {}
}

/// The shared parts of the conversation: the engine, the link's state, the submit lock,
/// and the background tasks.
#[derive(Debug)]
pub struct Lifecycle {
    engine: Arc<dyn EngineClient>,
    clock: Arc<dyn Clock>,
    grace_ms: u64,
    /// Unix ms since when the engine has been unreachable (`None` while connected).
    down_since: Mutex<Option<u64>>,
    /// Serialises a service's checks, insert and `Submit` with the (re)connect replay.
    submit_lock: tokio::sync::Mutex<()>,
    /// Scans being finished (no double work on replays).
    finishing: Mutex<HashSet<String>>,
    /// Last `created_at_ms` handed out (strictly increasing, orders scans of one ms).
    last_created: AtomicI64,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Lifecycle {
    /// The conversation over `engine`; live scans fail once it has been unreachable for
    /// `grace_ms`. Down until [`Lifecycle::start`] sees it connected.
    pub fn new(engine: Arc<dyn EngineClient>, clock: Arc<dyn Clock>, grace_ms: u64) -> Self {
        let now = clock.now_ms();
        Lifecycle {
            engine,
            clock,
            grace_ms,
            down_since: Mutex::new(Some(now)),
            submit_lock: tokio::sync::Mutex::new(()),
            finishing: Mutex::new(HashSet::new()),
            last_created: AtomicI64::new(0),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Replays live scans when the engine is connected already, then follows its notices
    /// in a task.
    pub async fn start<B: Book>(book: &Arc<B>) {
        let lc = book.lifecycle();
        if lc.engine.is_connected() {
            on_connected(book).await;
        }
        let me = book.clone();
        lc.spawn(async move {
            while let Some(n) = me.lifecycle().engine.recv().await {
                handle(&me, n).await;
            }
        });
    }

    /// Runs `f` every `period` (not at all for a zero period) until shutdown.
    pub fn every<F, Fut>(&self, period: Duration, f: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if period.is_zero() {
            return;
        }
        self.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                f().await;
            }
        });
    }

    /// Runs `fut` as a background task that shutdown cancels and waits for.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Stops every background task and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether the engine is connected now (as last seen).
    pub fn connected(&self) -> bool {
        lock(&self.down_since).is_none()
    }

    /// Whether the engine has been unreachable for longer than the grace period.
    pub fn engine_gone(&self) -> bool {
        lock(&self.down_since)
            .is_some_and(|since| self.clock.now_ms().saturating_sub(since) >= self.grace_ms)
    }

    /// Held while a service checks, inserts and submits a new scan.
    pub async fn submit_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.submit_lock.lock().await
    }

    /// A `created_at_ms` for a new scan: now, or one more than the last one handed out.
    pub fn next_created_ms(&self) -> i64 {
        let now_ms = self.clock.now_ms() as i64;
        let prev = self
            .last_created
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_ms.max(last + 1))
            })
            .unwrap_or(now_ms);
        now_ms.max(prev + 1)
    }

    /// Tells the engine to stop a scan it has.
    pub async fn cancel(&self, id: &str) {
        if let Err(e) = self
            .engine
            .send(Request::Cancel { id: id.to_string() })
            .await
        {
            tracing::warn!(error = %e, %id, "cancel not sent to the engine");
        }
    }

    /// Fails every live scan the engine has not completed with `engine_unavailable` once
    /// the engine has been gone past the grace period; `true` when it has.
    pub async fn fail_if_gone<B: Book>(book: &Arc<B>) -> bool {
        if !book.lifecycle().engine_gone() {
            return false;
        }
        match book.live().await {
            Ok(rows) => {
                for r in rows
                    .into_iter()
                    .filter(|r| !matches!(r.step, Step::EngineDone))
                {
                    match book.fail(&r.id, &FailReason::EngineUnavailable).await {
                        Ok(true) => {
                            tracing::warn!(kind = B::KIND, id = %r.id, "engine unreachable past grace; scan failed");
                            book.clone().failed(r.id);
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(kind = B::KIND, error = %e, "cannot fail scan"),
                    }
                }
            }
            Err(e) => tracing::error!(kind = B::KIND, error = %e, "cannot list live scans"),
        }
        true
    }

    /// Finishes `id` in a task, unless it is being finished already.
    pub fn spawn_finish<B: Book>(book: &Arc<B>, id: String, duration_ms: u64) {
        let lc = book.lifecycle();
        if !lock(&lc.finishing).insert(id.clone()) {
            return;
        }
        let me = book.clone();
        lc.spawn(async move {
            if let Err(e) = me.clone().finish(id.clone(), duration_ms).await {
                tracing::error!(kind = B::KIND, error = %e, %id, "cannot complete scan");
            }
            lock(&me.lifecycle().finishing).remove(&id);
        });
    }

    async fn ask_status<B: Book>(&self, id: &str) {
        let req = Request::Status {
            id: Some(id.to_string()),
        };
        if let Err(e) = self.engine.send(req).await {
            tracing::warn!(kind = B::KIND, error = %e, %id, "status not sent");
        }
    }
}

/// Sends a `Submit`; false if the engine is not reachable now (sent on reconnect).
pub async fn send_submit<B: Book>(book: &B, id: &str, req: Request) -> bool {
    match book.lifecycle().engine.send(req).await {
        Ok(()) => {
            if let Err(e) = book.mark_submitted(id).await {
                tracing::error!(kind = B::KIND, error = %e, %id, "cannot mark scan submitted");
            }
            true
        }
        Err(EngineError::NotConnected) => false,
        Err(e) => {
            tracing::warn!(kind = B::KIND, error = %e, %id, "submit not sent; retrying on reconnect");
            false
        }
    }
}

async fn handle<B: Book>(book: &Arc<B>, n: EngineNotice) {
    let lc = book.lifecycle();
    match n {
        EngineNotice::Connected => on_connected(book).await,
        EngineNotice::Disconnected => {
            lock(&lc.down_since).get_or_insert(lc.clock.now_ms());
            book.link_changed(false);
        }
        EngineNotice::Event(e) => {
            if let Err(err) = on_event(book, e).await {
                tracing::error!(kind = B::KIND, error = %err, "engine event not recorded");
            }
        }
    }
}

/// (Re)connected: submit what was never sent, re-ask `Status` for the rest, resume
/// finishing what the engine completed.
async fn on_connected<B: Book>(book: &Arc<B>) {
    let lc = book.lifecycle();
    *lock(&lc.down_since) = None;
    book.link_changed(true);
    let _guard = lc.submit_lock.lock().await;
    let rows = match book.live().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(kind = B::KIND, error = %e, "cannot list live scans");
            return;
        }
    };
    for r in rows {
        match r.step {
            Step::EngineDone => Lifecycle::spawn_finish(book, r.id, 0),
            Step::Submitted => lc.ask_status::<B>(&r.id).await,
            Step::Unsent(req) => {
                send_submit(book.as_ref(), &r.id, req).await;
            }
        }
    }
}

async fn on_event<B: Book>(book: &Arc<B>, e: Event) -> Result<(), sqlx::Error> {
    let lc = book.lifecycle();
    match e {
        Event::Hello { engine, protocol } => {
            tracing::info!(%engine, protocol, "engine says hello");
        }
        Event::Accepted {
            id,
            queue_position,
            total_chunks,
        } => {
            book.progress(&id, queue_position, None, total_chunks)
                .await?;
        }
        Event::Rejected { id, code, message } => {
            tracing::warn!(kind = B::KIND, %id, %code, %message, "engine rejected a scan");
            if RejectCode::parse(&code) == Some(RejectCode::Duplicate) {
                // The engine already has this id (a submit sent just before a crash or
                // disconnect): attach to it instead.
                book.mark_submitted(&id).await?;
                lc.ask_status::<B>(&id).await;
            } else {
                let reason = FailReason::Rejected {
                    code: code.clone(),
                    message: message.clone(),
                };
                if book.fail(&id, &reason).await? {
                    book.clone().failed(id.clone());
                }
            }
        }
        Event::Progress {
            id,
            queue_position,
            chunks_complete,
            total_chunks,
        } => {
            book.progress(&id, queue_position, Some(chunks_complete), total_chunks)
                .await?;
        }
        Event::Ports { id, results, .. } => {
            let kept: Vec<&PortResult> = results
                .iter()
                .filter(|r| r.state != PortState::Closed)
                .collect();
            if !kept.is_empty() {
                book.ports(&id, &kept).await?;
            }
        }
        Event::Finished {
            id,
            outcome,
            duration_ms,
            ..
        } => match outcome {
            Outcome::Complete => {
                if book.engine_done(&id, duration_ms).await? {
                    Lifecycle::spawn_finish(book, id.clone(), duration_ms);
                }
            }
            Outcome::Failed(reason) => {
                let reason = FailReason::Engine(EngineReason::parse(&reason));
                if book.fail(&id, &reason).await? {
                    tracing::info!(kind = B::KIND, %id, %reason, "scan failed");
                    book.clone().failed(id.clone());
                }
            }
        },
        Event::Status(s) => tracing::debug!(?s, "engine status"),
        Event::Error { message } => tracing::warn!(%message, "engine reported an error"),
    }
    Ok(())
}
