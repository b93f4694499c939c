//! [`LeaseState`]: what the SDK believes about a lease, and why.

use std::fmt;
use std::time::Duration;

/// What the SDK believes about a lease. Published on a `watch` channel
/// ([`Lease::watch`](crate::Lease::watch)); every transition is also kept in
/// [`Lease::history`](crate::Lease::history), so none is missed even if a reader is slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The server confirmed the lease and its local deadline has not passed:
    /// [`Lease::fence`](crate::Lease::fence) hands out the token.
    Held,
    /// The lease may still be alive but the SDK cannot vouch for it: no token is handed out.
    /// It becomes [`LeaseState::Held`] again only when the server confirms a renewal that
    /// was sent after the lease became suspect.
    Suspect {
        /// Why the lease became suspect.
        reason: SuspectReason,
    },
    /// The lease is gone for good (CONTRACT S7): acquire again for a new, higher token.
    Lost {
        /// Why the lease was lost.
        reason: LostReason,
    },
}

impl LeaseState {
    /// Whether the state is [`LeaseState::Held`].
    pub fn is_held(&self) -> bool {
        matches!(self, LeaseState::Held)
    }

    /// Whether the state is [`LeaseState::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, LeaseState::Lost { .. })
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseState::Held => write!(f, "held"),
            LeaseState::Suspect { reason } => write!(f, "suspect: {reason}"),
            LeaseState::Lost { reason } => write!(f, "lost: {reason}"),
        }
    }
}

/// Why a lease became suspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspectReason {
    /// The process did not run for `paused` (GC, VM steal, `SIGSTOP`, suspend): anything it
    /// believed before may be stale.
    Paused {
        /// How long the pause watchdog missed its heartbeat.
        paused: Duration,
    },
    /// The local deadline passed without a confirmed renewal.
    DeadlinePassed,
    /// A queued acquire was granted so long after it was sent that a renewal was already
    /// due: the lease is confirmed with a renewal before its token is handed out.
    LateGrant {
        /// How long after the send the grant arrived.
        waited: Duration,
    },
}

impl fmt::Display for SuspectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuspectReason::Paused { paused } => {
                write!(f, "process paused for {} ms", paused.as_millis())
            }
            SuspectReason::DeadlinePassed => {
                write!(f, "local deadline passed without a confirmed renewal")
            }
            SuspectReason::LateGrant { waited } => write!(
                f,
                "granted {} ms after the request: confirming",
                waited.as_millis()
            ),
        }
    }
}

/// Why a lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The server said the lease had expired.
    Expired {
        /// The server's words.
        message: String,
    },
    /// The server said the lease had been released.
    Released {
        /// The server's words.
        message: String,
    },
    /// The server does not know the lease (it was never issued or forgotten long ago).
    Unknown {
        /// The server's words.
        message: String,
    },
    /// No renewal was confirmed until the server has surely expired the lease
    /// ([`DeadlinePolicy::surely_expired`](crate::DeadlinePolicy::surely_expired)).
    ExpiredLocally {
        /// How long since the last confirmed request was sent.
        silent_for: Duration,
    },
    /// The holder released the lease (or dropped its handle).
    ReleasedByHolder,
    /// The client shut down.
    ClientClosed,
    /// The server refused the lease id as malformed: a bug, reported rather than hidden.
    Invalid {
        /// The server's words.
        message: String,
    },
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::Expired { message } => write!(f, "server says expired ({message})"),
            LostReason::Released { message } => write!(f, "server says released ({message})"),
            LostReason::Unknown { message } => write!(f, "server does not know it ({message})"),
            LostReason::ExpiredLocally { silent_for } => write!(
                f,
                "no confirmed renewal for {} ms: the server has expired it",
                silent_for.as_millis()
            ),
            LostReason::ReleasedByHolder => write!(f, "released by the holder"),
            LostReason::ClientClosed => write!(f, "the client shut down"),
            LostReason::Invalid { message } => write!(f, "server refused the id ({message})"),
        }
    }
}

/// One transition of a lease's state, with when it happened on the SDK's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// When, on the SDK's [`Clock`](crate::Clock).
    pub at: Duration,
    /// The new state.
    pub state: LeaseState,
}
