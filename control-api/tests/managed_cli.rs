//! The token CLI (`portscope-api token create|list|revoke`) on a temp database, and the
//! API serving that same database: the printed secret works once created and gets 401
//! once revoked. Runs the real binary; no network. On SQLite, or on PostgreSQL under
//! `cargo xtask pg` (`support::test_db`).

mod support;

use axum::http::{Method, StatusCode};
use std::process::Command;
use support::managed::{unscheduled, M};

/// Runs the binary off the runtime thread: the API under test keeps running meanwhile
/// (blocking the test's only runtime thread would stall its open transactions).
async fn cli(db: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portscope-api"));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env_remove("RUST_BACKTRACE");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn token_cli_creates_lists_and_revokes_on_the_api_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = support::test_db(dir.path());
    let create_ci = [
        "token",
        "create",
        "--name",
        "ci",
        "--scope",
        "198.18.0.0/16",
    ];
    let (ok, out, err) = cli(
        &db,
        &[&create_ci[..], &["--monthly-scans", "1000"]].concat(),
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("shown only once"));
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(secret.starts_with("pst_") && secret.len() == 68, "{secret}");
    let (ok, _, err) = cli(&db, &create_ci).await;
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(
        &db,
        &["token", "create", "--name", "x", "--scope", "not a scope"],
    )
    .await;
    assert!(!ok && err.contains("bad scope entry"), "{err}");
    let (ok, out, _) = cli(&db, &["token", "list"]).await;
    assert!(ok);
    assert!(out.contains("\tci\t198.18.0.0/16\t1000\t5\t"));
    assert!(!out.contains(&secret), "secrets are never listed");

    let db2 = db.clone();
    let m = M::with(move |c| c.db = db2, unscheduled(10)).await;
    let r = m.get("/api/v1/scans", &secret).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = m
        .call(
            Method::POST,
            "/api/v1/scan",
            &secret,
            Some(serde_json::json!({"target": "198.19.0.1"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "scope from the CLI applies"
    );
    let (ok, out, err) = cli(&db, &["token", "revoke", "ci"]).await;
    assert!(ok && out.starts_with("revoked tok_"), "{out} {err}");
    m.get("/api/v1/scans", &secret)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let (ok, _, err) = cli(&db, &["token", "revoke", "nobody"]).await;
    assert!(!ok && err.contains("no token"), "{err}");
}
