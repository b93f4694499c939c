//! The nouns of the fenced protocol, validated where they are made.
//!
//! This crate sits at the bottom of the workspace: the storage gate, the generated protocol,
//! the server and the client all speak in these types, so that no raw `u64` or `String`
//! crosses a crate boundary unchecked. It depends on nothing heavy, so any storage service
//! can embed it.
//!
//! # Layout
//! - [`token`]: [`FencingToken`], the number that only goes up.
//! - [`lease_id`]: [`LeaseId`], the 128-bit bearer secret that names one lease.
//! - [`lock_name`]: [`LockName`], a validated lock (or resource) name.
//! - [`error`]: [`InvalidInput`], why a value was refused.
//! - [`sequencer`]: [`Sequencer`], a token signed by the lock server with its lock and key
//!   id, checked offline by gates; signing and verifying with feature `signing`.
//! - `service` (feature `service`): what the binaries share to run as services: `--config`
//!   TOML files and systemd's readiness notification.
#![deny(missing_docs)]

pub mod error;
pub mod lease_id;
pub mod lock_name;
pub mod sequencer;
#[cfg(feature = "service")]
pub mod service;
pub mod token;

pub use error::InvalidInput;
pub use lease_id::LeaseId;
pub use lock_name::LockName;
pub use sequencer::{KeyId, Sequencer, SequencerError};
pub use token::FencingToken;
