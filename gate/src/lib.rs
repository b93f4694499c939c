//! The storage gate: lets no stale write through (CONTRACT S5).
//!
//! A lock alone cannot protect data: a holder that pauses (GC, `SIGSTOP`, a slow network)
//! may wake up after its lease expired and write anyway. So every write carries the
//! holder's fencing token, and the store keeps, per resource, a high-water **mark**: the
//! highest token it has accepted or been fenced with. A [`Gate`] checks the token against
//! the mark and applies the write in one atomic step; a lower token is refused with
//! [`Error::StaleToken`] and has no effect. The mark is stored with the data, in the same
//! transaction, so a restart cannot reopen the door.
//!
//! ```
//! use fenced_gate::{Error, Gate, MemoryBackend, WriteOp};
//! use fenced_types::{FencingToken, LockName};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any backend: `SledBackend::open(dir)?` (feature `sled`) for a durable one.
//! let gate = Gate::new(MemoryBackend::new());
//! let orders = LockName::new("orders")?;
//! let (zombie, holder) = (FencingToken::new(33)?, FencingToken::new(34)?);
//!
//! // The new holder fences the resource before it starts work...
//! gate.fence(&orders, holder)?;
//! gate.write(&orders, holder, &WriteOp::put("order-1", "paid"))?;
//!
//! // ...so the old holder, waking up from a pause, cannot write, to any key.
//! match gate.write(&orders, zombie, &WriteOp::put("order-1", "refunded")) {
//!     Err(Error::StaleToken { presented, current, .. }) => {
//!         assert_eq!((presented, current), (zombie, holder));
//!     }
//!     other => panic!("the zombie got through: {other:?}"),
//! }
//! let stored = gate.read(&orders, b"order-1")?.expect("written");
//! assert_eq!((stored.value.as_slice(), stored.token), (&b"paid"[..], holder));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`gate`]: [`Gate`], `write` / `fence` / `read` / `mark`.
//! - [`backend`]: the [`Backend`] trait a store implements, and [`Verdict`].
//! - [`rule`]: [`Admission::decide`], the rule itself, shared by every backend.
//! - [`op`]: [`WriteOp`] in, [`Accepted`] and [`Stored`] out.
//! - [`config`]: [`Config`] (key and value limits, admission) with `validate()`.
//! - [`error`]: [`Error`] (refusals with their evidence, and failures) and [`StorageError`].
//! - [`token_source`]: [`token_source::reconcile`], body token vs metadata token.
//! - [`memory`]: [`MemoryBackend`], for tests and simulation.
//! - `sequencer` (feature `sequencer`): sequencer mode, `Gate::write_sequenced` and
//!   `sequencer::admit`: tokens signed by the lock server, verified offline.
//! - [`strict`]: strict mode, [`Strict`] over a [`TokenChecker`] (when to choose it: there).
//! - `sled_store` (feature `sled`): `SledBackend`, durable, with group commit and batched
//!   transactions; it stops at the first failed sync ([`StorageError::Stopped`]).
//! - `grpc` (feature `tonic`): the `fencing-token` interceptor / tower layer, the
//!   `From<Error> for tonic::Status`, and `LockServiceChecker` over `CheckToken`.
//! - `conformance` (feature `conformance`): the suite every backend runs.
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod error;
pub mod gate;
pub mod memory;
pub mod op;
pub mod rule;
pub mod strict;
pub mod token_source;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "sequencer")]
pub mod sequencer;
#[cfg(feature = "sled")]
pub mod sled_store;

pub use backend::{Backend, Verdict};
pub use config::Config;
pub use error::{ConfigError, Error, StorageError};
pub use gate::Gate;
pub use memory::MemoryBackend;
pub use op::{Accepted, Stored, WriteOp};
pub use rule::Admission;
pub use strict::{Liveness, Strict, TokenChecker};

#[cfg(feature = "sled")]
pub use sled_store::{GroupCommit, SledBackend};
