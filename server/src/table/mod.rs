//! The lock table: a pure state machine of leases, locks, queues and tokens.
//!
//! It takes [`Command`]s with the time they are applied at and returns an [`Outcome`]:
//! the reply, the [`Write`]s that must be durable before anything of the outcome is shown
//! to anyone, the [`Handoff`]s for queued acquirers and the [`Event`]s for watchers. It
//! owns no I/O, no clock and no task, so it is unit-tested with a hand-made clock, and it
//! is what a replicated log will apply on every node.
//!
//! Invariants kept after every command (checked by the property test in `model_test`):
//! - Expiry runs first, so no lease in the table has `expires_at <= now`; together with
//!   "one holding per lock" this gives CONTRACT S3.
//! - Every grant takes `next_token` and bumps it: tokens strictly increase (S1), and the
//!   new `next_token` is among the grant's writes.
//! - A lease that ended is gone from `leases` and never comes back (S7); its id is
//!   remembered in `ended` so late requests learn why.
//! - Queues are FIFO and a waiter is either queued or has had its handoff, never both (L2).
//! - No free lock keeps a queue that nothing will wake: a free lock (past any lock-delay)
//!   with waiters is one whose head waiter lacks capacity (leases or locks at their limit),
//!   and it is in `stalled`, handed on again as soon as a lease or lock ends.
//! - A lock-delay is in the writes of the expiry that starts it and of the command that
//!   ends it (its end, or a grant), so the disk holds exactly the delays that run.
//! - No grant takes a lease past `max_locks_per_lease` locks, so ending one lease is a
//!   bounded burst of writes and events.

mod command;
mod detached;
mod ended;
mod origin;
mod refusal;
mod view;

#[cfg(test)]
mod model_test;
#[cfg(test)]
mod tests;

pub use command::{
    Acquire, Command, Event, EventKind, Grant, Handoff, LeaseChoice, Outcome, Reply, WaiterId,
    Write,
};
pub use ended::EndReason;
pub use origin::LeaseOrigin;
pub use refusal::Refusal;
pub use view::{
    ListPage, LockView, RestoreError, RestoredDelay, RestoredLease, RestoredLock, RestoredWaiter,
};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};

use crate::clock::Timestamp;
use crate::config::Config;
use detached::Detached;
use ended::EndedLeases;

/// The table's share of the configuration: bounds it enforces itself.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Shortest TTL.
    pub min_ttl: Duration,
    /// Longest TTL.
    pub max_ttl: Duration,
    /// Live leases at most.
    pub max_leases: usize,
    /// Held locks at most.
    pub max_locks: usize,
    /// Queued acquirers at most.
    pub max_waiters: usize,
    /// Locks one lease may hold at most.
    pub max_locks_per_lease: usize,
    /// Live leases one identity may have at most (counted by the identity in each lease's
    /// [`LeaseOrigin`]; leases without one are not counted); `None`: no limit.
    pub max_leases_per_identity: Option<usize>,
    /// How long ended lease ids are remembered.
    pub remember_ended_for: Duration,
    /// How many ended lease ids are remembered at most.
    pub remember_ended_max: usize,
    /// How long a queued acquirer restored from disk keeps its place for its client to
    /// send its acquire again ([`detached`]).
    pub waiter_grace: Duration,
}

impl Limits {
    /// Checks the limits the table relies on: the same bounds as [`Config::validate`]
    /// (an ended-lease memory of 0, for one, could never make room for a new entry).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.min_ttl.is_zero() || self.min_ttl > self.max_ttl {
            return Err(LimitsError::TtlBounds {
                min: self.min_ttl,
                max: self.max_ttl,
            });
        }
        for (what, value) in [
            ("max_leases", self.max_leases),
            ("max_locks", self.max_locks),
            ("max_waiters", self.max_waiters),
            ("max_locks_per_lease", self.max_locks_per_lease),
            ("remember_ended_max", self.remember_ended_max),
            (
                "max_leases_per_identity",
                self.max_leases_per_identity.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                return Err(LimitsError::ZeroLimit { what });
            }
        }
        Ok(())
    }
}

