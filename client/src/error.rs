//! [`Error`]: everything that can go wrong in the SDK, with the server's gRPC statuses mapped
//! back to typed variants (the inverse of the server's `From<Error> for Status`), and
//! [`FenceError`]: why a lease will not hand out its token.

use std::time::Duration;

use fenced_proto::metadata::{
    COMPACTED_CODE, ERROR_CODE, HOLDER, HOLDER_TOKEN as TOKEN, NOT_LEADER_CODE, OLDEST_REVISION,
};
use fenced_proto::v1::SessionError;
use fenced_types::{FencingToken, InvalidInput, LockName};
use tonic::{Code, Status};

use crate::state::{LostReason, SuspectReason};

/// An error of the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range; `field` names it.
    #[error("invalid client setting {field}: {why}")]
    Config {
        /// The offending field of [`Config`](crate::Config).
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The endpoint URL could not be used.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The URL given.
        endpoint: String,
        /// tonic's complaint.
        source: tonic::transport::Error,
    },
    /// The server could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The URL given.
        endpoint: String,
        /// tonic's complaint.
        source: tonic::transport::Error,
    },
    /// A lock name, lease id or token broke the protocol's rules (checked before sending).
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// The lease id this client chose for a new lease is in use (`ABORTED`,
    /// `lease-id-taken`): an acquire sent again after its first attempt's grant was
    /// already handed back. The SDK then acquires once more with a fresh id.
    #[error("the lease id chosen for a new lease is in use: {message}")]
    LeaseIdTaken {
        /// The server's message.
        message: String,
    },
    /// The lock stayed taken (`ABORTED`): by whom, with which token, as far as the server
    /// said.
    #[error("lock {lock} is busy: {message}")]
    Busy {
        /// The lock asked for.
        lock: String,
        /// The current holder's name, if the server named it.
        holder: Option<String>,
        /// The current holder's token, if the server named it.
        token: Option<FencingToken>,
        /// The server's words.
        message: String,
    },
    /// The lease had expired (`FAILED_PRECONDITION`, "expired"): lost for good (S7).
    #[error("lease expired: {message}")]
    LeaseExpired {
        /// The server's words.
        message: String,
    },
    /// The lease had been released (`FAILED_PRECONDITION`, "released").
    #[error("lease released: {message}")]
    LeaseReleased {
        /// The server's words.
        message: String,
    },
    /// Another precondition failed (`FAILED_PRECONDITION`), e.g. releasing a lock the lease
    /// does not hold.
    #[error("precondition failed: {message}")]
    FailedPrecondition {
        /// The server's words.
        message: String,
    },
    /// The server does not know the lease (`NOT_FOUND`).
    #[error("unknown lease: {message}")]
    UnknownLease {
        /// The server's words.
        message: String,
    },
    /// The server refused the request as malformed (`INVALID_ARGUMENT`).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The server's words.
        message: String,
    },
    /// The server could not be reached or went away (`UNAVAILABLE`, transport errors).
    #[error("server unavailable: {message}")]
    Unavailable {
        /// What the transport said.
        message: String,
    },
    /// No member of the cluster that leads was reached: the endpoints tried could not be
    /// connected to, or answered that they are not the leader and named none (an
    /// election), or the call's redirects ran out (members that disagree on the leader).
    /// Nothing was applied by the refusals; transient: an election ends, a member comes
    /// back.
    #[error("no leader reachable: {why}{}", tried_list(tried))]
    NoLeader {
        /// The endpoints tried, in order (empty when a stream's end said it).
        tried: Vec<String>,
        /// The last failure.
        why: String,
    },
    /// A watch asked to start at a revision whose events the member no longer keeps
    /// (`OUT_OF_RANGE`, `fenced-error: compacted`): pushed out of its buffer, or made
    /// before the member restarted. List the locks again and watch from the list's
    /// revision + 1.
    #[error("watch events no longer kept: {message}")]
    WatchCompacted {
        /// The server's words.
        message: String,
        /// The oldest revision the member can still send, if it said.
        oldest: Option<u64>,
    },
    /// A call did not finish in time (`DEADLINE_EXCEEDED` or the SDK's own timeout).
    #[error("{what} timed out after {} ms", after.as_millis())]
    Timeout {
        /// Which call.
        what: &'static str,
        /// How long the SDK waited.
        after: Duration,
    },
    /// Any other status, kept as it came.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The gRPC code.
        code: Code,
        /// The server's words.
        message: String,
    },
    /// The server answered something the protocol does not allow (a zero token, a lease id
    /// that is not a UUID, ...). Never trusted, always reported.
    #[error("protocol violation by the server: {what}")]
    Protocol {
        /// What was wrong.
        what: String,
    },
    /// The lease will not hand out its token.
    #[error(transparent)]
    Fence(#[from] FenceError),
}

