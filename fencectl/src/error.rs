//! [`Error`]: what can go wrong in fencectl, each with its exit code.

use std::path::PathBuf;

use crate::exit;

/// What went wrong, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint was given.
    #[error("no endpoint: give --endpoints or FENCED_ENDPOINTS")]
    NoEndpoint,
    /// None of the endpoints could be reached.
    #[error("cannot reach any endpoint ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last endpoint's error.
        last: String,
    },
    /// A TLS or bearer token file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SDK refused or failed.
    #[error("{0}")]
    Client(#[from] fenced_client::Error),
    /// The lock was not acquired.
    #[error("{lock} not acquired: {why}")]
    NotAcquired {
        /// The lock.
        lock: String,
        /// The SDK's words.
        why: String,
    },
    /// The kill settings would stop the children of healthy leases, or leave no time.
    #[error("{0}")]
    Settings(String),
    /// The command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers or the child's wait failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A key file could not be created or written (`keygen`).
    #[error("cannot {what} {path}: {source}")]
    KeyFile {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

impl Error {
    /// The exit code that reports this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotAcquired { .. } => exit::NOT_ACQUIRED,
            Error::Settings(_) => exit::USAGE,
            Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                exit::NOT_FOUND
            }
            Error::Spawn { .. } => exit::CANNOT_RUN,
            Error::KeyFile { .. } => exit::CANT_CREATE,
            _ => exit::UNAVAILABLE,
        }
    }
}
