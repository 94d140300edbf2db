//! Bearer API tokens: creation (secret shown once), listing, revocation, and lookup of a
//! presented secret. Only the SHA-256 of a secret is stored: secrets are 256 random bits,
//! so a fast hash is enough (no password stretching needed) and lookups are one indexed
//! query. Not an account system: tokens are made and revoked by the operator's CLI.

use super::scope::Scope;
use crate::util::random_hex;
use sha2::{Digest, Sha256};
use sqlx::{FromRow, SqlitePool};

/// Prefix of every secret (easy to spot in leaks and logs).
pub const SECRET_PREFIX: &str = "pst_";

/// Default most active (queued + running) scans per token.
pub const DEFAULT_CONCURRENT: i64 = 5;

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

/// A checked, live token as the handlers see it.
#[derive(Debug, Clone)]
pub struct Token {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// What it may scan.
    pub scope: Scope,
    /// Monthly scans.
    pub monthly_scans: i64,
    /// Concurrent scans.
    pub max_concurrent: i64,
}

/// What `token create` needs.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Name.
    pub name: String,
    /// Scope.
    pub scope: Scope,
    /// Monthly scans.
    pub monthly_scans: i64,
    /// Concurrent scans.
    pub max_concurrent: i64,
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name is taken.
    #[error(
        "a token named {0} already exists (revoked tokens keep their names); pick another name"
    )]
    NameTaken(String),
    /// No such token.
    #[error("no token with id or name {0}")]
    Unknown(String),
    /// Bad scope, quota or other input.
    #[error("{0}")]
    Invalid(String),
    /// Database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// SHA-256 of a secret, lower-case hex.
pub fn hash_secret(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a token; returns the row and the secret (shown once, never stored).
pub async fn create(
    pool: &SqlitePool,
    t: &NewToken,
    now: i64,
) -> Result<(TokenRow, String), TokenError> {
    if t.name.trim().is_empty() || t.name.len() > 64 {
        return Err(TokenError::Invalid(
            "token name must be 1 to 64 characters".into(),
        ));
    }
    if t.monthly_scans < 0 || t.max_concurrent < 1 {
        return Err(TokenError::Invalid(
            "monthly scans must be >= 0 and concurrent scans >= 1".into(),
        ));
    }
    if t.scope.is_empty() {
        return Err(TokenError::Invalid(
            "a token needs at least one scope entry (--scope CIDR or --scope DOMAIN)".into(),
        ));
    }
    let secret = format!("{SECRET_PREFIX}{}", random_hex(32));
    let row = TokenRow {
        id: format!("tok_{}", random_hex(8)),
        name: t.name.clone(),
        token_hash: hash_secret(&secret),
        scope: t.scope.to_text(),
        monthly_scans: t.monthly_scans,
        max_concurrent: t.max_concurrent,
        created_at: now,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, name, token_hash, scope, monthly_scans, max_concurrent, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.token_hash)
    .bind(&row.scope)
    .bind(row.monthly_scans)
    .bind(row.max_concurrent)
    .bind(row.created_at)
    .execute(pool)
    .await
    .map_err(|e| match &e {
        // One statement, no read-then-write: safe next to a running API (WAL).
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TokenError::NameTaken(t.name.clone())
        }
        _ => TokenError::Db(e),
    })?;
    Ok((row, secret))
}

/// Every token, oldest first (revoked ones included).
pub async fn list(pool: &SqlitePool) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM api_tokens ORDER BY created_at, id")
        .fetch_all(pool)
        .await
}

/// Revokes a token by id or name. Returns the row.
pub async fn revoke(pool: &SqlitePool, which: &str, now: i64) -> Result<TokenRow, TokenError> {
    // Write first, then read: a read transaction upgraded to a write can fail at once with
    // "database is locked" while the API writes to the same file.
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR name = $2",
    )
    .bind(now)
    .bind(which)
    .execute(pool)
    .await?;
    let row: Option<TokenRow> =
        sqlx::query_as("SELECT * FROM api_tokens WHERE id = $1 OR name = $1")
            .bind(which)
            .fetch_optional(pool)
            .await?;
    row.ok_or_else(|| TokenError::Unknown(which.to_string()))
}

/// The live token a presented secret belongs to, if any.
pub async fn authenticate(pool: &SqlitePool, secret: &str) -> Result<Option<Token>, sqlx::Error> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    let row: Option<TokenRow> =
        sqlx::query_as("SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(hash_secret(secret))
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|r| {
        let scope = match Scope::parse_text(&r.scope) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(token = %r.id, error = %e, "stored scope does not parse; token refused");
                return None;
            }
        };
        Some(Token {
            id: r.id,
            name: r.name,
            scope,
            monthly_scans: r.monthly_scans,
            max_concurrent: r.max_concurrent,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