/// Limits the lock table cannot work with, named with the values that conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The TTL bounds are empty or start at zero.
    #[error("TTL bounds {min:?}..={max:?} are invalid: need 0 < min <= max")]
    TtlBounds {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// A capacity limit is zero.
    #[error("{what} must be at least 1")]
    ZeroLimit {
        /// Which limit.
        what: &'static str,
    },
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Limits {
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
            max_leases: config.max_leases,
            max_locks: config.max_locks,
            max_waiters: config.max_waiters,
            max_locks_per_lease: config.max_locks_per_lease,
            max_leases_per_identity: (config.max_leases_per_identity > 0)
                .then_some(config.max_leases_per_identity),
            remember_ended_for: config.remember_ended_for,
            remember_ended_max: config.remember_ended_max,
            waiter_grace: config.waiter_grace,
        }
    }
}

/// One live lease.
#[derive(Debug)]
struct Lease {
    /// The TTL it was created with; every renewal extends it by this much from "now".
    ttl: Duration,
    /// When it expires unless renewed.
    expires_at: Timestamp,
    /// The locks it holds (possibly none: a lease lives until it expires or is released).
    locks: BTreeSet<LockName>,
    /// Who created it, if recorded.
    origin: Option<Arc<LeaseOrigin>>,
}

/// One lock that is held, queued for, or in its lock-delay. Free, idle locks have no entry.
#[derive(Debug, Default)]
struct LockEntry {
    /// The current holding, if any.
    holding: Option<Holding>,
    /// After its holder expired with a lock-delay: no grant before this time.
    delayed_until: Option<Timestamp>,
    /// Queued acquirers, first come first served. Waiter ids only grow, so the queue is
    /// sorted: a waiter that leaves is found by binary search.
    queue: VecDeque<WaiterId>,
}

impl LockEntry {
    /// Whether the entry carries nothing worth keeping.
    fn is_idle(&self) -> bool {
        self.holding.is_none() && self.delayed_until.is_none() && self.queue.is_empty()
    }
}

/// A lock held by a lease.
#[derive(Debug, Clone)]
struct Holding {
    /// The lease.
    lease: LeaseId,
    /// The grant's token.
    token: FencingToken,
    /// The holder's name.
    holder: Arc<str>,
    /// The lock-delay to apply if the lease expires.
    lock_delay: Duration,
}

/// What a command collects on its way: writes, handoffs and events.
#[derive(Debug, Default)]
struct Effects {
    /// Durable changes.
    writes: Vec<Write>,
    /// Outcomes for queued acquirers.
    handoffs: Vec<Handoff>,
    /// Changes for watchers.
    events: Vec<Event>,
    /// A lease ended or a lock was freed: stalled queues may move now.
    freed_capacity: bool,
}

/// The lock table. See the module documentation.
#[derive(Debug)]
pub struct LockTable {
    /// Bounds enforced here.
    limits: Limits,
    /// The token the next grant gets.
    next_token: FencingToken,
    /// Live leases.
    leases: HashMap<LeaseId, Lease>,
    /// How many live leases each identity has (only identities with at least one).
    identity_leases: HashMap<Arc<str>, usize>,
    /// Lock entries in name order (for prefix listing).
    locks: BTreeMap<LockName, LockEntry>,
    /// Lease expiries in time order: the reaper's queue.
    expiries: BTreeSet<(Timestamp, LeaseId)>,
    /// Lock-delay ends in time order.
    delays: BTreeSet<(Timestamp, LockName)>,
    /// Queued acquirers by id.
    waiters: HashMap<WaiterId, Acquire>,
    /// Queued acquirers restored from disk whose clients have not sent their acquire
    /// again yet ([`detached`]).
    detached: Detached,
    /// The id the next waiter gets.
    next_waiter: u64,
    /// How many locks are held, for the capacity limit.
    held_locks: usize,
    /// Free locks whose head waiter lacks capacity (leases or locks at their limit): the
    /// first waiter to meet the shortage was refused, the rest wait, and these locks are
    /// handed on again whenever a lease or lock ends.
    stalled: BTreeSet<LockName>,
    /// Recently ended leases.
    ended: EndedLeases,
}

impl LockTable {
    /// An empty table whose first grant gets token 1; refuses limits it cannot work with.
    pub fn new(limits: Limits) -> Result<Self, LimitsError> {
        Self::with_next_token(limits, FencingToken::FIRST)
    }

