//! [`begin_guarded`]: a transaction that starts with `fenced_check`, for the caller's own
//! statements; [`GuardedTransaction`]: that open transaction.

use std::ops::{Deref, DerefMut};

use fenced_gate::Error;
use fenced_types::{FencingToken, LockName};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use crate::sqlerror::{from_bigint, stale_token, storage_error, to_bigint};

/// An open transaction whose first statement raised `resource`'s mark to the caller's
/// token (or found it there). The mark row stays locked until the transaction ends, so a
/// newer holder waits, and the caller's statements and the mark commit together or not
/// at all (CONTRACT S5).
///
/// Run statements through `Deref` to [`tokio_postgres::Transaction`], then
/// [`GuardedTransaction::commit`]. Dropping it without committing rolls back, the check
/// included.
pub struct GuardedTransaction<'a> {
    /// The transaction, with `fenced_check` done.
    transaction: Transaction<'a>,
    /// The resource's mark after the check: the caller's token.
    mark: FencingToken,
}

impl GuardedTransaction<'_> {
    /// The resource's mark as this transaction set it (the caller's token).
    pub fn mark(&self) -> FencingToken {
        self.mark
    }

    /// Commits the caller's statements and the mark together. A failure here means
    /// neither is known to have committed.
    pub async fn commit(self) -> Result<(), Error> {
        self.transaction
            .commit()
            .await
            .map_err(storage_error("committing a guarded transaction"))?;
        Ok(())
    }

    /// Rolls back the caller's statements and the mark.
    pub async fn rollback(self) -> Result<(), Error> {
        self.transaction
            .rollback()
            .await
            .map_err(storage_error("rolling back a guarded transaction"))?;
        Ok(())
    }
}

impl<'a> Deref for GuardedTransaction<'a> {
    type Target = Transaction<'a>;

    fn deref(&self) -> &Transaction<'a> {
        &self.transaction
    }
}

impl<'a> DerefMut for GuardedTransaction<'a> {
    fn deref_mut(&mut self) -> &mut Transaction<'a> {
        &mut self.transaction
    }
}

/// Starts a transaction on `client` and runs `fenced_check(resource, token)` in it.
///
/// - `Ok`: the token is at least the mark; the mark is now `token` and locked by this
///   transaction until it ends. Run your statements, then commit.
/// - [`Error::StaleToken`] `{ presented, current }`: a newer holder has written or fenced
///   `resource`; the transaction is rolled back and nothing happened.
/// - [`Error::Storage`]: the database failed (connection lost; under REPEATABLE READ or
///   SERIALIZABLE a concurrent newer holder shows up as SQLSTATE 40001, retry); the
///   transaction is rolled back.
///
/// The transaction uses the session's isolation level (PostgreSQL's default: READ
/// COMMITTED). `fenced.sql` must be installed ([`crate::install`]).
pub async fn begin_guarded<'a>(
    client: &'a mut Client,
    resource: &LockName,
    token: FencingToken,
) -> Result<GuardedTransaction<'a>, Error> {
    let presented = to_bigint(token)?;
    let transaction = client
        .transaction()
        .await
        .map_err(storage_error("beginning a guarded transaction"))?;
    // Typed parameters: one round trip, no separate prepare of the statement.
    let checked = transaction
        .query_typed_one(
            "SELECT fenced_check($1, $2)",
            &[(&resource.as_str(), Type::TEXT), (&presented, Type::INT8)],
        )
        .await;
    let row = match checked {
        Ok(row) => row,
        Err(error) => {
            // The transaction is aborted either way; a failed rollback leaves it to the
            // connection (dropping the transaction sends ROLLBACK too), and the caller's
            // answer is the check's error.
            let _ = transaction.rollback().await;
            return Err(stale_token(&error, resource, token)
                .unwrap_or_else(|| Error::Storage(storage_error("calling fenced_check")(error))));
        }
    };
    let mark: i64 = row
        .try_get(0)
        .map_err(storage_error("reading fenced_check's answer"))?;
    let mark = from_bigint(mark, "reading fenced_check's answer")?;
    Ok(GuardedTransaction { transaction, mark })
}
