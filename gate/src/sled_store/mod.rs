//! The sled backend (feature `sled`): durable marks and data in one sled transaction,
//! acknowledged only after a shared flush + fdatasync.
//!
//! - [`backend`]: [`SledBackend`], the store.
//! - [`group_commit`]: [`GroupCommit`], one flush for many concurrent writers.
//! - `combiner`: one sled transaction for many concurrent writes.
//! - `encoding`: how marks, keys and values are laid out in sled's trees.

pub mod backend;
mod combiner;
mod encoding;
#[cfg(test)]
mod failed_sync_tests;
pub mod group_commit;
#[cfg(test)]
mod sync_fault;

pub use backend::SledBackend;
pub use group_commit::GroupCommit;