    /// An empty table that continues the token sequence at `next_token`.
    fn with_next_token(limits: Limits, next_token: FencingToken) -> Result<Self, LimitsError> {
        limits.validate()?;
        let ended = EndedLeases::new(limits.remember_ended_for, limits.remember_ended_max);
        Ok(LockTable {
            limits,
            next_token,
            leases: HashMap::new(),
            identity_leases: HashMap::new(),
            locks: BTreeMap::new(),
            expiries: BTreeSet::new(),
            delays: BTreeSet::new(),
            waiters: HashMap::new(),
            detached: Detached::default(),
            next_waiter: 0,
            held_locks: 0,
            stalled: BTreeSet::new(),
            ended,
        })
    }

    /// Rebuilds the table after a restart. Every lease gets its full TTL counted from `now`
    /// (CONTRACT S2: the server cannot know how long it was down, so it never shortens a
    /// lease a holder may still believe in), and every lock-delay that had not ended its
    /// full delay from `now`, for the same reason: the expired holder's writes may still be
    /// in flight. Queued acquirers go back in their queues in the order they queued,
    /// detached until their clients send their acquires again ([`detached`]).
    pub fn restore(
        limits: Limits,
        next_token: FencingToken,
        leases: Vec<RestoredLease>,
        locks: Vec<RestoredLock>,
        delays: Vec<RestoredDelay>,
        waiters: Vec<RestoredWaiter>,
        now: Timestamp,
    ) -> Result<Self, RestoreError> {
        let mut table = Self::with_next_token(limits, next_token)?;
        for restored in leases {
            let expires_at = now + restored.ttl;
            table.expiries.insert((expires_at, restored.lease));
            table.count_lease(restored.origin.as_ref());
            table.leases.insert(
                restored.lease,
                Lease {
                    ttl: restored.ttl,
                    expires_at,
                    locks: BTreeSet::new(),
                    origin: restored.origin,
                },
            );
        }
        for restored in locks {
            if restored.token >= next_token {
                return Err(RestoreError::TokenAhead {
                    lock: restored.lock,
                    token: restored.token,
                    next_token,
                });
            }
            let Some(lease) = table.leases.get_mut(&restored.lease) else {
                return Err(RestoreError::OrphanLock {
                    lock: restored.lock,
                });
            };
            lease.locks.insert(restored.lock.clone());
            table.held_locks += 1;
            table.locks.entry(restored.lock).or_default().holding = Some(Holding {
                lease: restored.lease,
                token: restored.token,
                holder: restored.holder,
                lock_delay: restored.lock_delay,
            });
        }
        for restored in delays {
            let entry = table.locks.entry(restored.lock.clone()).or_default();
            if entry.holding.is_some() {
                return Err(RestoreError::DelayOnHeldLock {
                    lock: restored.lock,
                });
            }
            let until = now + restored.delay;
            entry.delayed_until = Some(until);
            table.delays.insert((until, restored.lock));
        }
        let mut waiters = waiters;
        waiters.sort_by_key(|restored| restored.waiter);
        let grace_until = now + table.limits.waiter_grace;
        for RestoredWaiter { waiter, request } in waiters {
            table
                .locks
                .entry(request.lock.clone())
                .or_default()
                .queue
                .push_back(waiter);
            table.next_waiter = table.next_waiter.max(waiter.0 + 1);
            table.detached.insert(waiter, grace_until);
            table.waiters.insert(waiter, request);
        }
        Ok(table)
    }

    /// Applies one command at time `now`. Expiry of everything due runs first, so the
    /// command sees the table as it is at `now`.
    pub fn apply(&mut self, now: Timestamp, command: Command) -> Outcome {
        let mut effects = Effects::default();
        self.expire_due(now, &mut effects);
        // Capacity the expiries freed goes to stalled queues before this command's acquire.
        self.hand_on_stalled(now, &mut effects);
        let reply = match command {
            Command::Acquire(request) => self.acquire(now, request, &mut effects),
            Command::Renew { lease } => self.renew(now, lease),
            Command::Release { lease, lock } => self.release(now, lease, lock, &mut effects),
            Command::Revoke {
                lock,
                token,
                whole_lease,
            } => self.revoke(now, lock, token, whole_lease, &mut effects),
            Command::CancelWait { waiter } => Ok(self.cancel_wait(now, waiter, &mut effects)),
            Command::Tick => Ok(Reply::Ticked),
        };
        self.hand_on_stalled(now, &mut effects);
        Outcome {
            reply,
            writes: effects.writes,
            handoffs: effects.handoffs,
            events: effects.events,
        }
    }

