//! Phase drivers: the main lab (phases 1-3), single scans and the concurrent deep-scan burst,
//! and the burst's summary.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::measure::sample_during;
use crate::lab::{truth, Lab, Truth};
use crate::stack::Stack;

use super::agent::Reply;
use super::handle::{Agent, Hook};
use super::load::load;
use super::metrics::{engine_sample, sample_at, EngineSample, SAMPLE_EVERY};
use super::options::Options;
use super::results::{latency, median, new_hist, scan_run, secs, Burst, Load, Phase1, ScanRun};
use super::session::hosts;
use super::{
    BURST_LIMIT, DEEP_LIMIT, ENGINE_MAX_RUNNING_DEFAULT, FAST_LIMIT, HOST, MAX_QUEUED, SETTLE,
};

/// Phases 1-3 in the main lab.
pub(super) fn main_lab(
    stack: &mut Stack,
    agent: &Agent,
    opts: &Options,
) -> anyhow::Result<(Phase1, ScanRun, Burst, Load)> {
    let n = opts.concurrent;
    eprintln!(
        "bench --service: 1/3 fast and deep scans from {HOST}, {} each",
        opts.repeats
    );
    let phase1 = phase1(stack, agent, opts.repeats)?;
    eprintln!("bench --service: 2/3 one deep scan alone, then {n} at once");
    thread::sleep(SETTLE);
    let single = single_scan(
        stack,
        agent,
        truth::extra_v4(n + 1),
        "deep",
        "single",
        DEEP_LIMIT,
    )?;
    thread::sleep(SETTLE);
    let b = burst(
        stack,
        agent,
        &hosts(1, n),
        "burst",
        "max-running 8 (default)",
        ENGINE_MAX_RUNNING_DEFAULT,
        MAX_QUEUED,
    )?;
    thread::sleep(SETTLE);
    eprintln!(
        "bench --service: 3/3 API latency: {n} more deep scans, their hosts and {} more addresses polling",
        opts.pollers
    );
    let load = load(
        stack,
        agent,
        &hosts(n + 2, n),
        &hosts(2 * n + 2, opts.pollers),
    )?;
    Ok((phase1, single, b, load))
}

/// `repeats` `kind` scans of [`HOST`] one after the other, each after the settle time.
fn repeated_scans(
    stack: &mut Stack,
    agent: &Agent,
    kind: &str,
    limit: Duration,
    repeats: usize,
) -> anyhow::Result<Vec<ScanRun>> {
    let mut runs = Vec::new();
    for i in 0..repeats {
        if kind == "deep" && i > 0 {
            // The 1-deep-scan-per-IP-per-5-minutes window lives in the API's memory.
            stack.stop_api(false);
            stack.start_api()?;
        }
        thread::sleep(SETTLE);
        let r = single_scan(stack, agent, HOST, kind, &format!("{kind}{i}"), limit)?;
        eprintln!(
            "bench --service:   {kind} {}/{repeats}: POST->complete {:.3} s, duration_ms {:?}, {} probes",
            i + 1,
            r.post_to_complete_s.unwrap_or(f64::NAN),
            r.duration_ms,
            r.probes.unwrap_or(0)
        );
        runs.push(r);
    }
    Ok(runs)
}

pub(super) fn phase1(stack: &mut Stack, agent: &Agent, repeats: usize) -> anyhow::Result<Phase1> {
    let fast = repeated_scans(stack, agent, "fast", FAST_LIMIT, repeats)?;
    let deep = repeated_scans(stack, agent, "deep", DEEP_LIMIT, repeats)?;
    let med = |runs: &[ScanRun]| median(runs.iter().filter_map(|r| r.post_to_complete_s));
    let med_d =
        |runs: &[ScanRun]| median(runs.iter().filter_map(|r| r.duration_ms.map(|d| d as f64)));
    Ok(Phase1 {
        host: HOST.to_string(),
        fast_median_s: med(&fast),
        deep_median_s: med(&deep),
        fast_duration_ms_median: med_d(&fast),
        deep_duration_ms_median: med_d(&deep),
        fast,
        deep,
    })
}

/// One scan alone: POST with a webhook, wait for it; probes from the engine's counter.
pub(super) fn single_scan(
    stack: &Stack,
    agent: &Agent,
    src: Ipv4Addr,
    kind: &str,
    tag: &str,
    limit: Duration,
) -> anyhow::Result<ScanRun> {
    let before = engine_sample(&stack.lab)?;
    let post = agent.request(src, "POST", &format!("/v1/{kind}"), Some(tag));
    if post.status != 200 {
        bail!(
            "POST /v1/{kind} from {src}: {}\n{}",
            post.outcome(),
            stack.logs()
        );
    }
    let hooks = agent.hooks(&[tag.to_owned()], Instant::now() + limit);
    let Some(hook) = hooks.get(tag) else {
        bail!(
            "no webhook for the {kind} scan of {src} within {limit:?}\n{}",
            stack.logs()
        );
    };
    let after = engine_sample(&stack.lab)?;
    let mut run = scan_run(stack.lab.truth(), src, kind, &post, Some(hook));
    let probes = after.probes_sent.saturating_sub(before.probes_sent);
    run.probes = Some(probes);
    run.probes_per_s = run.wall_s.map(|w| probes as f64 / w.max(1e-9));
    if !run.truth_ok() {
        eprintln!(
            "bench --service:   {kind} scan of {src}: {} (open ok {}, filtered ok {})",
            run.status, run.open_ok, run.filtered_ok
        );
    }
    Ok(run)
}

