//! Both OpenAPI documents against the live API: schemathesis (PyPI, installed by
//! `.ci/setup` into `/opt/portscope-pytools`) generates requests from `/v1/openapi.json`
//! and `/api/v1/openapi.json`, sends them to the API on 127.0.0.1 (fake engine: nothing is
//! probed), and checks every answer against the document (status codes, headers, content
//! types, response schemas, `Allow`, negative data rejected, auth enforced). Any failure
//! fails the test. The example count and seed are fixed, so a run is bounded and
//! repeatable.

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::managed::{unscheduled, M};

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "25";
/// Hypothesis seed (repeatable runs).
const SEED: &str = "20261201";

fn schemathesis() -> PathBuf {
    support::pytool("schemathesis", "PORTSCOPE_SCHEMATHESIS")
}

/// Serves `m`'s router on 127.0.0.1 and returns the base URL. The test clock runs a
/// minute per 100 ms so the per-IP limits (tested exactly elsewhere) do not turn the
/// fuzzer's requests into 429s; scans and quotas are unaffected by it here.
async fn serve(m: &M) -> String {
    let base = support::serve_on_loopback(m.router.clone()).await;
    let clock = m.clock.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance(Duration::from_secs(61));
        }
    });
    base
}

/// Runs schemathesis over `m`'s document `doc` with a token that may scan the whole lab,
/// leaving out the event stream `events`: a stream lasts as long as its scan, which the
/// fake engine never finishes (tests/sse.rs reads it with a real SSE client instead).
async fn run(m: &M, doc: &str, events: &str) {
    let token = m
        .token(
            "fuzz",
            &["198.18.0.0/15", "2001:2::/48"],
            1_000_000,
            100_000,
        )
        .await;
    let base = serve(m).await;
    let auth = format!("Authorization: Bearer {token}");
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let out = tokio::process::Command::new(schemathesis())
        .current_dir(dir.path())
        .args(["--config-file", config])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .args(["run", &format!("{base}{doc}"), "--url", &base])
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        .args(["--workers", "1", "--request-timeout", "10", "--no-shrink"])
        .args(["--max-failures", "20"])
        .args(["-H", &auth, "--exclude-path", events])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis ran over 10 minutes")
        .expect("schemathesis starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found problems in {doc}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_api_conforms_to_its_openapi_document() {
    let m = M::with(|_| {}, unscheduled(100_000)).await;
    run(&m, "/api/v1/openapi.json", "/api/v1/scan/{id}/events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_scan_api_conforms_to_its_openapi_document() {
    let m = M::with(
        |c| c.allow_target.push("127.0.0.0/8".parse().unwrap()),
        unscheduled(1000),
    )
    .await;
    // Seed 002's surface is in this document too, behind a bearer token.
    run(&m, "/v1/openapi.json", "/v1/{kind}/events").await;
}
