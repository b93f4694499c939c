//! What goes into the lock table and what comes out: [`Command`]s in; a reply, durable
//! [`Write`]s, waiter [`Handoff`]s and [`Event`]s out.

use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};

use super::origin::LeaseOrigin;
use super::refusal::Refusal;

/// Identifies one queued acquirer, so it can be granted, timed out or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub u64);

/// Which lease an acquire grants the lock to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChoice {
    /// Create a lease with this id (made by the caller, so the table stays deterministic).
    New(LeaseId),
    /// Add the lock to this live lease, renewing it.
    Join(LeaseId),
}

impl LeaseChoice {
    /// The lease id either way.
    pub fn id(&self) -> LeaseId {
        match self {
            LeaseChoice::New(id) | LeaseChoice::Join(id) => *id,
        }
    }
}

/// A request to take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    /// The lock.
    pub lock: LockName,
    /// Free-form holder name for humans and logs.
    pub holder: Arc<str>,
    /// The TTL of a new lease (ignored when joining: a lease keeps its TTL).
    pub ttl: Duration,
    /// How long to keep the lock from others after this holding expires.
    pub lock_delay: Duration,
    /// The lease to grant to.
    pub lease: LeaseChoice,
    /// Whether to queue when the lock is taken (the caller times the wait).
    pub wait: bool,
    /// Who asks, recorded with a lease this acquire creates (`None`: not recorded, and
    /// counted against no identity's lease limit).
    pub origin: Option<Arc<LeaseOrigin>>,
}

/// Everything that changes the lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take a lock, now or after queueing.
    Acquire(Acquire),
    /// Extend a live lease to a full TTL from now.
    Renew {
        /// The lease.
        lease: LeaseId,
    },
    /// Release one lock of a lease (`Some`) or the whole lease (`None`).
    Release {
        /// The lease.
        lease: LeaseId,
        /// The lock, or every lock of the lease.
        lock: Option<LockName>,
    },
    /// An administrator ends the holding of `lock` (with `token`, if given): the whole
    /// lease that holds it (`whole_lease`), or only this lock. Its next holder's token
    /// turns the old holder away at the gate (S5).
    Revoke {
        /// The lock.
        lock: LockName,
        /// The holding's token, if the administrator names it (a newer holding is then
        /// left alone).
        token: Option<FencingToken>,
        /// End the whole lease, not only this lock.
        whole_lease: bool,
    },
    /// Remove a queued acquirer that timed out, was cancelled or disconnected.
    CancelWait {
        /// The waiter.
        waiter: WaiterId,
    },
    /// Expire what is due and hand on what it frees. Every command does this first, so
    /// this one only exists for the reaper to call when nothing else happens.
    Tick,
}

/// A lock granted to a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lock.
    pub lock: LockName,
    /// The lease that holds it.
    pub lease: LeaseId,
    /// The grant's fencing token.
    pub token: FencingToken,
    /// The lease's TTL.
    pub ttl: Duration,
    /// Whether this grant created the lease (so undoing the grant releases the lease).
    pub created_lease: bool,
}

/// The table's direct answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The lock was granted (a new grant with a new token).
    Granted(Grant),
    /// The lease already held the lock: the same grant again (so a retried acquire whose
    /// first reply was lost is harmless). Not a new grant: no new token.
    AlreadyHeld(Grant),
    /// The acquirer waits in the lock's queue; a [`Handoff`] will name it later.
    Queued(WaiterId),
    /// The lease was renewed for a full TTL.
    Renewed {
        /// The lease's TTL.
        ttl: Duration,
    },
    /// The lock or lease was released.
    Released,
    /// An administrator revoked a holding.
    Revoked {
        /// The lease that held the lock.
        lease: LeaseId,
        /// The holding's token.
        token: FencingToken,
    },
    /// Whether a waiter was removed; `false` means it was already granted or failed, and
    /// its [`Handoff`] is on the way.
    Cancelled(bool),
    /// Expiry ran.
    Ticked,
}

/// A queued acquirer's outcome, delivered once the writes it depends on are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The waiter.
    pub waiter: WaiterId,
    /// Its grant, or why it cannot have one (its joined lease ended while it waited).
    pub result: Result<Grant, Refusal>,
}

/// One change of one lock, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The lock.
    pub lock: LockName,
    /// The holder's name.
    pub holder: Arc<str>,
    /// The holding's token.
    pub token: FencingToken,
    /// For a grant: whether it went to a queued acquirer as the lock was freed (a handoff;
    /// the previous holding was handed on), not to an acquirer that found it free.
    pub handoff: bool,
    /// The lease that holds (held) the lock: for the audit log only, never shown to
    /// watchers (a lease id is its holder's secret). Always known to the table; `None` only
    /// for an event read back from a raft entry written before events carried it.
    pub lease: Option<LeaseId>,
    /// Who created that lease, if recorded.
    pub origin: Option<Arc<LeaseOrigin>>,
}

/// What happened to a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Granted to a lease.
    Acquired,
    /// Released by its holder.
    Released,
    /// Its holder's lease expired.
    Expired,
}

/// A change to durable state, for the store to write. Renewals write nothing: a restart
/// restores every lease with a full TTL anyway (CONTRACT S2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A lease was created.
    PutLease {
        /// Its id.
        lease: LeaseId,
        /// Its TTL.
        ttl: Duration,
        /// Its creator's holder name.
        holder: Arc<str>,
        /// Who created it, if recorded.
        origin: Option<Arc<LeaseOrigin>>,
    },
    /// A lease ended (released or expired), with all its locks.
    DeleteLease {
        /// Its id.
        lease: LeaseId,
    },
    /// A lock was granted.
    PutLock {
        /// The lock.
        lock: LockName,
        /// The lease that holds it.
        lease: LeaseId,
        /// The grant's token.
        token: FencingToken,
        /// The holder's name.
        holder: Arc<str>,
        /// The lock-delay to apply if the lease expires.
        lock_delay: Duration,
    },
    /// A lock was freed.
    DeleteLock {
        /// The lock.
        lock: LockName,
    },
    /// A lock's holder expired with a lock-delay: no grant for `delay`. Written with the
    /// expiry, so a restart inside the delay restores it (counted in full from the
    /// restart, as leases are: never shorter than promised).
    PutLockDelay {
        /// The lock.
        lock: LockName,
        /// The whole lock-delay.
        delay: Duration,
    },
    /// A lock's lock-delay ended (or the lock was granted again).
    DeleteLockDelay {
        /// The lock.
        lock: LockName,
    },
    /// The next token to issue: written with every grant, so a restart never issues a
    /// token twice (CONTRACT S1).
    NextToken(FencingToken),
    /// An acquirer queued: its place survives a restart or a failover (it is restored
    /// detached, for its client to take back).
    PutWaiter {
        /// Its place: waiter ids grow with each queued acquirer, so their order is the
        /// queues' order.
        waiter: WaiterId,
        /// What it asked for.
        request: Acquire,
    },
    /// An acquirer left its queue (granted, refused, timed out, cancelled, or its grace
    /// ended).
    DeleteWaiter {
        /// Its place.
        waiter: WaiterId,
    },
}

/// Everything one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The answer to the command's sender.
    pub reply: Result<Reply, Refusal>,
    /// What must be made durable before the reply, handoffs or events are released.
    pub writes: Vec<Write>,
    /// Grants (or failures) for queued acquirers.
    pub handoffs: Vec<Handoff>,
    /// Changes for watchers.
    pub events: Vec<Event>,
}
