//! One scan's shared state, and the handle its submitter reads events from.
//!
//! The send thread advances the scan (rounds, waits); the receive thread marks pairs
//! answered and emits observations; the [`ScanHandle`] turns observations into port results
//! and, once the engine has released the scan, reports every never-answered pair as
//! filtered / no-response, so each pair of a complete scan gets exactly one result.

use crate::clock::Clock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use portscope_core::classify::{Observation, ScanSpace, ROUNDS};
use portscope_core::results::{AnsweredSet, PortResult, PortState, Reason};
use portscope_core::retry::RetryPolicy;
use portscope_core::rtt::WaitBounds;
use portscope_core::Nanos;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every pair was probed through all rounds and has a state.
    Complete,
    /// Stopped early; only answered pairs were reported.
    Cancelled,
}

/// What a scan handle yields.
#[derive(Debug, Clone)]
pub enum ScanEvent {
    /// One pair's final state (each pair at most once).
    Port(PortResult),
    /// The scan is over; no more events follow.
    Finished(ScanSummary),
}

/// Live progress of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// (target x port) pairs.
    pub pairs: u64,
    /// Probes sent so far (all rounds).
    pub sent: u64,
    /// Pairs answered so far.
    pub answered: u64,
    /// Current send round (0 = first pass).
    pub round: u8,
    /// Rounds planned so far: 1 + retries for a fixed count; for adaptive retries 1 + the
    /// minimum, growing with the current round once the loss estimate asks for more.
    pub rounds: u8,
}

/// Final figures of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSummary {
    /// How it ended.
    pub outcome: Outcome,
    /// (target x port) pairs.
    pub pairs: u64,
    /// Open ports.
    pub open: u64,
    /// Closed ports.
    pub closed: u64,
    /// Filtered ports (ICMP or silent).
    pub filtered: u64,
    /// Pairs without a state (only when cancelled).
    pub unknown: u64,
    /// Probes sent, all rounds.
    pub sent: u64,
    /// Valid replies that repeated an answered pair.
    pub duplicates: u64,
    /// Rounds actually sent.
    pub rounds: u8,
    /// Estimated per-try loss (probe or reply), from the answers of the retry rounds;
    /// `None` when no retry round was judged.
    pub est_loss: Option<f64>,
    /// Time from submit to end (on the engine's clock).
    pub elapsed: Duration,
    /// Median RTT measured, if any.
    pub rtt_p50: Option<Duration>,
    /// 99th percentile RTT measured, if any.
    pub rtt_p99: Option<Duration>,
}

/// When probes at each send position were last sent, in which round: the receive thread
/// turns this into RTT samples. One entry per `2^shift` positions (at most 65,536 entries),
/// each `(micros << 8) | round`.
pub(crate) struct SendLog {
    shift: u32,
    entries: Box<[AtomicU64]>,
}

impl std::fmt::Debug for SendLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SendLog({} entries, shift {})",
            self.entries.len(),
            self.shift
        )
    }
}