    /// The earliest time at which something becomes due (an expiry or a lock-delay's end):
    /// when the reaper should next [`Command::Tick`].
    pub fn next_due(&self) -> Option<Timestamp> {
        let expiry = self.expiries.first().map(|(at, _)| *at);
        let delay = self.delays.first().map(|(at, _)| *at);
        let grace = self.detached.next_due();
        [expiry, delay, grace].into_iter().flatten().min()
    }

    /// The next token a grant will get.
    pub fn next_token(&self) -> FencingToken {
        self.next_token
    }

    /// How many leases are live (as of the last command).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// How many locks are held (as of the last command).
    pub fn held_lock_count(&self) -> usize {
        self.held_locks
    }

    /// How many acquirers are queued (as of the last command).
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    fn acquire(
        &mut self,
        now: Timestamp,
        request: Acquire,
        effects: &mut Effects,
    ) -> Result<Reply, Refusal> {
        // A cut-off waiting acquire sent again takes its old place back.
        if request.wait {
            if let Some(reply) = self.attach(now, &request, effects) {
                return Ok(reply);
            }
        }
        let lease_id = request.lease.id();
        match request.lease {
            LeaseChoice::New(_) => {
                if request.ttl < self.limits.min_ttl || request.ttl > self.limits.max_ttl {
                    return Err(Refusal::TtlOutOfBounds {
                        ttl_ms: request.ttl.as_millis(),
                        min_ms: self.limits.min_ttl.as_millis(),
                        max_ms: self.limits.max_ttl.as_millis(),
                    });
                }
                // A create sent again (its answer lost, or a failover between) finds the
                // lease it made holding this lock, and gets that grant back below. Any
                // other use of a live or ended lease's id is refused.
                let retried = self
                    .leases
                    .get(&lease_id)
                    .is_some_and(|lease| lease.locks.contains(&request.lock));
                let taken =
                    self.leases.contains_key(&lease_id) || self.ended.reason(&lease_id).is_some();
                if taken && !retried {
                    return Err(Refusal::LeaseIdTaken {
                        lease: lease_id.short(),
                    });
                }
                // Refused at once, not after queueing for a grant it could not take.
                if !retried {
                    self.identity_has_room(request.origin.as_ref())?;
                }
            }
            LeaseChoice::Join(_) => {
                self.live_lease(&lease_id)?;
            }
        }
        let entry = self.locks.get(&request.lock);
        let holding = entry.and_then(|entry| entry.holding.as_ref());
        if let Some(holding) = holding {
            if holding.lease == lease_id {
                // The lease already holds the lock: answer with the same grant, so a retried
                // acquire (its first reply lost) is harmless. It is not a new grant, so it
                // gets no new token.
                let grant = Grant {
                    lock: request.lock.clone(),
                    lease: lease_id,
                    token: holding.token,
                    ttl: Duration::ZERO,
                    created_lease: false,
                };
                let ttl = self.extend(now, lease_id)?;
                return Ok(Reply::AlreadyHeld(Grant { ttl, ..grant }));
            }
        }
        if let LeaseChoice::Join(_) = request.lease {
            // Checked here too (not only in `grant`), so a join that would have to wait is
            // refused at once instead of queueing for a grant it cannot get.
            self.lease_has_room(&lease_id)?;
        }
        let refusal = match (holding, entry) {
            (Some(holding), _) => Some(Refusal::Busy {
                lock: request.lock.clone(),
                holder: holding.holder.to_string(),
                token: holding.token,
            }),
            (None, Some(entry)) => match entry.delayed_until {
                Some(until) if until > now => Some(Refusal::LockDelay {
                    lock: request.lock.clone(),
                    remaining: until.saturating_since(now),
                }),
                _ if !entry.queue.is_empty() => Some(Refusal::Queued {
                    lock: request.lock.clone(),
                    waiters: entry.queue.len(),
                }),
                _ => None,
            },
            (None, None) => None,
        };
        match refusal {
            None => self.grant(now, request, false, effects).map(Reply::Granted),
            Some(refusal) if !request.wait => Err(refusal),
            Some(_) => self.enqueue(now, request, effects),
        }
    }

