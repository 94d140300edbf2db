//! Real databases for the store's unit tests: a SQLite file in a temp directory, and a
//! PostgreSQL database on the server named by `PORTSCOPE_TEST_PG` (a server URL, as
//! `cargo xtask with-pg` sets it) or else on a throwaway server of its own
//! (`xtask::pg::PgGuard`). [`both_backends!`] runs one test body on each.

use super::Db;
use std::sync::atomic::{AtomicU32, Ordering};

/// An open, migrated database and what keeps it alive.
pub struct TestDb {
    /// The pool.
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<xtask::pg::PgGuard>,
}

/// A fresh SQLite file.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("t.db")).await.unwrap();
    TestDb {
        db,
        _dir: Some(dir),
        _pg: None,
    }
}

/// A fresh PostgreSQL database.
pub async fn postgres() -> TestDb {
    let (server, pg) = match std::env::var("PORTSCOPE_TEST_PG") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let pg = tokio::task::spawn_blocking(xtask::pg::PgGuard::start)
                .await
                .unwrap()
                .expect("PostgreSQL from /usr/lib/postgresql (.ci/setup installs it)");
            (pg.url(), Some(pg))
        }
    };
    let url = fresh_database(&server).await;
    TestDb {
        db: Db::open(std::path::Path::new(&url)).await.unwrap(),
        _dir: None,
        _pg: pg,
    }
}

/// Creates an empty database on the server of `server_url`; its URL.
pub async fn fresh_database(server_url: &str) -> String {
    use sqlx::{Connection, Executor};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "unit_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = sqlx::PgConnection::connect(server_url).await.unwrap();
    c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    c.close().await.unwrap();
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}{query}")
}

/// `both_backends!(name, |db| async { .. })`: a module `name` with the tests `sqlite` and
/// `postgres`, each running the body on a fresh database of that backend.
macro_rules! both_backends {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let t = $crate::store::testdb::sqlite().await;
                let $db = t.db.clone();
                $body.await;
            }

            #[tokio::test]
            async fn postgres() {
                let t = $crate::store::testdb::postgres().await;
                let $db = t.db.clone();
                $body.await;
            }
        }
    };
}
pub(crate) use both_backends;
