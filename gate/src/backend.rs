//! [`Backend`]: what a store must provide for the gate to sit on it.

use fenced_types::{FencingToken, LockName};

use crate::error::StorageError;
use crate::op::{Accepted, Stored, WriteOp};
use crate::rule::Admission;

/// The answer of [`Backend::commit`]: accepted, or refused as stale. Storage failures are
/// the `Err` side, kept apart from refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The write was applied and is durable.
    Accepted(Accepted),
    /// The token was below the mark; nothing changed.
    Stale {
        /// The resource's mark.
        current: FencingToken,
    },
}

/// A store the gate can guard: it keeps, per resource, a high-water mark next to the data.
///
/// The contract every implementation keeps (and [`crate::conformance`] checks):
/// - [`Backend::commit`] reads the resource's mark, asks [`Admission::decide`], and either
///   changes nothing (refused) or applies `op` **and** stores the new mark, all in one
///   atomic step: no interleaving of two commits on one resource may let a lower token's
///   data land over a higher one's.
/// - An `Accepted` verdict is returned only once the data and the mark are durable as far
///   as the backend promises durability (the sled backend: flushed and fdatasynced), and a
///   `Stale` verdict or a read reports only state that is at least that durable, so a
///   crash can never take back something a caller was told.
/// - Marks are per resource and independent; a fence (`op == None`) raises the mark and
///   writes no data.
/// - A backend that fails to make commits durable (a failed sync) acknowledges nothing from
///   then on: every later call, and every call waiting for that sync, fails with
///   [`StorageError::Stopped`] naming the failure, until the store is reopened. Retrying
///   the sync is not safe: after a failed writeback Linux may report the next one as clean.
pub trait Backend: Send + Sync + 'static {
    /// Checks `token` against `resource`'s mark and, if admitted, applies `op` (or, for
    /// `None`, only raises the mark), atomically and durably.
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError>;

    /// Reads one key of a resource.
    fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, StorageError>;

    /// The resource's mark, `None` if it has never seen a token.
    fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, StorageError>;

    /// Makes everything committed so far durable (for shutdown); commits already are.
    fn flush(&self) -> Result<(), StorageError>;
}

impl<B: Backend> Backend for std::sync::Arc<B> {
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError> {
        (**self).commit(resource, token, op, admission)
    }

    fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, StorageError> {
        (**self).read(resource, key)
    }

    fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, StorageError> {
        (**self).mark(resource)
    }

    fn flush(&self) -> Result<(), StorageError> {
        (**self).flush()
    }
}
