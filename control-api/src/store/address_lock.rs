//! One self-scan POST at a time per address and scan type across every API node: on
//! PostgreSQL a transaction-scoped advisory lock, held on a pooled connection of its own
//! until released; on SQLite nothing (one API process, whose `submit_lock` serialises its
//! POSTs). It makes the look for a live scan, the limits and the insert one step, so two
//! nodes cannot both start a scan that the second should have joined.

use super::Db;
use crate::model::ScanType;

/// The advisory lock's first key ("self"); the second is `hashtext('<address>:<type>')`.
const SELFSCAN_LOCK: i32 = 0x73_65_6c_66;

/// A held lock. [`AddressLock::release`] ends it; a dropped one ends when sqlx rolls back
/// the transaction as its connection goes back to the pool.
pub struct AddressLock(Option<sqlx::Transaction<'static, sqlx::Postgres>>);

impl std::fmt::Debug for AddressLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AddressLock")
            .field(&self.0.is_some())
            .finish()
    }
}

impl AddressLock {
    /// Waits for and takes the lock of `ip` and `t` (at once on SQLite).
    pub async fn take(db: &Db, ip: &str, t: ScanType) -> Result<AddressLock, sqlx::Error> {
        let Db::Postgres(p) = db else {
            return Ok(AddressLock(None));
        };
        let mut tx = p.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(SELFSCAN_LOCK)
            .bind(format!("{ip}:{}", t.as_str()))
            .execute(&mut *tx)
            .await?;
        Ok(AddressLock(Some(tx)))
    }

    /// Lets the next POST of this address and type go on.
    pub async fn release(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A second POST of the same address and type waits for the first to release; one of
    /// another address or type does not.
    #[tokio::test]
    async fn a_second_post_of_the_same_address_waits_for_the_first() {
        let t = crate::store::testdb::postgres().await;
        let first = AddressLock::take(&t.db, "198.18.0.9", ScanType::Fast)
            .await
            .unwrap();
        for (ip, ty) in [
            ("198.18.0.10", ScanType::Fast),
            ("198.18.0.9", ScanType::Deep),
        ] {
            let other = AddressLock::take(&t.db, ip, ty);
            let other = tokio::time::timeout(Duration::from_secs(5), other).await;
            other.expect("not held").unwrap().release().await.unwrap();
        }
        let db = t.db.clone();
        let second = tokio::spawn(async move {
            AddressLock::take(&db, "198.18.0.9", ScanType::Fast)
                .await
                .unwrap()
                .release()
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second POST did not wait");
        first.release().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("taken once released")
            .unwrap()
            .unwrap();
    }
}
