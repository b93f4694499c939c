//! Queued acquirers restored from disk, waiting for their clients to come back.
//!
//! Every queued acquirer that creates a lease is durable (a
//! [`Write::PutWaiter`](super::Write::PutWaiter) when it queues, a
//! [`Write::DeleteWaiter`](super::Write::DeleteWaiter) when it leaves the queue), so a restarted server, or a
//! cluster's new leader, rebuilds each lock's queue in the order it had. (One that joins a
//! lease is not stored: its client does not send it again after a failover.) But the clients' calls were
//! cut off: a restored waiter is *detached*, with no one to answer. It keeps its place for
//! [`Limits::waiter_grace`](super::Limits::waiter_grace), long enough for its client to
//! find the server again and send the same acquire (the same lock and the same lease id:
//! the SDK sends a cut-off waiting acquire again with them); that acquire *attaches* to
//! the restored waiter, which answers it from then on, at its old place (L2 across a
//! restart or a failover). A detached waiter at the head of a free lock holds the lock for
//! its client, as a lock-delay does; one whose grace ends before its client came back
//! leaves the queue, and the lock goes on to the next waiter.

use std::collections::{BTreeMap, BTreeSet};

use super::{Acquire, Effects, LockTable, Reply, WaiterId};
use crate::clock::Timestamp;

/// The detached waiters and when each one's grace ends.
#[derive(Debug, Default)]
pub(super) struct Detached {
    /// Grace end by waiter.
    until: BTreeMap<WaiterId, Timestamp>,
    /// The same, in time order: what expires next.
    due: BTreeSet<(Timestamp, WaiterId)>,
}

impl Detached {
    /// Detaches `waiter` until `until`.
    pub(super) fn insert(&mut self, waiter: WaiterId, until: Timestamp) {
        self.until.insert(waiter, until);
        self.due.insert((until, waiter));
    }

    /// Whether `waiter` waits for its client to come back.
    pub(super) fn contains(&self, waiter: &WaiterId) -> bool {
        self.until.contains_key(waiter)
    }

    /// Forgets `waiter` (attached, or out of the queue); whether it was detached.
    pub(super) fn remove(&mut self, waiter: &WaiterId) -> bool {
        match self.until.remove(waiter) {
            Some(until) => {
                self.due.remove(&(until, *waiter));
                true
            }
            None => false,
        }
    }

    /// When the next grace ends.
    pub(super) fn next_due(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The waiters whose grace ended by `now`, forgotten here.
    fn take_due(&mut self, now: Timestamp) -> Vec<WaiterId> {
        let mut due = Vec::new();
        while let Some(&(at, waiter)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.until.remove(&waiter);
            due.push(waiter);
        }
        due
    }

    /// Whether no waiter is detached.
    pub(super) fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Every detached waiter.
    fn waiters(&self) -> impl Iterator<Item = &WaiterId> {
        self.until.keys()
    }
}

impl LockTable {
    /// If `request` is a detached waiter's acquire sent again (the same lock, the same
    /// lease choice), attaches it: the waiter answers it from its old place, and, if it
    /// heads a free lock, is granted now. `None` if no detached waiter is this one's.
    pub(super) fn attach(
        &mut self,
        now: Timestamp,
        request: &Acquire,
        effects: &mut Effects,
    ) -> Option<Reply> {
        if self.detached.is_empty() {
            return None;
        }
        let waiter = self.detached.waiters().copied().find(|waiter| {
            self.waiters
                .get(waiter)
                .is_some_and(|queued| queued.lock == request.lock && queued.lease == request.lease)
        })?;
        self.detached.remove(&waiter);
        // At the head of a free lock it was holding the lock for its client: hand it on.
        self.hand_on(now, &request.lock, effects);
        Some(Reply::Queued(waiter))
    }

    /// Takes every detached waiter whose grace ended by `now` out of its queue, durably,
    /// and hands on the locks they were holding up (only once all of them are out: one
    /// whose grace ended with another's must not be granted in its turn).
    pub(super) fn expire_detached(&mut self, now: Timestamp, effects: &mut Effects) {
        let mut locks = Vec::new();
        for waiter in self.detached.take_due(now) {
            let Some(request) = self.waiters.remove(&waiter) else {
                continue;
            };
            super::forget_waiter(waiter, &request, effects);
            if let Some(entry) = self.locks.get_mut(&request.lock) {
                if let Ok(index) = entry.queue.binary_search(&waiter) {
                    entry.queue.remove(index);
                }
                super::shrink_queue(&mut entry.queue);
            }
            locks.push(request.lock);
        }
        for lock in locks {
            self.hand_on(now, &lock, effects);
        }
    }
}