impl SendLog {
    fn new(pairs: u64) -> Self {
        let bits = 64 - pairs.saturating_sub(1).leading_zeros();
        let shift = bits.saturating_sub(16);
        let n = (pairs >> shift) + 1;
        SendLog {
            shift,
            entries: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    /// Records that `pos` was sent in `round` at `now`. A chunk keeps the time of its first
    /// probe in the round, so RTT samples err on the long side, never below the truth.
    #[inline]
    pub(crate) fn record(&self, pos: u64, round: u8, now: Nanos) {
        let e = &self.entries[(pos >> self.shift) as usize];
        let first_in_chunk = pos & ((1u64 << self.shift) - 1) == 0;
        if first_in_chunk || (e.load(Relaxed) & 0xff) as u8 != round {
            e.store(((now.0 / 1_000) << 8) | u64::from(round), Relaxed);
        }
    }

    /// The round `pos` was last sent in (for a fixed source port, whose replies do not say;
    /// per entry, so with more than 65,536 pairs a neighbour's later round can stand in).
    #[inline]
    pub(crate) fn last_round(&self, pos: u64) -> u8 {
        let v = self.entries[(pos >> self.shift) as usize].load(Relaxed);
        if v == u64::MAX {
            0
        } else {
            (v & 0xff) as u8
        }
    }

    /// A time no earlier than `pos`'s send in `round`, which must not have been overwritten
    /// by a later round yet: its own entry when entries are per position, else the first
    /// send of the next entry's positions (a round sends positions in order), else
    /// `fallback` (the round's end).
    #[inline]
    pub(crate) fn sent_by(&self, pos: u64, round: u8, fallback: Nanos) -> Nanos {
        let at = if self.shift == 0 {
            pos
        } else {
            ((pos >> self.shift) + 1) << self.shift
        };
        if (at >> self.shift) as usize >= self.entries.len() {
            return fallback;
        }
        self.sent_at(at, round).unwrap_or(fallback)
    }

    /// The send time of `pos` if it was last sent in `round`.
    #[inline]
    pub(crate) fn sent_at(&self, pos: u64, round: u8) -> Option<Nanos> {
        let v = self.entries[(pos >> self.shift) as usize].load(Relaxed);
        (v != u64::MAX && (v & 0xff) as u8 == round).then(|| Nanos::from_micros(v >> 8))
    }
}

/// Messages on a scan's event channel (engine -> handle).
#[derive(Debug)]
pub(crate) enum Msg {
    /// The first valid replies of one receive batch, each with when the receive thread
    /// took it: one message per batch, not per reply, so the submitter wakes once for them.
    Ports(Vec<(Observation, Nanos)>),
    Ended(Outcome),
}

/// State shared by the engine threads and the handle.
#[derive(Debug)]
pub(crate) struct ScanShared {
    pub id: u64,
    /// Fair-share group (the plan's, or the scan's own id).
    pub group: u64,
    pub space: ScanSpace,
    pub answered: AnsweredSet,
    pub log: SendLog,
    pub retry: RetryPolicy,
    pub rate: u64,
    pub bounds: WaitBounds,
    /// The RTT-derived wait, published by the receive thread (ns).
    pub wait_ns: AtomicU64,
    pub rtt_p50_ns: AtomicU64,
    pub rtt_p99_ns: AtomicU64,
    pub sent: AtomicU64,
    /// First valid replies (= answered pairs).
    pub replies: AtomicU64,
    pub duplicates: AtomicU64,
    /// First valid replies per send round (which round's probe they answer).
    pub round_replies: [AtomicU64; ROUNDS as usize],
    pub round: AtomicU8,
    /// The latest per-try loss estimate in parts per million (`u64::MAX`: none yet).
    pub loss_ppm: AtomicU64,
    pub cancel: AtomicBool,
    pub events: Sender<Msg>,
}

impl ScanShared {
    pub(crate) fn new(
        id: u64,
        group: u64,
        space: ScanSpace,
        retry: RetryPolicy,
        rate: u64,
        bounds: WaitBounds,
        events: Sender<Msg>,
    ) -> Self {
        let pairs = space.pairs();
        ScanShared {
            id,
            group,
            answered: AnsweredSet::new(pairs),
            log: SendLog::new(pairs),
            space,
            retry,
            rate,
            bounds,
            wait_ns: AtomicU64::new(bounds.max.0),
            rtt_p50_ns: AtomicU64::new(0),
            rtt_p99_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            round_replies: std::array::from_fn(|_| AtomicU64::new(0)),
            round: AtomicU8::new(0),
            loss_ppm: AtomicU64::new(u64::MAX),
            cancel: AtomicBool::new(false),
            events,
        }
    }

    pub(crate) fn wait(&self) -> Nanos {
        Nanos(self.wait_ns.load(Relaxed))
    }

    pub(crate) fn set_loss(&self, loss: Option<f64>) {
        let ppm = loss.map_or(u64::MAX, |q| (q * 1e6).round() as u64);
        self.loss_ppm.store(ppm, Relaxed);
    }

    fn loss(&self) -> Option<f64> {
        let ppm = self.loss_ppm.load(Relaxed);
        (ppm != u64::MAX).then(|| ppm as f64 / 1e6)
    }
}

/// When the first and the last answer of one kind arrived (receive-thread clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerSpan {
    /// The first answer's arrival; `None` before any.
    pub first: Option<Nanos>,
    /// The last answer's arrival.
    pub last: Nanos,
}

impl AnswerSpan {
    fn note(&mut self, at: Nanos) {
        self.first.get_or_insert(at);
        self.last = self.last.max(at);
    }

