//! Rate-limit windows in the database (`rate_windows`), so a limit holds across every API
//! node on one PostgreSQL. A fixed window per (limiter, key): it opens at the key's first
//! counted request and lasts `window` seconds, as `crate::ratelimit::FixedWindow` counts in
//! memory. A hit is one upsert, atomic on both backends: no read-then-write race between
//! nodes. Every `SET` expression reads the row as it was before the statement.

use super::{on_db, Db};

/// A window after a hit or peek: its start and the requests counted in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Unix seconds.
    pub start: i64,
    /// Requests counted (never above the limit).
    pub count: i64,
    /// Whether this request was counted (within the limit).
    pub allowed: bool,
}

/// Counts one request of `key` in `limiter` at `now` if within `limit` per `window` s.
pub async fn hit(
    db: &Db,
    limiter: &str,
    key: &str,
    limit: i64,
    window: i64,
    now: i64,
) -> Result<Counted, sqlx::Error> {
    on_db!(db, |p| {
        let (start, count, allowed): (i64, i64, i64) = sqlx::query_as(
            "INSERT INTO rate_windows (limiter, key, start, count, allowed) \
             VALUES ($1, $2, $3, CASE WHEN $4 > 0 THEN 1 ELSE 0 END, \
                     CASE WHEN $4 > 0 THEN 1 ELSE 0 END) \
             ON CONFLICT (limiter, key) DO UPDATE SET \
             start = CASE WHEN rate_windows.start + $5 <= $3 THEN $3 ELSE rate_windows.start END, \
             count = CASE WHEN rate_windows.start + $5 <= $3 THEN CASE WHEN $4 > 0 THEN 1 ELSE 0 END \
                          WHEN rate_windows.count < $4 THEN rate_windows.count + 1 \
                          ELSE rate_windows.count END, \
             allowed = CASE WHEN rate_windows.start + $5 <= $3 THEN CASE WHEN $4 > 0 THEN 1 ELSE 0 END \
                            WHEN rate_windows.count < $4 THEN 1 ELSE 0 END \
             RETURNING start, count, allowed",
        )
        .bind(limiter)
        .bind(key)
        .bind(now)
        .bind(limit)
        .bind(window)
        .fetch_one(p)
        .await?;
        Ok(Counted {
            start,
            count,
            allowed: allowed == 1,
        })
    })
}

/// The current window of `key` (start, count), if one is open at `now`.
pub async fn peek(
    db: &Db,
    limiter: &str,
    key: &str,
    window: i64,
    now: i64,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    on_db!(db, |p| {
        sqlx::query_as(
            "SELECT start, count FROM rate_windows \
             WHERE limiter = $1 AND key = $2 AND start + $3 > $4",
        )
        .bind(limiter)
        .bind(key)
        .bind(window)
        .bind(now)
        .fetch_optional(p)
        .await
    })
}

/// Takes back one counted request of `key`.
pub async fn unhit(db: &Db, limiter: &str, key: &str) -> Result<(), sqlx::Error> {
    on_db!(db, |p| {
        sqlx::query(
            "UPDATE rate_windows SET count = count - 1 \
             WHERE limiter = $1 AND key = $2 AND count > 0",
        )
        .bind(limiter)
        .bind(key)
        .execute(p)
        .await
        .map(|_| ())
    })
}

/// Deletes the windows of `limiter` that ended by `now`.
pub async fn prune(db: &Db, limiter: &str, window: i64, now: i64) -> Result<u64, sqlx::Error> {
    on_db!(db, |p| {
        sqlx::query("DELETE FROM rate_windows WHERE limiter = $1 AND start <= $2")
            .bind(limiter)
            .bind(now - window)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
    })
}
