//! The one mapping from [`Error`] to a gRPC status, and its inverse for clients.

use fenced_proto::metadata::{FENCING_TOKEN_CURRENT, FENCING_TOKEN_PRESENTED, SEQUENCER_REFUSED};
use fenced_types::FencingToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::error::{Error, StorageError};

impl From<Error> for Status {
    /// Stale or not-live tokens are `FAILED_PRECONDITION` with both tokens in the message
    /// and in `fencing-token-presented` / `fencing-token-current` metadata; a forged,
    /// borrowed or missing sequencer is `PERMISSION_DENIED` (a malformed one
    /// `INVALID_ARGUMENT`) with the kind in `fencing-sequencer-refused`; bad input is
    /// `INVALID_ARGUMENT`; an unreachable lock server `UNAVAILABLE`; a store that stopped at
    /// a failed sync `UNAVAILABLE` too (retry once it is restarted); other storage failures
    /// `INTERNAL`.
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::StaleToken {
                presented, current, ..
            } => Status::with_metadata(
                Code::FailedPrecondition,
                message,
                tokens(presented, Some(current)),
            ),
            Error::NotLiveHolder {
                presented, live, ..
            } => Status::with_metadata(Code::FailedPrecondition, message, tokens(presented, live)),
            Error::Sequencer(refusal) => {
                let code = if refusal.is_malformed() {
                    Code::InvalidArgument
                } else {
                    Code::PermissionDenied
                };
                let mut metadata = MetadataMap::new();
                metadata.insert(
                    SEQUENCER_REFUSED,
                    MetadataValue::from_static(refusal.kind()),
                );
                Status::with_metadata(code, message, metadata)
            }
            Error::SequencerRequired { .. } => {
                let mut metadata = MetadataMap::new();
                metadata.insert(SEQUENCER_REFUSED, MetadataValue::from_static("required"));
                Status::with_metadata(Code::PermissionDenied, message, metadata)
            }
            Error::SequencerTokenMismatch { .. } | Error::SequencerMismatch => {
                Status::invalid_argument(message)
            }
            Error::MissingToken
            | Error::InvalidToken(_)
            | Error::TokenMismatch { .. }
            | Error::InvalidResource(_)
            | Error::EmptyKey { .. }
            | Error::KeyTooLong { .. }
            | Error::ValueTooLarge { .. } => Status::invalid_argument(message),
            Error::CheckUnavailable(_) => Status::unavailable(message),
            Error::Storage(StorageError::Stopped { .. }) => Status::unavailable(message),
            Error::Storage(StorageError::Failed { .. }) => Status::internal(message),
        }
    }
}

fn tokens(presented: FencingToken, current: Option<FencingToken>) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        FENCING_TOKEN_PRESENTED,
        MetadataValue::from(presented.get()),
    );
    if let Some(current) = current {
        metadata.insert(FENCING_TOKEN_CURRENT, MetadataValue::from(current.get()));
    }
    metadata
}

/// For clients: the `(presented, current)` tokens of a stale-token refusal, read from its
/// metadata; `None` for any other status.
pub fn stale_tokens(status: &Status) -> Option<(FencingToken, FencingToken)> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    let read = |key: &str| -> Option<FencingToken> {
        status.metadata().get(key)?.to_str().ok()?.parse().ok()
    };
    Some((read(FENCING_TOKEN_PRESENTED)?, read(FENCING_TOKEN_CURRENT)?))
}

#[cfg(test)]
mod tests {
    use fenced_types::LockName;

    use super::*;

    #[test]
    fn stale_carries_both_tokens_in_message_and_metadata() {
        let t = |v| FencingToken::new(v).unwrap();
        let status = Status::from(Error::StaleToken {
            resource: LockName::new("orders").unwrap(),
            presented: t(33),
            current: t(34),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status
            .message()
            .starts_with("stale fencing token: presented 33, current 34"));
        assert_eq!(stale_tokens(&status), Some((t(33), t(34))));
        assert_eq!(
            Status::from(Error::ValueTooLarge { len: 2, max: 1 }).code(),
            Code::InvalidArgument
        );
        assert_eq!(stale_tokens(&Status::internal("x")), None);
    }

    // A store that stopped at a failed sync is UNAVAILABLE (a restart brings it back), and
    // the message names the failure; a one-off storage failure stays INTERNAL.
    #[test]
    fn a_stopped_store_is_unavailable_and_names_its_failure() {
        let failure = StorageError::new("fdatasync of sled's data file", "Input/output error");
        let status = Status::from(Error::Storage(failure.clone().into_stopped()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("stopped")
                && status.message().contains("fdatasync of sled's data file")
                && status.message().contains("Input/output error"),
            "{status:?}"
        );
        assert_eq!(Status::from(Error::Storage(failure)).code(), Code::Internal);
    }
}