    /// Puts an acquirer at the back of its lock's queue, durably.
    fn enqueue(
        &mut self,
        now: Timestamp,
        request: Acquire,
        effects: &mut Effects,
    ) -> Result<Reply, Refusal> {
        if self.waiters.len() >= self.limits.max_waiters {
            return Err(Refusal::Exhausted {
                what: "waiters",
                limit: self.limits.max_waiters,
            });
        }
        if let LeaseChoice::Join(lease) = request.lease {
            // Joining renews the lease, also when the join has to wait.
            self.extend(now, lease)?;
        }
        let waiter = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        self.locks
            .entry(request.lock.clone())
            .or_default()
            .queue
            .push_back(waiter);
        if let LeaseChoice::New(_) = request.lease {
            effects.writes.push(Write::PutWaiter {
                waiter,
                request: request.clone(),
            });
        }
        self.waiters.insert(waiter, request);
        Ok(Reply::Queued(waiter))
    }

    /// Grants a free lock: takes the next token, creates or extends the lease. `handoff`:
    /// the acquirer was queued, and gets the lock as it is freed.
    fn grant(
        &mut self,
        now: Timestamp,
        request: Acquire,
        handoff: bool,
        effects: &mut Effects,
    ) -> Result<Grant, Refusal> {
        if let Some(shortage) = self.capacity_shortage(&request.lease) {
            return Err(shortage);
        }
        let token = self.next_token;
        let next_token = token.next().ok_or(Refusal::TokensExhausted)?;
        let lease_id = request.lease.id();
        let (ttl, created_lease) = match request.lease {
            LeaseChoice::New(_) => {
                // A queued create whose id came into use while it waited (the same create
                // queued twice, its first attempt granted since) must not revive or
                // overwrite that lease (S7).
                if self.leases.contains_key(&lease_id) || self.ended.reason(&lease_id).is_some() {
                    return Err(Refusal::LeaseIdTaken {
                        lease: lease_id.short(),
                    });
                }
                // A queued create may find its identity's leases filled up while it waited.
                self.identity_has_room(request.origin.as_ref())?;
                let expires_at = now + request.ttl;
                self.count_lease(request.origin.as_ref());
                self.leases.insert(
                    lease_id,
                    Lease {
                        ttl: request.ttl,
                        expires_at,
                        locks: BTreeSet::new(),
                        origin: request.origin.clone(),
                    },
                );
                self.expiries.insert((expires_at, lease_id));
                effects.writes.push(Write::PutLease {
                    lease: lease_id,
                    ttl: request.ttl,
                    holder: request.holder.clone(),
                    origin: request.origin.clone(),
                });
                (request.ttl, true)
            }
            LeaseChoice::Join(_) => {
                // A queued join may find its lease filled up while it waited.
                self.lease_has_room(&lease_id)?;
                (self.extend(now, lease_id)?, false)
            }
        };
        let origin = match self.leases.get_mut(&lease_id) {
            Some(lease) => {
                lease.locks.insert(request.lock.clone());
                lease.origin.clone()
            }
            None => None,
        };
        self.next_token = next_token;
        self.held_locks += 1;
        let entry = self.locks.entry(request.lock.clone()).or_default();
        // Expiry runs first, so a delay has always ended (and been cleared) by now; this
        // keeps a grant from ever leaving a delay behind, in memory or on disk.
        if let Some(until) = entry.delayed_until.take() {
            self.delays.remove(&(until, request.lock.clone()));
            effects.writes.push(Write::DeleteLockDelay {
                lock: request.lock.clone(),
            });
        }
        entry.holding = Some(Holding {
            lease: lease_id,
            token,
            holder: request.holder.clone(),
            lock_delay: request.lock_delay,
        });
        effects.writes.push(Write::PutLock {
            lock: request.lock.clone(),
            lease: lease_id,
            token,
            holder: request.holder.clone(),
            lock_delay: request.lock_delay,
        });
        effects.writes.push(Write::NextToken(next_token));
        effects.events.push(Event {
            kind: EventKind::Acquired,
            lock: request.lock.clone(),
            holder: request.holder,
            token,
            handoff,
            lease: Some(lease_id),
            origin,
        });
        Ok(Grant {
            lock: request.lock,
            lease: lease_id,
            token,
            ttl,
            created_lease,
        })
    }

    /// Why a grant to this lease choice would exceed a capacity limit, if it would.
    fn capacity_shortage(&self, lease: &LeaseChoice) -> Option<Refusal> {
        shortage(&self.limits, self.held_locks, self.leases.len(), lease)
    }

    fn renew(&mut self, now: Timestamp, lease: LeaseId) -> Result<Reply, Refusal> {
        let ttl = self.extend(now, lease)?;
        Ok(Reply::Renewed { ttl })
    }

