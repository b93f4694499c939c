//! [`Refusal`]: why the lock table said no. Refusals are answers, not failures: the table
//! is unchanged by a refused command.

use std::time::Duration;

use fenced_types::{FencingToken, LockName};

/// Why the lock table refused a command, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The TTL is outside the configured bounds.
    #[error("ttl {ttl_ms} ms is outside the allowed {min_ms}..={max_ms} ms")]
    TtlOutOfBounds {
        /// The requested TTL.
        ttl_ms: u128,
        /// The shortest allowed.
        min_ms: u128,
        /// The longest allowed.
        max_ms: u128,
    },
    /// The lock is held by another lease.
    #[error("lock {lock:?} is held by {holder:?} with token {token}")]
    Busy {
        /// The lock.
        lock: LockName,
        /// Its holder's name.
        holder: String,
        /// Its holder's token.
        token: FencingToken,
    },
    /// The lock is free but others queued first (FIFO: a try-once acquire cannot jump them).
    #[error("lock {lock:?} has {waiters} waiter(s) queued ahead")]
    Queued {
        /// The lock.
        lock: LockName,
        /// How many wait.
        waiters: usize,
    },
    /// The lock's previous lease expired and its lock-delay is still running.
    #[error(
        "lock {lock:?} is in its lock-delay for another {remaining:?} after its holder expired"
    )]
    LockDelay {
        /// The lock.
        lock: LockName,
        /// How long until it can be granted.
        remaining: Duration,
    },
    /// The lease id was never issued, or was forgotten long ago.
    #[error("lease {lease} is unknown")]
    UnknownLease {
        /// A non-secret prefix of the lease id.
        lease: String,
    },
    /// The lease expired; it is lost for good (CONTRACT S7).
    #[error("lease {lease} expired; acquire again for a new lease and token")]
    LeaseExpired {
        /// A non-secret prefix of the lease id.
        lease: String,
    },
    /// The lease was released; it is lost for good (CONTRACT S7).
    #[error("lease {lease} was released; acquire again for a new lease and token")]
    LeaseReleased {
        /// A non-secret prefix of the lease id.
        lease: String,
    },
    /// The lease exists but does not hold the lock it names.
    #[error("lease {lease} does not hold lock {lock:?}")]
    NotHolder {
        /// A non-secret prefix of the lease id.
        lease: String,
        /// The lock.
        lock: LockName,
    },
    /// A new lease id is a live lease's that does not hold the lock asked for, or an ended
    /// lease's (a client-chosen id used twice, or a broken random source).
    #[error("lease id {lease} is already in use")]
    LeaseIdTaken {
        /// A non-secret prefix of the lease id.
        lease: String,
    },
    /// A server-wide capacity limit is reached.
    #[error("too many {what}: the limit is {limit}")]
    Exhausted {
        /// Which limit ("leases", "locks", "waiters").
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The identity that would create a lease already has as many live leases as one
    /// identity may (`max_leases_per_identity`), so one tenant cannot take every lease.
    #[error(
        "{identity} already has {limit} live leases: the limit is {limit} leases per identity"
    )]
    IdentityLeases {
        /// The identity.
        identity: String,
        /// The limit.
        limit: usize,
    },
    /// The lease already holds as many locks as one lease may: joining it would make its
    /// expiry one burst larger than the server allows.
    #[error("lease {lease} already holds {limit} locks: the limit is {limit} locks per lease")]
    LeaseFull {
        /// A non-secret prefix of the lease id.
        lease: String,
        /// The limit (`max_locks_per_lease`).
        limit: usize,
    },
    /// The token counter reached `u64::MAX`.
    #[error("fencing tokens are used up")]
    TokensExhausted,
    /// An administrator's revocation found the lock free, or held with another token than
    /// the one it named.
    #[error("lock {lock:?} is not held{}", match (expected, current) {
        (Some(expected), Some(current)) => format!(" with token {expected} (its holder's token is {current})"),
        (Some(expected), None) => format!(" (with token {expected} or any other)"),
        _ => String::new(),
    })]
    NotHeld {
        /// The lock.
        lock: LockName,
        /// The token the administrator named, if any.
        expected: Option<FencingToken>,
        /// The holder's token, if the lock is held.
        current: Option<FencingToken>,
    },
    /// A queued acquire waited as long as it asked to.
    #[error("timed out after {waited_ms} ms waiting for lock {lock:?}, held by {holder:?} with token {token}")]
    WaitTimedOut {
        /// The lock.
        lock: LockName,
        /// How long the acquirer waited.
        waited_ms: u128,
        /// The holder at the time-out (empty if the lock was in its lock-delay).
        holder: String,
        /// The holder's token (0 if none).
        token: u64,
    },
}
