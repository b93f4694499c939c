//! [`GuardedClient`]: a connection with the mark check prepared on it, which opens
//! [`GuardedTransaction`]s without parsing the check each time.

use std::ops::{Deref, DerefMut};

use fenced_gate::Error;
use fenced_types::{FencingToken, LockName};
use tokio_postgres::Client;

use crate::check::{CheckStatements, PreparedCheck};
use crate::guarded::GuardedTransaction;
use crate::sqlerror::storage_error;

/// A `tokio_postgres::Client` that owns the check's prepared statements (they exist only
/// on this connection, hence the ownership). [`GuardedClient::begin`] is
/// [`crate::begin_guarded`] with the check bound and executed, not parsed and planned:
/// the way to guard writes on a hot path.
///
/// It derefs to the client for unguarded work. If the connection is lost, make a new
/// `GuardedClient` on a new one.
pub struct GuardedClient {
    /// The connection.
    client: Client,
    /// The check, prepared on `client`.
    check: PreparedCheck,
}

impl GuardedClient {
    /// Prepares the check on `client` (two round trips). `fenced.sql` must be installed
    /// ([`crate::install`]).
    pub async fn new(client: Client) -> Result<Self, Error> {
        let check = PreparedCheck::prepare(&client)
            .await
            .map_err(storage_error("preparing the fencing check"))?;
        Ok(GuardedClient { client, check })
    }

    /// Opens a [`GuardedTransaction`]: `BEGIN` and the check of `token` against
    /// `resource`'s mark, in one round trip. The answers are [`crate::begin_guarded`]'s:
    /// `Ok` with the mark raised and locked, [`Error::StaleToken`] with the transaction
    /// rolled back and nothing changed, or [`Error::Storage`].
    pub async fn begin(
        &mut self,
        resource: &LockName,
        token: FencingToken,
    ) -> Result<GuardedTransaction<'_>, Error> {
        GuardedTransaction::begin(
            &mut self.client,
            CheckStatements::Prepared(&self.check),
            resource,
            token,
        )
        .await
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