    /// Extends a live lease to a full TTL from `now`; returns the TTL.
    fn extend(&mut self, now: Timestamp, lease_id: LeaseId) -> Result<Duration, Refusal> {
        let Some(lease) = self.leases.get_mut(&lease_id) else {
            return Err(self.gone(&lease_id));
        };
        let expires_at = now + lease.ttl;
        if expires_at != lease.expires_at {
            self.expiries.remove(&(lease.expires_at, lease_id));
            self.expiries.insert((expires_at, lease_id));
            lease.expires_at = expires_at;
        }
        Ok(lease.ttl)
    }

    fn release(
        &mut self,
        now: Timestamp,
        lease_id: LeaseId,
        lock: Option<LockName>,
        effects: &mut Effects,
    ) -> Result<Reply, Refusal> {
        self.live_lease(&lease_id)?;
        match lock {
            Some(lock) => {
                let holds = self
                    .leases
                    .get_mut(&lease_id)
                    .is_some_and(|lease| lease.locks.remove(&lock));
                if !holds {
                    return Err(Refusal::NotHolder {
                        lease: lease_id.short(),
                        lock,
                    });
                }
                let origin = self
                    .leases
                    .get(&lease_id)
                    .and_then(|lease| lease.origin.clone());
                self.free_lock(now, &lock, EventKind::Released, origin.as_ref(), effects);
                self.hand_on(now, &lock, effects);
            }
            None => {
                let freed = self.end_lease(now, lease_id, EndReason::Released, effects);
                for lock in freed {
                    self.hand_on(now, &lock, effects);
                }
            }
        }
        Ok(Reply::Released)
    }

    fn revoke(
        &mut self,
        now: Timestamp,
        lock: LockName,
        token: Option<FencingToken>,
        whole_lease: bool,
        effects: &mut Effects,
    ) -> Result<Reply, Refusal> {
        let holding = self
            .locks
            .get(&lock)
            .and_then(|entry| entry.holding.as_ref())
            .map(|holding| (holding.lease, holding.token));
        let (lease, current) = match (holding, token) {
            (Some((lease, current)), None) => (lease, current),
            (Some((lease, current)), Some(expected)) if current == expected => (lease, current),
            (held, expected) => {
                return Err(Refusal::NotHeld {
                    lock,
                    expected,
                    current: held.map(|(_, current)| current),
                })
            }
        };
        let lock = (!whole_lease).then_some(lock);
        self.release(now, lease, lock, effects)?;
        Ok(Reply::Revoked {
            lease,
            token: current,
        })
    }

    fn cancel_wait(&mut self, now: Timestamp, waiter: WaiterId, effects: &mut Effects) -> Reply {
        let Some(request) = self.waiters.remove(&waiter) else {
            return Reply::Cancelled(false);
        };
        self.detached.remove(&waiter);
        forget_waiter(waiter, &request, effects);
        if let Some(entry) = self.locks.get_mut(&request.lock) {
            if let Ok(index) = entry.queue.binary_search(&waiter) {
                entry.queue.remove(index);
            }
            shrink_queue(&mut entry.queue);
        }
        // The cancelled waiter may have been all that kept an idle entry alive.
        self.hand_on(now, &request.lock, effects);
        Reply::Cancelled(true)
    }

    /// Expires every lease due at `now`, ends every lock-delay due, and hands on the locks
    /// that frees. Handoffs run after all expiries, so no waiter joins a lease that is
    /// expiring in the same instant.
    fn expire_due(&mut self, now: Timestamp, effects: &mut Effects) {
        let mut freed = Vec::new();
        while let Some(&(at, lease_id)) = self.expiries.first() {
            if at > now {
                break;
            }
            freed.extend(self.end_lease(now, lease_id, EndReason::Expired, effects));
        }
        while let Some((at, _)) = self.delays.first() {
            if *at > now {
                break;
            }
            if let Some((_, lock)) = self.delays.pop_first() {
                freed.push(lock);
            }
        }
        for lock in freed {
            self.hand_on(now, &lock, effects);
        }
        self.expire_detached(now, effects);
    }