/// A deep scan from every host at once (one thread each), timed by webhooks.
pub(super) fn burst(
    stack: &Stack,
    agent: &Agent,
    hosts: &[Ipv4Addr],
    tag: &str,
    label: &str,
    max_running: u32,
    max_queued: u32,
) -> anyhow::Result<Burst> {
    let lab: &Lab = &stack.lab;
    let before = engine_sample(lab)?;
    let tags: Vec<String> = (0..hosts.len()).map(|i| format!("{tag}{i}")).collect();
    let ((replies, hooks), timeline) = sample_during(
        SAMPLE_EVERY,
        |t| sample_at(lab, t),
        || {
            let replies = thread::scope(|s| {
                let posts: Vec<_> = hosts
                    .iter()
                    .zip(&tags)
                    .map(|(h, t)| s.spawn(move || agent.request(*h, "POST", "/v1/deep", Some(t))))
                    .collect();
                join_replies(posts)
            });
            let hooks = agent.hooks(&accepted(&replies, &tags), Instant::now() + BURST_LIMIT);
            (replies, hooks)
        },
    );
    let after = engine_sample(lab)?;
    Ok(summarize(
        lab.truth(),
        label,
        max_running,
        max_queued,
        hosts,
        &tags,
        &replies,
        &hooks,
        (before, after),
        timeline,
    ))
}

/// The replies of request threads, in order (a panicked thread's as a failed request).
pub(super) fn join_replies(threads: Vec<thread::ScopedJoinHandle<'_, Reply>>) -> Vec<Reply> {
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Reply::failed("thread panicked"))
        })
        .collect()
}

/// The tags of the scans whose POST was accepted.
pub(super) fn accepted(replies: &[Reply], tags: &[String]) -> Vec<String> {
    replies
        .iter()
        .zip(tags)
        .filter(|(r, _)| r.status == 200)
        .map(|(_, t)| t.clone())
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn summarize(
    truth: &Truth,
    label: &str,
    max_running: u32,
    max_queued: u32,
    hosts: &[Ipv4Addr],
    tags: &[String],
    replies: &[Reply],
    hooks: &HashMap<String, Hook>,
    (before, after): (EngineSample, EngineSample),
    timeline: Vec<EngineSample>,
) -> Burst {
    let probes = after.probes_sent.saturating_sub(before.probes_sent);
    let start_us = replies
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.t_start_us)
        .min();
    let mut runs: Vec<ScanRun> = hosts
        .iter()
        .zip(tags)
        .zip(replies)
        .map(|((h, t), r)| {
            let hook = hooks.get(t);
            let mut run = scan_run(truth, *h, "deep", r, hook);
            run.done_at_s = start_us
                .zip(hook)
                .map(|(s, k)| secs(k.t_us.saturating_sub(s)));
            run
        })
        .collect();
    runs.sort_by(|a, b| {
        a.done_at_s
            .unwrap_or(f64::MAX)
            .total_cmp(&b.done_at_s.unwrap_or(f64::MAX))
    });
    let mut post_outcomes = BTreeMap::new();
    let mut post_hist = new_hist();
    for r in replies {
        *post_outcomes.entry(r.outcome()).or_insert(0) += 1;
        if r.status == 200 {
            post_hist.saturating_record(r.latency_us().max(1));
        }
    }
    let last_us = hooks.values().map(|h| h.t_us).max();
    let wall_s = start_us
        .zip(last_us)
        .map(|(s, e)| secs(e.saturating_sub(s)));
    let done: Vec<f64> = runs.iter().filter_map(|r| r.done_at_s).collect();
    Burst {
        label: label.to_owned(),
        max_running,
        max_queued,
        scans: hosts.len(),
        accepted: replies.iter().filter(|r| r.status == 200).count(),
        complete: runs.iter().filter(|r| r.status == "complete").count(),
        truth_ok: runs.iter().filter(|r| r.truth_ok()).count(),
        post_outcomes,
        wall_s,
        probes,
        probes_per_s: wall_s.map(|w| probes as f64 / w.max(1e-9)),
        kernel_drops: after.kernel_drops.saturating_sub(before.kernel_drops),
        backlog_drops: after.backlog_drops.saturating_sub(before.backlog_drops),
        wrong_ports: runs.iter().map(|r| r.wrong_ports).sum(),
        discards: after
            .discards
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(before.discards.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect(),
        first_done_s: done.first().copied(),
        median_done_s: median(done.iter().copied()),
        median_duration_ms: median(runs.iter().filter_map(|r| r.duration_ms.map(|d| d as f64))),
        max_duration_ms: runs.iter().filter_map(|r| r.duration_ms).max(),
        post_latency: latency(&post_hist),
        peak_running: timeline.iter().map(|s| s.running).max().unwrap_or(0),
        peak_queued: timeline.iter().map(|s| s.queued).max().unwrap_or(0),
        note: None,
        timeline,
        runs,
    }
}
