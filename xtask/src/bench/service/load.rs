//! Phase 3, the load phase: scanning hosts poll and re-POST, pollers GET, every client paced
//! under the edge limit; latencies in histograms.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::measure::sample_during;
use crate::lab::Lab;
use crate::stack::Stack;

use super::agent::Reply;
use super::handle::Agent;
use super::metrics::{engine_sample, sample_at, SAMPLE_EVERY};
use super::phases::{accepted, join_replies, summarize};
use super::results::{latency, new_hist, Load};
use super::{BURST_LIMIT, ENGINE_MAX_RUNNING_DEFAULT, IDLE_REQUESTS, LOAD_INTERVAL, MAX_QUEUED};

/// Latency histograms of the load phase.
#[derive(Debug)]
pub(super) struct Hists {
    pub(super) get: Histogram<u64>,
    pub(super) post_join: Histogram<u64>,
    pub(super) post_new: Histogram<u64>,
    pub(super) outcomes: BTreeMap<String, u64>,
}

impl Hists {
    pub(super) fn record(&mut self, what: &str, r: &Reply) {
        *self
            .outcomes
            .entry(format!("{what} {}", r.outcome()))
            .or_insert(0) += 1;
        if r.status == 200 {
            let h = match what {
                "POST new" => &mut self.post_new,
                "POST join" => &mut self.post_join,
                _ => &mut self.get,
            };
            h.saturating_record(r.latency_us().max(1));
        }
    }
}

/// Sleeps until `at` unless `stop` is set first; false if stopped.
pub(super) fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        thread::sleep((at - now).min(Duration::from_millis(50)));
    }
}

/// Phase 3: `scan_hosts` each start a deep scan (webhook-timed), then poll it (GET) and
/// re-POST (joining it) alternately every `LOAD_INTERVAL` until it is done; `pollers` more
/// addresses GET every `LOAD_INTERVAL` until every scan is done.
pub(super) fn load(
    stack: &Stack,
    agent: &Agent,
    scan_hosts: &[Ipv4Addr],
    pollers: &[Ipv4Addr],
) -> anyhow::Result<Load> {
    let lab: &Lab = &stack.lab;
    // Idle latency first: one GET at a time, each from its own (poller) address.
    let mut idle = new_hist();
    for src in pollers.iter().take(IDLE_REQUESTS) {
        let r = agent.request(*src, "GET", "/v1/deep", None);
        if r.status == 200 {
            idle.saturating_record(r.latency_us().max(1));
        }
    }
    let poller_addrs = pollers;
    let before = engine_sample(lab)?;
    let hists = Mutex::new(Hists {
        get: new_hist(),
        post_join: new_hist(),
        post_new: new_hist(),
        outcomes: BTreeMap::new(),
    });
    let record = |what: &str, r: &Reply| {
        hists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(what, r);
    };
    let remaining = AtomicUsize::new(scan_hosts.len());
    let stop = AtomicBool::new(false);
    let requests = AtomicU64::new(0);
    let t0 = Instant::now();
    let deadline = t0 + BURST_LIMIT;
    let tags: Vec<String> = (0..scan_hosts.len()).map(|i| format!("load{i}")).collect();
    let spread = |i: usize, n: usize| LOAD_INTERVAL.mul_f64(i as f64 / n.max(1) as f64);
    let ((posts, hooks, duration_s), timeline) = sample_during(
        SAMPLE_EVERY,
        |t| sample_at(lab, t),
        || {
            thread::scope(|s| {
                let (record, remaining, stop, requests) = (&record, &remaining, &stop, &requests);
                let clients: Vec<_> = scan_hosts
                    .iter()
                    .zip(&tags)
                    .enumerate()
                    .map(|(i, (h, tag))| {
                        s.spawn(move || {
                            let post = agent.request(*h, "POST", "/v1/deep", Some(tag));
                            requests.fetch_add(1, Ordering::Relaxed);
                            record("POST new", &post);
                            if post.status == 200 {
                                let start = Instant::now() + spread(i, scan_hosts.len());
                                for k in 1u32.. {
                                    if !sleep_until(start + LOAD_INTERVAL * k, stop)
                                        || Instant::now() > deadline
                                    {
                                        break;
                                    }
                                    // Re-POST only while the scan is live: after it, a POST would be
                                    // a new deep scan (429 for 5 minutes).
                                    let join = k % 2 == 0 && !agent.has_hook(tag);
                                    let (what, method) = if join {
                                        ("POST join", "POST")
                                    } else {
                                        ("GET", "GET")
                                    };
                                    let r = agent.request(*h, method, "/v1/deep", None);
                                    requests.fetch_add(1, Ordering::Relaxed);
                                    record(what, &r);
                                    let st = r.json()["status"].as_str().unwrap_or("").to_owned();
                                    if !join && (st == "complete" || st == "failed") {
                                        break;
                                    }
                                }
                            }
                            remaining.fetch_sub(1, Ordering::Relaxed);
                            post
                        })
                    })
                    .collect();
                let n_pollers = poller_addrs.len();
                let polls: Vec<_> = poller_addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        s.spawn(move || {
                            let start = Instant::now() + spread(i, n_pollers);
                            for k in 0u32.. {
                                if remaining.load(Ordering::Relaxed) == 0
                                    || !sleep_until(start + LOAD_INTERVAL * k, stop)
                                    || Instant::now() > deadline
                                {
                                    break;
                                }
                                let r = agent.request(*a, "GET", "/v1/deep", None);
                                requests.fetch_add(1, Ordering::Relaxed);
                                record("GET", &r);
                            }
                        })
                    })
                    .collect();
                let posts = join_replies(clients);
                for p in polls {
                    let _ = p.join();
                }
                let duration_s = t0.elapsed().as_secs_f64();
                // The webhooks of the scans (sent when a scan completes, so around the GET that
                // saw it complete).
                let hooks = agent.hooks(
                    &accepted(&posts, &tags),
                    Instant::now() + Duration::from_secs(30),
                );
                stop.store(true, Ordering::Relaxed);
                (posts, hooks, duration_s)
            })
        },
    );
    let after = engine_sample(lab)?;
    let h = hists.into_inner().unwrap_or_else(|e| e.into_inner());
    let requests = requests.load(Ordering::Relaxed);
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        h.outcomes
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, v)| *v)
            .sum()
    };
    let rate_limited = count(&|k| k.contains(" 429"));
    let errors = count(&|k| !k.ends_with(" 200") && !k.contains(" 429"));
    let scans = summarize(
        lab.truth(),
        "under API load (max-running 8)",
        ENGINE_MAX_RUNNING_DEFAULT,
        MAX_QUEUED,
        scan_hosts,
        &tags,
        &posts,
        &hooks,
        (before, after),
        timeline,
    );
    Ok(Load {
        scan_clients: scan_hosts.len(),
        pollers: pollers.len(),
        interval_ms: LOAD_INTERVAL.as_millis() as u64,
        duration_s,
        requests,
        requests_per_s: requests as f64 / duration_s.max(1e-9),
        get_idle: latency(&idle),
        get: latency(&h.get),
        post_join: latency(&h.post_join),
        post_new: latency(&h.post_new),
        outcomes: h.outcomes,
        rate_limited,
        errors,
        scans,
    })
}
