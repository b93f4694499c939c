//! [`GuardedTransaction`]: an open transaction that starts with the mark check, for the
//! caller's own statements; [`begin_guarded`] opens one on a plain `tokio_postgres::Client`.
//!
//! Opening one is one round trip: `BEGIN` and the check ([`crate::check`]) go out
//! pipelined, so a guarded transaction costs the round trips of the same transaction
//! without the gate. [`crate::GuardedClient`] opens it with the check prepared once per
//! connection, for hot paths, and can send the caller's first statement in the same
//! round trip.

use std::ops::Deref;

use fenced_gate::Error;
use fenced_types::{FencingToken, LockName};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::check::{CheckStatement, CALL_FENCED_CHECK};
use crate::pipeline::{pipelined, send_without_waiting};
use crate::sqlerror::{from_bigint, stale_token, storage_error, to_bigint};

/// An open transaction whose first statement raised `resource`'s mark to the caller's
/// token (or found it there). The mark row stays locked until the transaction ends, so a
/// newer holder waits, and the caller's statements and the mark commit together or not
/// at all (CONTRACT S5).
///
/// It borrows the connection exclusively. Run statements through `Deref` to
/// [`tokio_postgres::Client`] (`tx.execute(..)`, `tx.query_one(..)`, `tx.prepare(..)`):
/// they run inside this transaction. End it with [`GuardedTransaction::commit`] or
/// [`GuardedTransaction::rollback`], never with a `COMMIT` or `ROLLBACK` statement of your
/// own. Dropping it without either rolls back, the check included: `Drop` puts a
/// `ROLLBACK` on the connection's queue without waiting for it (as
/// `tokio_postgres::Transaction` does), so whatever the connection runs next runs after
/// the rollback and the connection is safe to reuse.
pub struct GuardedTransaction<'a> {
    /// The connection, inside the transaction.
    client: &'a mut Client,
    /// The resource's mark after the check: the caller's token.
    mark: FencingToken,
    /// True until `commit` or `rollback` sent its statement; `Drop` rolls back while true.
    open: bool,
}

impl<'a> GuardedTransaction<'a> {
    /// Sends `BEGIN`, the check and, if given, the caller's first statement together and
    /// waits for their answers (one round trip). The first statement's own answer comes
    /// back beside the transaction; after a refused check the server refuses it too (the
    /// check's error aborted the transaction), so it changes nothing.
    ///
    /// A future dropped before it finishes drops the half-made transaction, which rolls
    /// back: the connection never stays inside a transaction nobody owns.
    pub(crate) async fn begin(
        client: &'a mut Client,
        check: CheckStatement<'_>,
        resource: &LockName,
        token: FencingToken,
        first: Option<(&Statement, &[&(dyn ToSql + Sync)])>,
    ) -> Result<
        (
            GuardedTransaction<'a>,
            Option<Result<u64, tokio_postgres::Error>>,
        ),
        Error,
    > {
        let presented = to_bigint(token)?;
        let mut transaction = GuardedTransaction {
            client,
            mark: token,
            open: true,
        };
        let shared: &Client = transaction.client;
        let name = resource.as_str();
        // Each way is its own pipeline of concrete request futures: one future that picks
        // the check inside (an `async fn` with a `match`) makes every guarded transaction
        // measurably slower (pg_gate_cost, 16 writers).
        let (begun, raised, first) = match (check, first) {
            (CheckStatement::Unprepared, _) => {
                let (begun, raised) = pipelined(
                    shared.batch_execute("BEGIN"),
                    shared.query_typed_one(
                        CALL_FENCED_CHECK,
                        &[(&name, Type::TEXT), (&presented, Type::INT8)],
                    ),
                )
                .await;
                (begun, raised, None)
            }
            (CheckStatement::Prepared(check), None) => {
                let (begun, raised) = pipelined(
                    shared.batch_execute("BEGIN"),
                    shared.query_one(check, &[&name, &presented]),
                )
                .await;
                (begun, raised, None)
            }
            (CheckStatement::Prepared(check), Some((statement, params))) => {
                let ((begun, raised), first) = pipelined(
                    pipelined(
                        shared.batch_execute("BEGIN"),
                        shared.query_one(check, &[&name, &presented]),
                    ),
                    shared.execute(statement, params),
                )
                .await;
                (begun, raised, Some(first))
            }
        };
        // On every failure below the transaction is rolled back before the answer (a
        // failed rollback leaves it to the server, which ends a lost connection's
        // transaction by rolling it back).
        if let Err(error) = begun {
            let _ = transaction.rollback().await;
            return Err(Error::Storage(storage_error(
                "beginning a guarded transaction",
            )(error)));
        }
        let row = match raised {
            Ok(row) => row,
            Err(error) => {
                let _ = transaction.rollback().await;
                return Err(stale_token(&error, resource, token).unwrap_or_else(|| {
                    Error::Storage(storage_error("checking the token against the mark")(error))
                }));
            }
        };
        let mark: i64 = row
            .try_get(0)
            .map_err(storage_error("reading the check's answer"))?;
        transaction.mark = from_bigint(mark, "reading the check's answer")?;
        Ok((transaction, first))
    }

    /// The resource's mark as this transaction set it (the caller's token).
    pub fn mark(&self) -> FencingToken {
        self.mark
    }

    /// Commits the caller's statements and the mark together. A failure here means
    /// neither is known to have committed. If one of the caller's statements failed, the
    /// server has aborted the transaction and this `COMMIT` rolls it back: nothing lands.
    pub async fn commit(mut self) -> Result<(), Error> {
        self.open = false;
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(storage_error("committing a guarded transaction"))?;
        Ok(())
    }

    /// Rolls back the caller's statements and the mark.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.open = false;
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(storage_error("rolling back a guarded transaction"))?;
        Ok(())
    }
}

impl Deref for GuardedTransaction<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl Drop for GuardedTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            send_without_waiting(self.client.batch_execute("ROLLBACK"));
        }
    }
}

/// Opens a [`GuardedTransaction`] on `client`: sends `BEGIN` and the check of `token`
/// against `resource`'s mark in one round trip.
///
/// - `Ok`: the token is at least the mark; the mark is now `token` and locked by this
///   transaction until it ends. Run your statements, then commit.
/// - [`Error::StaleToken`] `{ presented, current }`: a newer holder has written or fenced
///   `resource`; the transaction is rolled back and nothing happened.
/// - [`Error::Storage`]: the database failed (connection lost; under REPEATABLE READ or
///   SERIALIZABLE a concurrent newer holder shows up as SQLSTATE 40001, retry); the
///   transaction is rolled back.
///
/// The check is a call of `fenced_check`; [`crate::GuardedClient`] prepares a cheaper
/// plain-SQL check once per connection. The transaction uses the session's isolation level (PostgreSQL's
/// default: READ COMMITTED). `fenced.sql` must be installed ([`crate::install`]).
pub async fn begin_guarded<'a>(
    client: &'a mut Client,
    resource: &LockName,
    token: FencingToken,
) -> Result<GuardedTransaction<'a>, Error> {
    let (transaction, _) =
        GuardedTransaction::begin(client, CheckStatement::Unprepared, resource, token, None)
            .await?;
    Ok(transaction)
}
