//! Monitor e-mail against a minimal SMTP server on 127.0.0.1 (plain SMTP, no TLS,
//! `support::smtp`): the SMTP mailer sends the sender, recipient and subject; through the
//! whole API (`smtp-url` configured), a scan's alert e-mail is a durable delivery job queued
//! by the transaction that completes the scan, sent exactly once, retried by the queue while
//! the server refuses it, and never queued again by a `complete` that finds the scan final.

#[path = "support/mod.rs"]
mod support;

use axum::http::StatusCode;
use portscope_control_api::delivery::DeliveryJob;
use portscope_control_api::managed::mail::{Mailer, MonitorEmail, SmtpMailer};
use portscope_control_api::store::managed::Completion;
use serde_json::json;
use std::time::Duration;
use support::managed::{delivery_jobs, M};
use support::smtp::smtp_server;

#[tokio::test]
async fn smtp_mailer_delivers_to_a_loopback_server() {
    let (port, seen) = smtp_server(0).await;
    let m = SmtpMailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Portscope <alerts@example.com>",
    )
    .unwrap();
    m.send(
        "ops@example.com",
        "[portscope] 1 alert(s)",
        "- [HIGH] port 3306/tcp is newly open",
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap().messages.concat().join("\n");
    assert!(seen.contains("MAIL FROM:<alerts@example.com>"), "{seen}");
    assert!(seen.contains("RCPT TO:<ops@example.com>"), "{seen}");
    assert!(seen.contains("Subject: [portscope] 1 alert(s)"), "{seen}");
    assert!(
        seen.contains("- [HIGH] port 3306/tcp is newly open"),
        "{seen}"
    );
}

/// Two scans of a saved target with an alert e-mail: the second finds 27017 newly open
/// (CRITICAL). Returns the second scan's id.
async fn alerting_scans(m: &M) -> String {
    let t = m.token("ci", &["198.18.0.0/24"], 100, 10).await;
    let r = m
        .save_target(
            &t,
            json!({"target": "198.18.0.99", "alertEmail": "ops@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let path = format!("/api/v1/targets/{}/scan", r.created_id());
    let a = m.post(&path, &t, None).await.created_id();
    m.complete_with(&a, &[("198.18.0.99", 80)]).await;
    let b = m.post(&path, &t, None).await.created_id();
    m.complete_with(&b, &[("198.18.0.99", 80), ("198.18.0.99", 27017)])
        .await;
    b
}

/// Waits (bounded) until there is a delivery job and every one has ended (`Done` or
/// `Killed`: a `Failed` one is run again); returns them.
async fn ended(m: &M) -> Vec<(String, i64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = delivery_jobs(m).await;
        if !jobs.is_empty() && jobs.iter().all(|(s, _)| s == "Done" || s == "Killed") {
            return jobs;
        }
        let why = || format!("delivery jobs not ended in 20 s: {jobs:?}");
        support::wait_round(deadline, Duration::from_millis(10), why).await;
    }
}

#[tokio::test]
async fn a_monitor_email_is_sent_once_by_its_delivery_job() {
    let (port, seen) = smtp_server(0).await;
    let m = M::with_smtp(port).await;
    let b = alerting_scans(&m).await;
    assert_eq!(ended(&m).await, vec![("Done".to_string(), 1)]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!((seen.sessions, seen.messages.len()), (1, 1));
        let text = seen.messages[0].join("\n");
        assert!(text.contains("MAIL FROM:<alerts@example.com>"), "{text}");
        assert!(text.contains("RCPT TO:<ops@example.com>"), "{text}");
        assert!(
            text.contains("Subject: [portscope] 1 alert(s) on 198.18.0.99 (CRITICAL)"),
            "{text}"
        );
        assert!(
            text.contains("- [CRITICAL] port 27017/tcp is newly open on 198.18.0.99"),
            "{text}"
        );
        assert!(text.contains(&format!("/report/{b}?key=")), "{text}");
    }
    // A second `complete` of the now final scan (another node's finisher, late) changes
    // nothing and queues no e-mail.
    let store = m.state.managed().store();
    let job = DeliveryJob::email(
        &b,
        MonitorEmail {
            to: "ops@example.com".into(),
            subject: "late".into(),
            text: "late".into(),
        },
    );
    let late = Completion {
        banners: &[],
        grade: "A",
        score: 100,
        duration_ms: 5,
        now: m.state.managed().now_secs(),
        alerts: &[],
        monitor: std::slice::from_ref(&job),
    };
    assert!(!store.complete(&b, &late).await.unwrap());
    assert_eq!(delivery_jobs(&m).await, vec![("Done".to_string(), 1)]);
    assert_eq!(seen.lock().unwrap().messages.len(), 1);
    m.state.shutdown().await;
}

/// The SMTP server is down (421) for the first two sessions: the job's first two runs fail
/// and the queue runs it again; the third delivers it, once.
#[tokio::test]
async fn a_monitor_email_is_retried_by_the_queue_while_smtp_is_down() {
    let (port, seen) = smtp_server(2).await;
    let m = M::with_smtp(port).await;
    alerting_scans(&m).await;
    assert_eq!(ended(&m).await, vec![("Done".to_string(), 3)]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!((seen.sessions, seen.messages.len()), (3, 1));
        let text = seen.messages[0].join("\n");
        assert!(text.contains("RCPT TO:<ops@example.com>"), "{text}");
    }
    m.state.shutdown().await;
}