    /// Removes a lease and frees its locks; returns the locks to hand on.
    fn end_lease(
        &mut self,
        now: Timestamp,
        lease_id: LeaseId,
        reason: EndReason,
        effects: &mut Effects,
    ) -> Vec<LockName> {
        let Some(lease) = self.leases.remove(&lease_id) else {
            return Vec::new();
        };
        self.expiries.remove(&(lease.expires_at, lease_id));
        self.uncount_lease(lease.origin.as_ref());
        effects.freed_capacity = true;
        let kind = match reason {
            EndReason::Expired => EventKind::Expired,
            EndReason::Released => EventKind::Released,
        };
        for lock in &lease.locks {
            self.free_lock(now, lock, kind, lease.origin.as_ref(), effects);
        }
        effects.writes.push(Write::DeleteLease { lease: lease_id });
        self.ended.remember(now, lease_id, reason);
        lease.locks.into_iter().collect()
    }

    /// Clears a lock's holding; starts its lock-delay if it expired with one. `origin`:
    /// who created the holding's lease, for the event.
    fn free_lock(
        &mut self,
        now: Timestamp,
        lock: &LockName,
        kind: EventKind,
        origin: Option<&Arc<LeaseOrigin>>,
        effects: &mut Effects,
    ) {
        let Some(entry) = self.locks.get_mut(lock) else {
            return;
        };
        let Some(holding) = entry.holding.take() else {
            return;
        };
        self.held_locks = self.held_locks.saturating_sub(1);
        effects.freed_capacity = true;
        effects
            .writes
            .push(Write::DeleteLock { lock: lock.clone() });
        if kind == EventKind::Expired && !holding.lock_delay.is_zero() {
            let until = now + holding.lock_delay;
            entry.delayed_until = Some(until);
            self.delays.insert((until, lock.clone()));
            // In the expiry's own writes, so the delay is durable with the expiry.
            effects.writes.push(Write::PutLockDelay {
                lock: lock.clone(),
                delay: holding.lock_delay,
            });
        }
        effects.events.push(Event {
            kind,
            lock: lock.clone(),
            holder: holding.holder,
            token: holding.token,
            handoff: false,
            lease: Some(holding.lease),
            origin: origin.cloned(),
        });
    }

    /// Grants a free lock to its first waiter that can take it; drops the entry when idle.
    ///
    /// A waiter whose grant would exceed the lease or lock limit is refused with that
    /// limit only if it is the first to meet the shortage at this lock; the waiters behind
    /// it keep their places, and the lock goes into `stalled`, to be handed on when a lease
    /// or lock ends ([`LockTable::hand_on_stalled`]). So one shortage fails one waiter, not
    /// the whole queue, and no queue is left with nothing to wake it.
    fn hand_on(&mut self, now: Timestamp, lock: &LockName, effects: &mut Effects) {
        loop {
            let Some(entry) = self.locks.get_mut(lock) else {
                self.stalled.remove(lock);
                return;
            };
            if entry.holding.is_some() {
                return;
            }
            match entry.delayed_until {
                Some(until) if until > now => return,
                Some(until) => {
                    entry.delayed_until = None;
                    self.delays.remove(&(until, lock.clone()));
                    effects
                        .writes
                        .push(Write::DeleteLockDelay { lock: lock.clone() });
                    continue;
                }
                None => {}
            }
            let Some(&waiter) = entry.queue.front() else {
                if entry.is_idle() {
                    self.locks.remove(lock);
                }
                self.stalled.remove(lock);
                return;
            };
            // A restored waiter holds the lock for its client until it comes back or its
            // grace ends ([`detached`]).
            if self.detached.contains(&waiter) {
                self.stalled.remove(lock);
                return;
            }
            let Some(request) = self.waiters.remove(&waiter) else {
                entry.queue.pop_front();
                continue;
            };
            let shortage = shortage(
                &self.limits,
                self.held_locks,
                self.leases.len(),
                &request.lease,
            );
            if shortage.is_some() && !self.stalled.insert(lock.clone()) {
                // Already stalled: its first waiter was told; the rest wait for capacity.
                self.waiters.insert(waiter, request);
                return;
            }
            entry.queue.pop_front();
            shrink_queue(&mut entry.queue);
            forget_waiter(waiter, &request, effects);
            let result = match shortage {
                Some(shortage) => Err(shortage),
                None => {
                    self.stalled.remove(lock);
                    self.grant(now, request, true, effects)
                }
            };
            effects.handoffs.push(Handoff { waiter, result });
        }
    }

