//! The one-parameter `SELECT`s of the store modules (rows by scan, by token, by id), written
//! once for both backends: `db.all(sql, key)` and `db.optional(sql, key)` bind `key` as `$1`
//! and decode rows with `FromRow`.

use super::{on_db, Db};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Encode, FromRow, Postgres, Sqlite, Type};

/// A row type both backends decode.
pub(crate) trait AnyRow:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A key both backends bind (as `$1`).
pub(crate) trait AnyKey<'q>:
    'q + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres> + Send
{
}
impl<'q, K> AnyKey<'q> for K where
    K: 'q + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres> + Send
{
}

impl Db {
    /// Every row of `sql`, with `$1` = `key`.
    pub(crate) async fn all<'q, T: AnyRow, K: AnyKey<'q>>(
        &self,
        sql: &'static str,
        key: K,
    ) -> Result<Vec<T>, sqlx::Error> {
        on_db!(self, |p| sqlx::query_as(sql).bind(key).fetch_all(p).await)
    }

    /// The row of `sql`, with `$1` = `key`, if any.
    pub(crate) async fn optional<'q, T: AnyRow, K: AnyKey<'q>>(
        &self,
        sql: &'static str,
        key: K,
    ) -> Result<Option<T>, sqlx::Error> {
        on_db!(self, |p| sqlx::query_as(sql)
            .bind(key)
            .fetch_optional(p)
            .await)
    }
}
