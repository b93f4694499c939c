//! [`GuardedClient`]: a connection with the mark check prepared on it, which opens
//! [`GuardedTransaction`]s without parsing the check each time, and picks the cheaper of
//! its two forms from the last check it ran.

use std::ops::{Deref, DerefMut};

use fenced_gate::Error;
use fenced_types::{FencingToken, LockName};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::check::{CheckStatement, PreparedCheck};
use crate::guarded::GuardedTransaction;
use crate::sqlerror::storage_error;

/// A `tokio_postgres::Client` that owns the check's prepared statements (they exist only
/// on this connection, hence the ownership). [`GuardedClient::begin`] is
/// [`crate::begin_guarded`] with the check a prepared plain-SQL upsert instead of a
/// PL/pgSQL call: the way to guard writes on a hot path.
///
/// Which check it sends: [`crate::check::KEEP_MARK`] when the last check on this
/// connection accepted the same resource and token (a holder writing again: the mark is
/// most likely still that token, and only needs locking), [`crate::check::RAISE_MARK`]
/// otherwise. Both give the same answers; a wrong guess only costs time.
///
/// It derefs to the client for unguarded work. If the connection is lost, make a new
/// `GuardedClient` on a new one.
pub struct GuardedClient {
    /// The connection.
    client: Client,
    /// The check, prepared on `client`.
    check: PreparedCheck,
    /// The resource and token the last check on this connection accepted.
    last_accepted: LastAccepted,
}

impl GuardedClient {
    /// Prepares the check on `client` (one round trip). `fenced.sql` must be installed
    /// ([`crate::install`]).
    pub async fn new(client: Client) -> Result<Self, Error> {
        let check = PreparedCheck::prepare(&client)
            .await
            .map_err(storage_error("preparing the fencing check"))?;
        Ok(GuardedClient {
            client,
            check,
            last_accepted: LastAccepted(None),
        })
    }

    /// Opens a [`GuardedTransaction`]: `BEGIN` and the check of `token` against
    /// `resource`'s mark, in one round trip. The answers are [`crate::begin_guarded`]'s:
    /// `Ok` with the mark at the token (raised, or found there) and locked,
    /// [`Error::StaleToken`] with the transaction rolled back and nothing changed, or
    /// [`Error::Storage`].
    pub async fn begin(
        &mut self,
        resource: &LockName,
        token: FencingToken,
    ) -> Result<GuardedTransaction<'_>, Error> {
        let check = self.last_accepted.pick(&self.check, resource, token);
        let (transaction, _) =
            GuardedTransaction::begin(&mut self.client, check, resource, token, None).await?;
        self.last_accepted.note(resource, token);
        Ok(transaction)
    }

    /// [`GuardedClient::begin`], and the caller's first statement (prepared on this
    /// connection) sent in the same round trip, behind the check: `BEGIN`, the check and
    /// `statement` go out together. Beside the transaction comes the statement's own
    /// answer (rows affected, or its error, after which the transaction is aborted: roll
    /// it back or drop it). A stale token is [`Error::StaleToken`] as for `begin`; the
    /// server refused the statement then (the check's error aborted the transaction
    /// before it), so it changed nothing.
    pub async fn begin_executing(
        &mut self,
        resource: &LockName,
        token: FencingToken,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(GuardedTransaction<'_>, Result<u64, tokio_postgres::Error>), Error> {
        let check = self.last_accepted.pick(&self.check, resource, token);
        let first = Some((statement, params));
        let (transaction, executed) =
            GuardedTransaction::begin(&mut self.client, check, resource, token, first).await?;
        self.last_accepted.note(resource, token);
        match executed {
            Some(executed) => Ok((transaction, executed)),
            None => unreachable!("begin runs the first statement it is given"),
        }
    }

    /// The connection, without the prepared check.
    pub fn into_inner(self) -> Client {
        self.client
    }
}

impl Deref for GuardedClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for GuardedClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The resource and token of the last check a [`GuardedClient`] saw accepted, if any.
struct LastAccepted(Option<(LockName, FencingToken)>);

impl LastAccepted {
    /// Whether the last accepted check was of `token` against `resource`.
    fn is(&self, resource: &LockName, token: FencingToken) -> bool {
        matches!(&self.0, Some((last, last_token)) if last == resource && *last_token == token)
    }

    /// The form of `check` for `token` against `resource`: [`PreparedCheck::keep`] if
    /// the last accepted check was of that pair, [`PreparedCheck::raise`] otherwise.
    fn pick<'c>(
        &self,
        check: &'c PreparedCheck,
        resource: &LockName,
        token: FencingToken,
    ) -> CheckStatement<'c> {
        CheckStatement::Prepared(if self.is(resource, token) {
            check.keep()
        } else {
            check.raise()
        })
    }

    /// Remembers that a check of `token` against `resource` was accepted.
    fn note(&mut self, resource: &LockName, token: FencingToken) {
        if !self.is(resource, token) {
            self.0 = Some((resource.clone(), token));
        }
    }
}
