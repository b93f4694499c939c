//! [`Error`]: what stops the server (at start or while running). Refusals of single
//! requests are not errors: they are [`crate::table::Refusal`]s, answered and forgotten.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::journal::JournalDamage;
use crate::table::RestoreError;

/// A failure that stops the server, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// sled could not open the data directory (it may be corrupt or from another program).
    #[error("cannot open the data directory {dir}: {reason}")]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// What sled (or its panic) said.
        reason: String,
    },
    /// A stored record does not decode: the data directory is corrupt. The server refuses to
    /// start rather than guess, since a guess could reset the token counter.
    #[error("corrupt record {key} in {dir}: {reason}")]
    CorruptRecord {
        /// The data directory.
        dir: PathBuf,
        /// The record's key, escaped.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A journal file is damaged in a way no crash leaves behind (the `journal` module's
    /// documentation gives the rule). The server refuses to start: replaying up to the
    /// damage would drop acknowledged writes, and could issue tokens again.
    #[error(
        "corrupt journal file {} at byte {offset}: {damage}; refusing to start rather than \
         drop acknowledged writes (restore the data directory from a backup)",
        file.display()
    )]
    CorruptJournal {
        /// The journal file.
        file: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong there.
        damage: JournalDamage,
    },
    /// The stored state contradicts itself.
    #[error("inconsistent data in {dir}: {source}")]
    Inconsistent {
        /// The data directory.
        dir: PathBuf,
        /// What contradicts what.
        source: RestoreError,
    },
    /// Reading or writing the store failed while running. Memory and disk may now differ,
    /// so the server stops; a restart recovers from what is on disk, which is everything
    /// any client was told.
    #[error("storage failure during {during}: {reason}")]
    Storage {
        /// What the server was doing.
        during: &'static str,
        /// What sled or the OS said.
        reason: String,
    },
    /// The lock table's mutex was poisoned by a panic: its state cannot be trusted.
    #[error("the lock table was poisoned by a panic")]
    Poisoned,
    /// A TLS file could not be read, or holds no usable certificate chain or key.
    #[error("cannot use TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What the OS or rustls said.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}
