//! [`Error`]: why the gate refused or failed a call; [`StorageError`]: a backend failure.
//!
//! Refusals (a stale token, bad input, a token the lock server no longer backs) are kept
//! apart from failures (the disk, the lock server unreachable): a refusal is the gate doing
//! its job and changes nothing, a failure means the caller cannot know more than "not
//! acknowledged".

use fenced_types::{FencingToken, InvalidInput, LockName, SequencerError};

/// Why a gate call did not succeed. Every variant carries the evidence a caller or an
/// operator needs; none of them left any effect on the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token is below the resource's high-water mark: some newer holder has written or
    /// fenced the resource (CONTRACT S5).
    #[error(
        "stale fencing token: presented {presented}, current {current} (resource {resource:?})"
    )]
    StaleToken {
        /// The resource written to.
        resource: LockName,
        /// The token the writer presented.
        presented: FencingToken,
        /// The resource's mark, which the presented token is below.
        current: FencingToken,
    },
    /// Strict mode: the lock server says the token is not the live holder's token.
    #[error(
        "fencing token {presented} is not the live holder's token of lock {resource:?} \
         (live holder's token: {})",
        live.map_or_else(|| "none, the lock is free".to_string(), |t| t.to_string())
    )]
    NotLiveHolder {
        /// The resource (and lock) written to.
        resource: LockName,
        /// The token the writer presented.
        presented: FencingToken,
        /// The live holder's token, if the lock is held.
        live: Option<FencingToken>,
    },
    /// No token came with the write: a gated write must carry one.
    #[error("no fencing token: send it in the request body or as `fencing-token` metadata")]
    MissingToken,
    /// The token is malformed (not decimal) or zero.
    #[error("invalid fencing token: {0}")]
    InvalidToken(InvalidInput),
    /// The body and the metadata carry different tokens, so it is unclear which one the
    /// writer holds.
    #[error("fencing token in the request body ({body}) differs from the `fencing-token` metadata ({metadata})")]
    TokenMismatch {
        /// The token in the request body.
        body: FencingToken,
        /// The token in the metadata.
        metadata: FencingToken,
    },
    /// The sequencer was refused: malformed, signed by an unknown key, with a bad
    /// signature (made up or tampered with), or of another lock than the resource's. The
    /// inner error names the kind and the evidence (key id, lock, token).
    #[error("sequencer refused: {0}")]
    Sequencer(SequencerError),
    /// This gate verifies sequencers and the write carried none: a bare token is a number
    /// anyone can read, so it proves nothing here.
    #[error(
        "this gate demands a signed sequencer (`fencing-sequencer` metadata or the \
         request's sequencer field){}; a bare fencing token is refused",
        token.map_or_else(String::new, |t| format!(", and the write carried only token {t}"))
    )]
    SequencerRequired {
        /// The bare token the write carried, if any.
        token: Option<FencingToken>,
    },
    /// The write carried a sequencer and a bare token that differ.
    #[error(
        "the sequencer's token {sequencer} differs from the fencing token {token} sent with it"
    )]
    SequencerTokenMismatch {
        /// The verified sequencer's token.
        sequencer: FencingToken,
        /// The bare token sent alongside.
        token: FencingToken,
    },
    /// The request body and the metadata carry different sequencers.
    #[error("the sequencer in the request body differs from the `fencing-sequencer` metadata")]
    SequencerMismatch,
    /// The resource name breaks the naming rules.
    #[error("invalid resource name: {0}")]
    InvalidResource(InvalidInput),
    /// The key is empty.
    #[error("key is empty: keys are 1 to {max} bytes")]
    EmptyKey {
        /// The longest key allowed.
        max: usize,
    },
    /// The key is longer than the configured limit.
    #[error("key is {len} bytes long: keys are 1 to {max} bytes")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The longest key allowed.
        max: usize,
    },
    /// The value is larger than the configured limit.
    #[error("value is {len} bytes long: values are at most {max} bytes")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// Strict mode: the lock server could not be asked; the write was not attempted.
    #[error("could not check the token with the lock server: {0}")]
    CheckUnavailable(String),
    /// The backend failed; the write may or may not have been applied, and was not
    /// acknowledged. [`StorageError::Stopped`]: the store stopped at a failed sync and
    /// refuses every call until it is reopened.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// True for refusals (the request was wrong or stale), false for failures (storage,
    /// lock server): a caller retries failures, never refusals.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Storage(_) | Error::CheckUnavailable(_))
    }
}

/// A backend could not read or write its storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// This call met a storage failure; the store goes on serving.
    #[error("storage failed while {during}: {detail}")]
    Failed {
        /// What the backend was doing ("opening", "committing", "flushing", ...).
        during: &'static str,
        /// The underlying error, as text (so the error stays `Clone` and backend-agnostic).
        detail: String,
    },
    /// The store stopped at a failure to make writes durable (a failed flush or
    /// `fdatasync`) and acknowledges nothing, no write, fence or read, until it is
    /// reopened. After such a failure Linux may have dropped the pages it could not write
    /// and report the next sync as clean, so nothing acknowledged from then on could be
    /// trusted; reopening reads back what the disk really holds. Every call from the
    /// failure on gets this, the ones that waited for the failed sync included; the fields
    /// name that first failure.
    #[error(
        "the store stopped after storage failed while {during}: {detail}; it acknowledges \
         nothing until it is reopened"
    )]
    Stopped {
        /// What the backend was doing when it failed ("fdatasync of sled's data file", ...).
        during: &'static str,
        /// The underlying error of that first failure, as text.
        detail: String,
    },
}

impl StorageError {
    /// A storage failure of this call, with its context.
    pub fn new(during: &'static str, detail: impl std::fmt::Display) -> Self {
        StorageError::Failed {
            during,
            detail: detail.to_string(),
        }
    }

    /// This failure as the reason the store stopped (a `Stopped` error stays as it is).
    pub fn into_stopped(self) -> Self {
        match self {
            StorageError::Failed { during, detail } => StorageError::Stopped { during, detail },
            stopped @ StorageError::Stopped { .. } => stopped,
        }
    }

    /// True if the store has stopped (see [`StorageError::Stopped`]).
    pub fn is_stopped(&self) -> bool {
        matches!(self, StorageError::Stopped { .. })
    }
}

/// A [`crate::Config`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gate config: {0}")]
pub struct ConfigError(pub String);
