//! The enums the store keeps as TEXT, decoded at the store's edge: a row carries the enum,
//! and a stored word no enum knows is a column decode error naming the word, never a
//! panic or a default.

use crate::jobs::ChunkStatus;
use crate::managed::alerts::{AlertKind, AlertStatus};
use crate::model::{ScanType, Status};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

/// `sqlx::Type` as TEXT, `sqlx::Encode` as its `as_str` word and `sqlx::Decode` through `$parse` (the word to `Option<Self>`),
/// on every backend, for each `$t`.
macro_rules! stored_word {
    ($($t:ty => $parse:expr),* $(,)?) => {$(
        impl<DB: Database> Type<DB> for $t
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            &'static str: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                self.as_str().encode_by_ref(buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let word = <&'r str as Decode<'r, DB>>::decode(value)?;
                let parse: fn(&str) -> Option<$t> = $parse;
                parse(word).ok_or_else(|| {
                    format!("unknown {} {word:?} in the database", stringify!($t)).into()
                })
            }
        }
    )*};
}

stored_word! {
    Status => Status::parse,
    ScanType => ScanType::parse,
    ChunkStatus => |s| s.parse().ok(),
    AlertStatus => AlertStatus::parse,
    AlertKind => AlertKind::parse,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::on_db;
    use crate::store::testdb::both_backends;

    both_backends!(words_decode_and_unknown_ones_fail, |db| async move {
        let word = |sql: &'static str| {
            let db = db.clone();
            async move {
                let row: Result<(Status, ScanType), sqlx::Error> =
                    on_db!(&db, |p| sqlx::query_as(sql).fetch_one(p).await);
                row
            }
        };
        let known = word("SELECT CAST('cancelled' AS TEXT), CAST('deep' AS TEXT)");
        assert_eq!(known.await.unwrap(), (Status::Cancelled, ScanType::Deep));
        let err = word("SELECT CAST('finished' AS TEXT), CAST('fast' AS TEXT)")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, sqlx::Error::ColumnDecode { .. })
                && err.to_string().contains(r#"unknown Status "finished""#),
            "{err}"
        );
    });
}
