//! [`SequencerError`]: why a sequencer was refused, with the evidence.

use crate::{FencingToken, LockName};

use super::KeyId;

/// Why a sequencer was refused. Each refusal of a well-formed sequencer names its key id,
/// lock and token (as the sequencer claims them), so an operator can tell who presented
/// what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequencerError {
    /// The bytes end before the sequencer does.
    #[error("malformed sequencer: it ends before {missing}")]
    Truncated {
        /// The field that is missing or cut short.
        missing: &'static str,
    },
    /// The bytes are not a sequencer.
    #[error("malformed sequencer: {reason}")]
    Malformed {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A format version this code does not know.
    #[error("unsupported sequencer version {version} (this gate reads version 1)")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The sequencer was signed by a key the verifier does not know: a key that was never
    /// the server's, or one retired from the public-keys file.
    #[error("sequencer signed by unknown key \"{key_id}\" (lock \"{lock}\", token {token})")]
    UnknownKey {
        /// The key id it names.
        key_id: KeyId,
        /// The lock it claims.
        lock: LockName,
        /// The token it claims.
        token: FencingToken,
    },
    /// The signature does not match the key id, lock and token: the sequencer was made
    /// up, or one of its fields (the token, the lock) or the signature was changed.
    #[error("sequencer has a bad signature for key \"{key_id}\" (lock \"{lock}\", token {token}): forged or tampered with")]
    BadSignature {
        /// The key id it names.
        key_id: KeyId,
        /// The lock it claims.
        lock: LockName,
        /// The token it claims.
        token: FencingToken,
    },
    /// A genuine sequencer, but of another lock than the one that guards the resource.
    #[error("sequencer of lock \"{lock}\" presented for resource \"{resource}\" (key \"{key_id}\", token {token}): a token of another lock")]
    OtherLock {
        /// The key id that signed it.
        key_id: KeyId,
        /// The lock it was granted for.
        lock: LockName,
        /// Its token.
        token: FencingToken,
        /// The lock that guards the resource written to.
        resource: LockName,
    },
}

impl SequencerError {
    /// A short stable name of the kind of refusal, for metrics and metadata.
    pub fn kind(&self) -> &'static str {
        match self {
            SequencerError::Truncated { .. } | SequencerError::Malformed { .. } => "malformed",
            SequencerError::UnsupportedVersion { .. } => "unsupported-version",
            SequencerError::UnknownKey { .. } => "unknown-key",
            SequencerError::BadSignature { .. } => "bad-signature",
            SequencerError::OtherLock { .. } => "other-lock",
        }
    }

    /// True if the bytes were not a sequencer at all (bad input rather than a forgery).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            SequencerError::Truncated { .. }
                | SequencerError::Malformed { .. }
                | SequencerError::UnsupportedVersion { .. }
        )
    }
}
