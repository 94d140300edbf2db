//! Bearer API tokens (`api_tokens`): only the SHA-256 of a secret is stored. The rules
//! (names, scopes, secrets) live in `managed::tokens`; this is their SQL.

use super::{on_db, Db};
use sqlx::FromRow;

/// An `api_tokens` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TokenRow {
    /// Public id (`tok_...`).
    pub id: String,
    /// Operator's name for it, unique.
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub token_hash: String,
    /// Scope entries, one per line.
    pub scope: String,
    /// New scans per calendar month (UTC).
    pub monthly_scans: i64,
    /// Queued + running scans at once.
    pub max_concurrent: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

/// Inserts a token. A taken name is a unique violation (`is_unique_violation`).
pub async fn insert(db: &Db, row: &TokenRow) -> Result<(), sqlx::Error> {
    on_db!(db, |p| {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, scope, monthly_scans, \
             max_concurrent, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.token_hash)
        .bind(&row.scope)
        .bind(row.monthly_scans)
        .bind(row.max_concurrent)
        .bind(row.created_at)
        .execute(p)
        .await
        .map(|_| ())
    })
}

/// Every token, oldest first (revoked ones included).
pub async fn list(db: &Db) -> Result<Vec<TokenRow>, sqlx::Error> {
    on_db!(db, |p| {
        sqlx::query_as("SELECT * FROM api_tokens ORDER BY created_at, id")
            .fetch_all(p)
            .await
    })
}

/// Revokes a token by id or name (keeping an earlier revocation time); the row, if any.
pub async fn revoke(db: &Db, which: &str, now: i64) -> Result<Option<TokenRow>, sqlx::Error> {
    on_db!(db, |p| {
        // Write first, then read: a SQLite read transaction upgraded to a write can fail at
        // once with "database is locked" while the API writes to the same file.
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 OR name = $2",
        )
        .bind(now)
        .bind(which)
        .execute(p)
        .await?;
        sqlx::query_as("SELECT * FROM api_tokens WHERE id = $1 OR name = $1")
            .bind(which)
            .fetch_optional(p)
            .await
    })
}

/// The live (not revoked) token with this secret hash.
pub async fn live_by_hash(db: &Db, hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    live_where(db, "token_hash", hash).await
}

/// The live (not revoked) token with this id.
pub async fn live_by_id(db: &Db, id: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    live_where(db, "id", id).await
}

/// The live token whose `column` (a unique one) is `value`.
async fn live_where(
    db: &Db,
    column: &'static str,
    value: &str,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let sql = format!("SELECT * FROM api_tokens WHERE {column} = $1 AND revoked_at IS NULL");
    on_db!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_optional(p)
        .await)
}