    /// The time from the first to the last answer.
    pub fn length(&self) -> Nanos {
        self.first.map_or(Nanos(0), |f| self.last.since(f))
    }
}

/// The submitter's side of a scan: progress, cancel, and the event stream.
pub struct ScanHandle {
    shared: Arc<ScanShared>,
    rx: Receiver<Msg>,
    clock: Arc<dyn Clock>,
    started: Nanos,
    counts: [u64; 3],
    /// Answers by the send round whose probe they answer, by state (open, closed, filtered).
    by_round: [[u64; 3]; ROUNDS as usize],
    /// When the first and the last of those answers arrived, by round and state.
    spans: [[AnswerSpan; 3]; ROUNDS as usize],
    /// Set once the engine has released the scan: the outcome, and the next pair index to
    /// check for silence (`u64::MAX` when silent pairs are not reported).
    ended: Option<(Outcome, u64)>,
    done: bool,
    /// Results of a previous run of this scan (resume), reported before any new one.
    preseeded: VecDeque<PortResult>,
    /// The rest of the last `Msg::Ports` batch, reported before the channel is read again.
    inbox: std::vec::IntoIter<(Observation, Nanos)>,
}

impl std::fmt::Debug for ScanHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanHandle")
            .field("id", &self.shared.id)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl ScanHandle {
    pub(crate) fn new(shared: Arc<ScanShared>, rx: Receiver<Msg>, clock: Arc<dyn Clock>) -> Self {
        ScanHandle {
            shared,
            rx,
            started: clock.now(),
            clock,
            counts: [0; 3],
            by_round: [[0; 3]; ROUNDS as usize],
            spans: [[AnswerSpan::default(); 3]; ROUNDS as usize],
            ended: None,
            done: false,
            preseeded: VecDeque::new(),
            inbox: Vec::new().into_iter(),
        }
    }

    /// The engine-assigned scan id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Asks the engine to stop this scan; events already found are still delivered, then
    /// `Finished` with `Outcome::Cancelled`.
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Relaxed);
    }

    /// Live progress.
    pub fn progress(&self) -> Progress {
        let s = &self.shared;
        Progress {
            pairs: s.space.pairs(),
            sent: s.sent.load(Relaxed),
            answered: s.replies.load(Relaxed),
            round: s.round.load(Relaxed),
            rounds: match s.retry {
                RetryPolicy::Fixed(n) => n + 1,
                RetryPolicy::Adaptive { min, .. } => min.max(s.round.load(Relaxed)) + 1,
            },
        }
    }

    /// The result of a first valid reply taken at `at`, counted by round and state.
    fn observed(&mut self, o: &Observation, at: Nanos) -> ScanEvent {
        let r = self.shared.space.result(o);
        let i = self.count(&r);
        let round = usize::from(o.round).min(ROUNDS as usize - 1);
        self.by_round[round][i] += 1;
        self.spans[round][i].note(at);
        ScanEvent::Port(r)
    }

    fn count(&mut self, r: &PortResult) -> usize {
        let i = match r.state {
            PortState::Open => 0,
            PortState::Closed => 1,
            PortState::Filtered => 2,
        };
        self.counts[i] += 1;
        i
    }

    /// Answers so far by the send round whose probe they answer (index 0 = first round),
    /// each as `[open, closed, filtered]`. Silent pairs and a resumed scan's earlier answers
    /// are not counted. Shows targets that limit their answer rate: their answers come late.
    pub fn answers_by_round(&self) -> &[[u64; 3]] {
        &self.by_round
    }

    /// When the first and the last of [`ScanHandle::answers_by_round`]'s answers arrived,
    /// by the same round and state. A target that limits its answer rate lets `count / span`
    /// answers a second through in the first round, whatever the submitter's own timing.
    pub fn answer_spans_by_round(&self) -> &[[AnswerSpan; 3]] {
        &self.spans
    }

    /// The next event, waiting at most `timeout`. `None` on timeout or after `Finished`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<ScanEvent> {
        if self.done {
            return None;
        }
        if let Some(r) = self.preseeded.pop_front() {
            self.count(&r);
            return Some(ScanEvent::Port(r));
        }
        if let Some((o, at)) = self.inbox.next() {
            return Some(self.observed(&o, at));
        }
        if let Some((outcome, next)) = &mut self.ended {
            let pairs = self.shared.space.pairs();
            while *next < pairs {
                let pair = *next;
                *next += 1;
                if !self.shared.answered.contains(pair) {
                    let r = self.shared.space.silent_result(pair);
                    self.count(&r);
                    return Some(ScanEvent::Port(r));
                }
            }
            let outcome = *outcome;
            self.done = true;
            return Some(ScanEvent::Finished(self.summary(outcome)));
        }
        // A zero timeout is a poll: no clock read.
        let msg = if timeout.is_zero() {
            self.rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            self.rx.recv_timeout(timeout)
        };
        match msg {
            Ok(Msg::Ports(batch)) => {
                self.inbox = batch.into_iter();
                // Never empty (the receive thread sends only batches with replies); if it
                // were, this is a poll that found nothing.
                let (o, at) = self.inbox.next()?;
                Some(self.observed(&o, at))
            }
            Ok(Msg::Ended(outcome)) => {
                let first = match outcome {
                    Outcome::Complete => 0,
                    Outcome::Cancelled => u64::MAX,
                };
                self.ended = Some((outcome, first));
                self.next_event(timeout)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The engine went away without ending the scan: report it as cancelled.
                self.ended = Some((Outcome::Cancelled, u64::MAX));
                self.next_event(timeout)
            }
        }
    }

    fn summary(&self, outcome: Outcome) -> ScanSummary {
        let s = &self.shared;
        let [open, closed, filtered] = self.counts;
        let ns = |v: u64| (v > 0).then(|| Duration::from_nanos(v));
        ScanSummary {
            outcome,
            pairs: s.space.pairs(),
            open,
            closed,
            filtered,
            unknown: s.space.pairs() - open - closed - filtered,
            sent: s.sent.load(Relaxed),
            duplicates: s.duplicates.load(Relaxed),
            rounds: s.round.load(Relaxed) + 1,
            est_loss: s.loss(),
            elapsed: self.clock.now().since(self.started).as_duration(),
            rtt_p50: ns(s.rtt_p50_ns.load(Relaxed)),
            rtt_p99: ns(s.rtt_p99_ns.load(Relaxed)),
        }
    }
}