/// What a refusal says beyond its code and message: the stable `fenced-error` code, and
/// for a busy lock its holder and token. A unary call carries them in metadata, a
/// `Session` answer in the fields of its `SessionError`; both are read into this and
/// mapped by [`classify`], so the two paths cannot drift apart.
#[derive(Debug, Default)]
struct Details {
    /// The `fenced-error` code; empty when the server sent none.
    error_code: String,
    /// The busy lock's holder, if the server named it.
    holder: Option<String>,
    /// The busy lock's holder's token, if the server named it.
    token: Option<FencingToken>,
    /// For a compacted watch: the oldest revision the member keeps, if it said.
    oldest_revision: Option<u64>,
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let meta = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let details = Details {
            error_code: meta(ERROR_CODE).unwrap_or_default(),
            holder: meta(HOLDER),
            token: meta(TOKEN).and_then(|t| t.parse().ok()),
            oldest_revision: meta(OLDEST_REVISION).and_then(|r| r.parse().ok()),
        };
        classify(status.code(), status.message().to_string(), details)
    }
}

/// A refused `Session` request maps to exactly the error the unary call's status would
/// have: the server fills the fields from that very status (empty text and token 0 where
/// the status had no such metadata, which is read here as "absent", as a missing
/// metadata key is).
impl From<SessionError> for Error {
    fn from(error: SessionError) -> Self {
        let details = Details {
            error_code: error.error_code,
            holder: Some(error.holder).filter(|h| !h.is_empty()),
            token: FencingToken::new(error.token).ok(),
            oldest_revision: None,
        };
        classify(Code::from_i32(error.code), error.message, details)
    }
}

/// The one mapping from a refusal (code, message, details) to an [`Error`], for unary
/// statuses and `Session` answers alike.
fn classify(code: Code, message: String, details: Details) -> Error {
    let error_code = details.error_code.as_str();
    match code {
        Code::Aborted if error_code == "lease-id-taken" => Error::LeaseIdTaken { message },
        Code::Aborted => {
            // The details first (exact), the message as a fallback (written for humans).
            let (parsed_holder, parsed_token) = parse_busy(&message);
            Error::Busy {
                lock: String::new(),
                holder: details.holder.or(parsed_holder),
                token: details.token.or(parsed_token),
                message,
            }
        }
        Code::FailedPrecondition => {
            let lower = message.to_lowercase();
            if error_code == "lease-expired" || (error_code.is_empty() && lower.contains("expired"))
            {
                Error::LeaseExpired { message }
            } else if error_code == "lease-released"
                || (error_code.is_empty() && lower.contains("released"))
            {
                Error::LeaseReleased { message }
            } else {
                Error::FailedPrecondition { message }
            }
        }
        Code::Unavailable if error_code == NOT_LEADER_CODE => Error::NoLeader {
            tried: Vec::new(),
            why: format!("a member that is not the leader refused: {message}"),
        },
        Code::OutOfRange if error_code == COMPACTED_CODE => Error::WatchCompacted {
            message,
            oldest: details.oldest_revision,
        },
        Code::NotFound => Error::UnknownLease { message },
        Code::InvalidArgument => Error::InvalidArgument { message },
        Code::Unavailable | Code::Cancelled | Code::Unknown => Error::Unavailable { message },
        Code::DeadlineExceeded => Error::Timeout {
            what: "request",
            after: Duration::ZERO,
        },
        code => Error::Server { code, message },
    }
}

impl Error {
    /// Whether retrying the same call later may succeed (the network or the server was
    /// unavailable, or a call timed out), as opposed to a definite answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Connect { .. }
                | Error::NoLeader { .. }
        )
    }

    /// The same error with the lock name filled in where the status could not carry it.
    pub(crate) fn for_lock(self, name: &LockName) -> Self {
        match self {
            Error::Busy {
                holder,
                token,
                message,
                ..
            } => Error::Busy {
                lock: name.to_string(),
                holder,
                token,
                message,
            },
            other => other,
        }
    }
}

/// " (tried a, b)" for [`Error::NoLeader`], or nothing when no endpoint is named.
fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() {
        String::new()
    } else {
        format!(" (tried {})", tried.join(", "))
    }
}

/// Reads the holder (the quoted text after "held by") and the token (the first number
/// after the word "token") out of an `ABORTED` message, for servers that send no
/// metadata. Whatever cannot be found is `None`; the message is kept in full beside it.
fn parse_busy(message: &str) -> (Option<String>, Option<FencingToken>) {
    let lower = message.to_ascii_lowercase();
    let holder = lower.find("held by").and_then(|at| {
        let rest = &message[at + "held by".len()..];
        let rest = rest.trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| ['"', '\'', '`'].contains(c))?;
        let inner = &rest[quote.len_utf8()..];
        let len = inner.find(quote)?;
        Some(inner[..len].to_string())
    });
    let token = lower.find("token").and_then(|at| {
        let digits: String = message[at + "token".len()..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits
            .parse::<u64>()
            .ok()
            .and_then(|v| FencingToken::new(v).ok())
    });
    (holder, token)
}

