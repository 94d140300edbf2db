//! The engine: starts the send and receive threads over a transport, enforces the target
//! policy, assigns each scan a slot (its source-port block, unless the plan fixes one source
//! port), fresh cookie key and order seed.

use crate::clock::{Clock, SystemClock};
use crate::plan::ScanPlan;
use crate::recv_loop::{RecvCtl, RecvCtlTx, RecvLoop};
use crate::scan::{ScanHandle, ScanShared};
use crate::send_loop::{SendCtl, SendLoop};
use crate::slots::Slots;
use crate::stats::EngineStats;
use crossbeam_channel::Sender;
use portscope_core::classify::{ScanSpace, SpaceError, SLOTS};
use portscope_core::cookie::CookieKey;
use portscope_core::policy::{PolicyError, TargetPolicy};
use portscope_core::results::PortResult;
use portscope_transport::{PacketSink, PacketSource};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Global packets-per-second ceiling shared by all scans.
    pub max_rate: u64,
    /// Packets per send/receive batch.
    pub batch: usize,
    /// At most this many scans at once (<= the number of source-port slots).
    pub max_scans: usize,
    /// Which targets may be probed.
    pub policy: TargetPolicy,
    /// IPv4 TTL / IPv6 hop limit of every probe (the CLI's `--ttl`).
    pub probe_ttl: u8,
    /// Pin the send thread to this CPU (`None`: the scheduler decides).
    pub send_cpu: Option<usize>,
    /// Pin the receive thread to this CPU.
    pub recv_cpu: Option<usize>,
    /// CPUs for the extra send threads, in turn (`None` or none listed: unpinned); their
    /// sinks are given to [`Engine::start_sending_on`].
    pub wire_cpus: Vec<Option<usize>>,
}

/// CPUs for the send and receive threads: the given ones, and for each one not given a
/// CPU this process may use that the other thread does not have (the first two allowed
/// CPUs when neither is given). `None` where there is no such CPU (one-CPU machines).
pub fn pick_cpus(send: Option<usize>, recv: Option<usize>) -> (Option<usize>, Option<usize>) {
    let allowed = allowed_cpus();
    if allowed.len() < 2 {
        return (send, recv);
    }
    let other = |taken: Option<usize>| allowed.iter().copied().find(|c| Some(*c) != taken);
    let send = send.or_else(|| other(recv));
    let recv = recv.or_else(|| other(send));
    (send, recv)
}

/// Send threads when the user names none: two where this process may use two CPUs or
/// more (a one-host full-range scan in the lab: 1.3-1.6x the probes per second of one
/// thread, ARCHITECTURE.md), else one. More are an option (`--send-threads`), not measured.
pub fn default_send_threads() -> usize {
    allowed_cpus().len().clamp(1, 2)
}

/// CPUs for the `threads - 1` extra send threads: the CPUs this process may use other than
/// the send thread's, in turn (on two CPUs, the receive thread's, which is mostly idle).
/// `None` each where there is no such CPU.
pub fn wire_cpus(send: Option<usize>, threads: usize) -> Vec<Option<usize>> {
    let others: Vec<usize> = allowed_cpus()
        .into_iter()
        .filter(|c| Some(*c) != send)
        .collect();
    (0..threads.saturating_sub(1))
        .map(|i| (!others.is_empty()).then(|| others[i % others.len()]))
        .collect()
}

/// The CPUs this process may run on (none known off Linux, or if the kernel will not say).
fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    return portscope_transport::sys::allowed_cpus().unwrap_or_default();
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Pins the calling thread to `cpu`, if given; a refusal is logged, not fatal.
fn pin(cpu: Option<usize>, thread: &str) {
    let Some(cpu) = cpu else { return };
    #[cfg(target_os = "linux")]
    if let Err(e) = portscope_transport::sys::pin_current_thread(cpu) {
        tracing::warn!(thread, cpu, error = %e, "could not pin thread");
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!(thread, cpu, "CPU pinning is only supported on Linux");
}

/// Spawns the thread `name` pinned to `cpu` (if any), running `f`.
pub(crate) fn spawn_pinned(
    name: &str,
    cpu: Option<usize>,
    thread: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            pin(cpu, thread);
            f()
        })
        .unwrap_or_else(|e| panic!("spawn {thread} thread: {e}"))
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_rate: 100_000,
            batch: 64,
            max_scans: 64,
            policy: TargetPolicy::default_deny(),
            probe_ttl: portscope_core::probe::PROBE_TTL,
            send_cpu: None,
            recv_cpu: None,
            wire_cpus: Vec::new(),
        }
    }
}

/// Why a scan was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A target is refused by policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// All scan slots are busy.
    #[error("the engine is running its maximum of {0} scans; try again when one finishes")]
    Busy(usize),
    /// The plan does not fit a scan space.
    #[error(transparent)]
    Space(#[from] SpaceError),
}

/// A running engine. Dropping it stops both threads.
#[derive(Debug)]
pub struct Engine {
    send_ctl: Sender<SendCtl>,
    recv_ctl: RecvCtlTx,
    slots: Arc<Slots>,
    clock: Arc<dyn Clock>,
    stats: Arc<EngineStats>,
    shutdown: Arc<AtomicBool>,
    next_id: AtomicU64,
    config: EngineConfig,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts the send and receive threads over `sink` / `source`.
    pub fn start(
        sink: Box<dyn PacketSink>,
        source: Box<dyn PacketSource>,
        config: EngineConfig,
    ) -> Engine {
        Self::start_with_clock(sink, source, config, Arc::new(SystemClock::new()))
    }

