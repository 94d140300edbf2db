//! Bearer API tokens: creation (secret shown once), listing, revocation, and lookup of a
//! presented secret. Only the SHA-256 of a secret is stored: secrets are 256 random bits,
//! so a fast hash is enough (no password stretching needed) and lookups are one indexed
//! query. Not an account system: tokens are made and revoked by the operator's CLI.

use super::scope::Scope;
use crate::store::{tokens as sql, Db};
use crate::util::random_hex;
use sha2::{Digest, Sha256};

pub use crate::store::TokenRow;

/// Prefix of every secret (easy to spot in leaks and logs).
pub const SECRET_PREFIX: &str = "pst_";

/// Default most active (queued + running) scans per token.
pub const DEFAULT_CONCURRENT: i64 = 5;

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
    crate::util::hex(&Sha256::digest(secret.as_bytes()))
}

/// Creates a token; returns the row and the secret (shown once, never stored).
pub async fn create(db: &Db, t: &NewToken, now: i64) -> Result<(TokenRow, String), TokenError> {
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
    sql::insert(db, &row).await.map_err(|e| match &e {
        // One statement, no read-then-write: safe next to a running API (WAL).
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TokenError::NameTaken(t.name.clone())
        }
        _ => TokenError::Db(e),
    })?;
    Ok((row, secret))
}

/// Every token, oldest first (revoked ones included).
pub async fn list(db: &Db) -> Result<Vec<TokenRow>, sqlx::Error> {
    sql::list(db).await
}

/// Revokes a token by id or name. Returns the row.
pub async fn revoke(db: &Db, which: &str, now: i64) -> Result<TokenRow, TokenError> {
    let row = sql::revoke(db, which, now).await?;
    row.ok_or_else(|| TokenError::Unknown(which.to_string()))
}

/// The live token a presented secret belongs to, if any.
pub async fn authenticate(db: &Db, secret: &str) -> Result<Option<Token>, sqlx::Error> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    let row = sql::live_by_hash(db, &hash_secret(secret)).await?;
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