/// Why [`Lease::fence`](crate::Lease::fence) refused to hand out the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The lease may still be alive, but the SDK cannot vouch for it.
    #[error("lease on {lock} is suspect ({reason}): no token until the server confirms it")]
    Suspect {
        /// The lock.
        lock: LockName,
        /// Why.
        reason: SuspectReason,
    },
    /// The lease is gone for good.
    #[error("lease on {lock} is lost ({reason}): acquire again")]
    Lost {
        /// The lock.
        lock: LockName,
        /// Why.
        reason: LostReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_back_to_typed_errors() {
        let e: Error = Status::aborted("lock \"jobs\" is held by \"alpha\" with token 42").into();
        match e {
            Error::Busy { holder, token, .. } => {
                assert_eq!(holder.as_deref(), Some("alpha"));
                assert_eq!(token, FencingToken::new(42).ok());
            }
            other => panic!("{other:?}"),
        }
        // Metadata wins over the message.
        let mut status = Status::aborted("lock \"jobs\" is held by \"x\" with token 1");
        status
            .metadata_mut()
            .insert(HOLDER, "beta".parse().unwrap());
        status.metadata_mut().insert(TOKEN, "43".parse().unwrap());
        match Error::from(status) {
            Error::Busy { holder, token, .. } => {
                assert_eq!(holder.as_deref(), Some("beta"));
                assert_eq!(token, FencingToken::new(43).ok());
            }
            other => panic!("{other:?}"),
        }
        let mut status = Status::failed_precondition("lease abc does not hold lock \"released\"");
        status
            .metadata_mut()
            .insert(ERROR_CODE, "not-holder".parse().unwrap());
        assert!(matches!(
            Error::from(status),
            Error::FailedPrecondition { .. }
        ));
        let e: Error = Status::aborted("held by alpha (token 7)").into();
        assert!(matches!(e, Error::Busy { holder: None, token: Some(t), .. } if t.get() == 7));
        let e: Error = Status::failed_precondition("lease abc has expired").into();
        assert!(matches!(e, Error::LeaseExpired { .. }));
        let e: Error = Status::failed_precondition("lease abc was released").into();
        assert!(matches!(e, Error::LeaseReleased { .. }));
        let e: Error = Status::failed_precondition("lease does not hold lock x").into();
        assert!(matches!(e, Error::FailedPrecondition { .. }));
        let e: Error = Status::not_found("no such lease").into();
        assert!(matches!(e, Error::UnknownLease { .. }));
        let e: Error = Status::invalid_argument("ttl_ms 5 is below 100").into();
        assert!(matches!(e, Error::InvalidArgument { .. }));
        let e: Error = Status::unavailable("connection refused").into();
        assert!(e.is_transient());
        let e: Error = Status::permission_denied("no").into();
        assert!(matches!(
            e,
            Error::Server {
                code: Code::PermissionDenied,
                ..
            }
        ));
    }

    use fenced_proto::session::session_error;

    // checks: the CONTRACT "Bad input" rule (a refusal reaches the caller as the server
    // said it), on both paths
    #[test]
    fn session_errors_map_exactly_as_their_statuses() {
        let with = |mut status: Status, meta: &[(&'static str, &str)]| {
            for (key, value) in meta {
                status.metadata_mut().insert(*key, value.parse().unwrap());
            }
            status
        };
        let statuses = [
            with(
                Status::aborted("lock \"jobs\" is held by \"x\" with token 1"),
                &[(ERROR_CODE, "busy"), (HOLDER, "beta"), (TOKEN, "43")],
            ),
            Status::aborted("lock \"jobs\" is held by \"alpha\" with token 42"),
            with(
                Status::aborted("waited 30 ms for lock \"q\""),
                &[(ERROR_CODE, "wait-timed-out")],
            ),
            with(
                Status::failed_precondition("lease abc has expired"),
                &[(ERROR_CODE, "lease-expired")],
            ),
            with(
                Status::failed_precondition("lease abc was released"),
                &[(ERROR_CODE, "lease-released")],
            ),
            with(
                Status::failed_precondition("lease abc does not hold lock \"released\""),
                &[(ERROR_CODE, "not-holder")],
            ),
            Status::failed_precondition("lease abc has expired"),
            Status::not_found("no such lease"),
            Status::invalid_argument("ttl_ms 5 is below 100"),
            Status::unavailable("the server is failing"),
            Status::deadline_exceeded("late"),
            Status::resource_exhausted("too many leases"),
            Status::permission_denied("no"),
        ];
        for status in statuses {
            let from_session = Error::from(session_error(&status));
            let from_status = Error::from(status.clone());
            assert_eq!(
                format!("{from_session:?}"),
                format!("{from_status:?}"),
                "{status:?}"
            );
        }
        // A code outside gRPC's reads as UNKNOWN, as tonic reads a unary grpc-status.
        let odd = SessionError {
            code: 99,
            message: "odd".into(),
            ..SessionError::default()
        };
        assert!(matches!(Error::from(odd), Error::Unavailable { .. }));
    }
}