    /// [`Engine::start`] with one send thread per sink: the first sink's thread decides
    /// what to send, and the others (pinned to `config.wire_cpus`) help put it on the wire.
    ///
    /// # Panics
    /// If `sinks` is empty.
    pub fn start_sending_on(
        sinks: Vec<Box<dyn PacketSink>>,
        source: Box<dyn PacketSource>,
        config: EngineConfig,
    ) -> Engine {
        let mut sinks = sinks.into_iter();
        let sink = sinks.next().expect("the engine needs a sink to send on");
        let cpus = config
            .wire_cpus
            .iter()
            .copied()
            .chain(std::iter::repeat(None));
        let extra: Vec<_> = sinks.zip(cpus).collect();
        Self::start_inner(sink, extra, source, config, Arc::new(SystemClock::new()))
    }

    /// [`Engine::start`] on the given clock (a [`crate::SimClock`] in tests).
    pub fn start_with_clock(
        sink: Box<dyn PacketSink>,
        source: Box<dyn PacketSource>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Self::start_inner(sink, Vec::new(), source, config, clock)
    }

    fn start_inner(
        sink: Box<dyn PacketSink>,
        extra: Vec<(Box<dyn PacketSink>, Option<usize>)>,
        source: Box<dyn PacketSource>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        let stats = Arc::new(EngineStats::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let slots = Arc::new(Slots::new(usize::from(SLOTS)));
        let (send_ctl, send_rx) = crossbeam_channel::unbounded();
        let (recv_tx, recv_rx) = crossbeam_channel::unbounded();
        let recv_ctl = RecvCtlTx::new(recv_tx, source.waker());
        let receiver = RecvLoop {
            source,
            ctl: recv_rx,
            stats: Arc::clone(&stats),
            clock: Arc::clone(&clock),
            shutdown: Arc::clone(&shutdown),
            slots: Arc::clone(&slots),
            batch: config.batch.max(64) * 4,
        };
        let sender = SendLoop {
            sink,
            ctl: send_rx,
            recv_ctl: recv_ctl.clone(),
            stats: Arc::clone(&stats),
            clock: Arc::clone(&clock),
            shutdown: Arc::clone(&shutdown),
            max_rate: config.max_rate,
            batch: config.batch,
            probe_ttl: config.probe_ttl,
            extra,
        };
        let threads = vec![
            spawn_pinned("ps-recv", config.recv_cpu, "receive", move || {
                receiver.run()
            }),
            spawn_pinned("ps-send", config.send_cpu, "send", move || sender.run()),
        ];
        Engine {
            send_ctl,
            recv_ctl,
            slots,
            clock,
            stats,
            shutdown,
            next_id: AtomicU64::new(1),
            config,
            threads,
        }
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The policy this engine enforces.
    pub fn policy(&self) -> &TargetPolicy {
        &self.config.policy
    }

    /// Starts a scan. The target policy is checked here, before any packet goes out.
    pub fn submit(&self, plan: ScanPlan) -> Result<ScanHandle, SubmitError> {
        self.submit_preseeded(plan, Vec::new())
    }

    /// Starts a resumed scan: `answered` are results an interrupted run already got. Their
    /// pairs are never probed again and the handle reports them first (see `scan.rs`).
    pub fn submit_preseeded(
        &self,
        plan: ScanPlan,
        answered: Vec<PortResult>,
    ) -> Result<ScanHandle, SubmitError> {
        self.config.policy.check(&plan.targets)?;
        let limit = self.config.max_scans.min(usize::from(SLOTS));
        let slot = self.slots.take(limit).ok_or(SubmitError::Busy(limit))?;
        let mut rng = rand::rng();
        let key = CookieKey::from_bytes(rng.random());
        let seed: u64 = rng.random();
        let space = match ScanSpace::new(key, seed, plan.targets, plan.ports, plan.sources, slot) {
            Ok(s) => s.with_source_port(plan.source_port),
            Err(e) => {
                self.slots.free(slot);
                return Err(e.into());
            }
        };
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded();
        // Plan groups live in their own half of the key space, apart from scan ids.
        let group = plan.group.map_or(id, |g| g | (1 << 63));
        let shared = Arc::new(ScanShared::new(
            id,
            group,
            space,
            plan.retries,
            plan.rate,
            plan.wait,
            tx,
        ));
        let answered = shared.preseed(answered);
        // Receiver first, and wait until it is live, so no early reply finds the slot empty.
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        self.recv_ctl
            .send(RecvCtl::Add(Arc::clone(&shared), ack_tx));
        let _ = ack_rx.recv_timeout(std::time::Duration::from_secs(1));
        let _ = self.send_ctl.send(SendCtl::Add(Arc::clone(&shared)));
        Ok(ScanHandle::new(shared, rx, Arc::clone(&self.clock)).with_preseeded(answered))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown.store(true, Relaxed);
        self.recv_ctl.wake();
        // Hang up the send thread's control channel: an idle send thread blocks on it for up
        // to 50 ms at a time, and the shutdown flag alone would leave every one-shot scan
        // waiting out that block before the process can exit.
        drop(std::mem::replace(
            &mut self.send_ctl,
            crossbeam_channel::bounded(0).0,
        ));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