impl Iterator for ScanHandle {
    type Item = ScanEvent;

    /// Blocks until the next event; `None` after `Finished`.
    fn next(&mut self) -> Option<ScanEvent> {
        while !self.done {
            if let Some(e) = self.next_event(Duration::from_millis(100)) {
                return Some(e);
            }
        }
        None
    }
}

// --- Pre-answered pairs: the hook for resumed scans -------------------------------------
//
// A resumed scan is submitted with the results an interrupted run already got. Before any
// probe goes out their pairs are marked answered (the send thread skips answered pairs, and
// a late reply to one counts as a duplicate), and the handle reports them first, so the
// resumed scan's events are exactly those of one uninterrupted scan.

impl ScanShared {
    /// Marks the pairs of `results` answered and returns the results that belong to this
    /// scan, each pair once. Silent (`no-response`) results are dropped: those pairs are
    /// probed again.
    pub(crate) fn preseed(&self, results: Vec<PortResult>) -> Vec<PortResult> {
        let (targets, ports) = (self.space.targets(), self.space.ports());
        let kept: Vec<PortResult> = results
            .into_iter()
            .filter(|r| {
                let (Some(t), Some(p)) = (targets.index_of(r.ip), ports.index_of(r.port)) else {
                    return false;
                };
                r.reason != Reason::NoResponse && self.answered.insert(t * ports.len() + p)
            })
            .collect();
        self.replies.fetch_add(kept.len() as u64, Relaxed);
        kept
    }
}

impl ScanHandle {
    /// Queues a previous run's results to be reported before any new one.
    pub(crate) fn with_preseeded(mut self, results: Vec<PortResult>) -> Self {
        self.preseeded = results.into();
        self
    }
}

/// For tests: the space of a one-host lab scan, 198.18.0.1 to 198.18.0.2 on `ports`, with
/// cookie key `[key; 16]`.
#[cfg(test)]
pub(crate) fn lab_space(key: u8, ports: &str) -> ScanSpace {
    use portscope_core::classify::Sources;
    use portscope_core::cookie::CookieKey;
    use portscope_core::targets::{parse_target, PortSet, TargetSet};
    let targets = TargetSet::from_ranges(&[parse_target("198.18.0.2").unwrap()], &[]).unwrap();
    let sources = Sources {
        v4: Some("198.18.0.1".parse().unwrap()),
        v6: None,
    };
    ScanSpace::new(
        CookieKey::from_bytes([key; 16]),
        1,
        targets,
        PortSet::parse(ports).unwrap(),
        sources,
        0,
    )
    .unwrap()
}