    /// After a lease or lock ended, hands on the stalled locks (in name order) while
    /// capacity lasts.
    fn hand_on_stalled(&mut self, now: Timestamp, effects: &mut Effects) {
        if !std::mem::take(&mut effects.freed_capacity) || self.stalled.is_empty() {
            return;
        }
        let stalled: Vec<LockName> = self.stalled.iter().cloned().collect();
        for lock in stalled {
            if self.held_locks >= self.limits.max_locks {
                return;
            }
            self.hand_on(now, &lock, effects);
        }
    }

    /// Checks that the identity of `origin` may create one more lease
    /// (`max_leases_per_identity`).
    fn identity_has_room(&self, origin: Option<&Arc<LeaseOrigin>>) -> Result<(), Refusal> {
        let (Some(limit), Some(identity)) = (
            self.limits.max_leases_per_identity,
            LeaseOrigin::identity(origin),
        ) else {
            return Ok(());
        };
        let live = self.identity_leases.get(identity).copied().unwrap_or(0);
        if live >= limit {
            return Err(Refusal::IdentityLeases {
                identity: identity.to_string(),
                limit,
            });
        }
        Ok(())
    }

    /// Counts a new live lease against its identity.
    fn count_lease(&mut self, origin: Option<&Arc<LeaseOrigin>>) {
        if let Some(identity) = LeaseOrigin::identity(origin) {
            *self.identity_leases.entry(identity.clone()).or_insert(0) += 1;
        }
    }

    /// Takes an ended lease off its identity's count, forgetting identities with none.
    fn uncount_lease(&mut self, origin: Option<&Arc<LeaseOrigin>>) {
        let Some(identity) = LeaseOrigin::identity(origin) else {
            return;
        };
        if let Some(live) = self.identity_leases.get_mut(identity) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.identity_leases.remove(identity);
            }
        }
    }

    /// Checks that a live lease may take one more lock (`max_locks_per_lease`), so that its
    /// expiry stays one bounded burst of writes and events.
    fn lease_has_room(&self, lease_id: &LeaseId) -> Result<(), Refusal> {
        let held = self.live_lease(lease_id)?.locks.len();
        if held >= self.limits.max_locks_per_lease {
            return Err(Refusal::LeaseFull {
                lease: lease_id.short(),
                limit: self.limits.max_locks_per_lease,
            });
        }
        Ok(())
    }

    /// Checks that a lease is live; otherwise says what became of it.
    fn live_lease(&self, lease: &LeaseId) -> Result<&Lease, Refusal> {
        self.leases.get(lease).ok_or_else(|| self.gone(lease))
    }

    /// Why a lease id names no live lease: expired, released or unknown.
    fn gone(&self, lease: &LeaseId) -> Refusal {
        match self.ended.reason(lease) {
            Some(EndReason::Expired) => Refusal::LeaseExpired {
                lease: lease.short(),
            },
            Some(EndReason::Released) => Refusal::LeaseReleased {
                lease: lease.short(),
            },
            None => Refusal::UnknownLease {
                lease: lease.short(),
            },
        }
    }
}

/// Why one more grant to `lease` would exceed a capacity limit, given how many locks are
/// held and leases live: every grant takes a lock slot, and a new lease a lease slot too.
fn shortage(
    limits: &Limits,
    held_locks: usize,
    leases: usize,
    lease: &LeaseChoice,
) -> Option<Refusal> {
    if held_locks >= limits.max_locks {
        return Some(Refusal::Exhausted {
            what: "locks",
            limit: limits.max_locks,
        });
    }
    if matches!(lease, LeaseChoice::New(_)) && leases >= limits.max_leases {
        return Some(Refusal::Exhausted {
            what: "leases",
            limit: limits.max_leases,
        });
    }
    None
}

/// Deletes a queued acquirer's record as it leaves its queue. Only creates are stored: a
/// join is not sent again after a failover (its lease may be gone), so a restored one
/// would only hold up its lock until its grace ended.
fn forget_waiter(waiter: WaiterId, request: &Acquire, effects: &mut Effects) {
    if let LeaseChoice::New(_) = request.lease {
        effects.writes.push(Write::DeleteWaiter { waiter });
    }
}

/// Gives back a queue's spare memory once it is mostly empty, so a lock whose queue was
/// once long (its waiters timed out) does not keep that memory while it stays held.
fn shrink_queue(queue: &mut VecDeque<WaiterId>) {
    const KEEP: usize = 64;
    if queue.capacity() > KEEP && queue.len() <= queue.capacity() / 4 {
        queue.shrink_to((queue.capacity() / 2).max(KEEP));
    }
}
