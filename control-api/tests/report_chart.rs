//! The report page in a real browser: three scans of one target (fake engine, different
//! open ports each time), then headless Chromium (Debian's, installed by `.ci/setup`)
//! loads the third scan's `reportUrl` from an API on 127.0.0.1. It must render the
//! exposure chart (one bar per scan, the grade line), log nothing to the console (no CSP
//! violation, no error), and write a screenshot under `target/`.

mod support;

use portscope_control_api::managed::service::ManagedSettings;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::managed::M;

fn chromium() -> PathBuf {
    let p = std::env::var_os("PORTSCOPE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(p.exists(), "no Chromium at {} (run .ci/setup)", p.display());
    p
}

/// Headless Chromium with a fresh profile, no background traffic, console to stderr.
async fn browse(profile: &Path, extra: &[&str], url: &str) -> Output {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=900,1300",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium ran over 120 s")
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Console messages (page errors, CSP refusals, `console.*`) in Chromium's log.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Refused to") || l.contains("Uncaught"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_page_renders_the_exposure_chart_in_chromium() {
    let m = M::with(
        |_| {},
        ManagedSettings {
            scheduler_interval: Duration::ZERO,
            ..ManagedSettings::default()
        },
    )
    .await;
    let key = m.token("chart", &["198.18.0.0/15"], 100, 5).await;
    let mut report = String::new();
    for open in [&[22u16, 443][..], &[22, 443, 3306, 6379], &[443]] {
        let r = m
            .post("/api/v1/scan", &key, Some(json!({"target": "198.18.0.5"})))
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_string();
        let ports: Vec<(&str, u16)> = open.iter().map(|p| ("198.18.0.5", *p)).collect();
        m.complete_with(&id, &ports).await;
        report = r.body["reportUrl"].as_str().unwrap().to_string();
        m.clock.advance(Duration::from_secs(86_400));
    }
    let url = format!(
        "{}{report}",
        support::serve_on_loopback(m.router.clone()).await
    );

    let profile = tempfile::tempdir().unwrap();
    let dom = browse(profile.path(), &["--dump-dom"], &url).await;
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(html.contains("<svg id=\"exposure\""), "{html}");
    assert_eq!(html.matches("class=\"bar\"").count(), 3, "{html}");
    assert!(html.contains("class=\"score\""));
    for grade in ["<text", ">F</text>", ">A+</text>"] {
        assert!(html.contains(grade), "{grade} in {html}");
    }
    let log = String::from_utf8_lossy(&dom.stderr);
    assert_eq!(
        console_lines(&log),
        Vec::<&str>::new(),
        "console output:\n{log}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-chart.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = browse(
        profile.path(),
        &[&format!("--screenshot={}", shot.display())],
        &url,
    )
    .await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        console_lines(&log),
        Vec::<&str>::new(),
        "console output:\n{log}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

/// The console check can fail: a page whose script the CSP refuses is caught.
#[tokio::test]
async fn a_console_error_is_caught() {
    let (_dir, page) = support::temp_file(
        "bad.html",
        "<!doctype html><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">\
         <p>x</p><script>console.log('hi')</script>",
    );
    let profile = tempfile::tempdir().unwrap();
    let out = browse(
        profile.path(),
        &["--dump-dom"],
        &format!("file://{}", page.display()),
    )
    .await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !console_lines(&log).is_empty(),
        "no console line in:\n{log}"
    );
}
