//! Read-only views of the lock table (describe, list, check-token) and the shapes it is
//! restored from after a restart.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};

use super::{LockEntry, LockTable};
use crate::clock::Timestamp;

/// What anyone may know of a lock: never its lease id, the holder's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockView {
    /// The lock.
    pub lock: LockName,
    /// The holder's name and token, if a live lease holds it.
    pub holder: Option<(Arc<str>, FencingToken)>,
    /// Time until the holder's lease expires unless renewed (zero when free).
    pub remaining: Duration,
    /// How many acquirers are queued.
    pub waiters: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The held or awaited locks, in name order.
    pub locks: Vec<LockView>,
    /// The last lock entry examined, to continue after; `None` when nothing follows.
    pub next: Option<LockName>,
}

/// A lease read back from disk.
#[derive(Debug, Clone)]
pub struct RestoredLease {
    /// Its id.
    pub lease: LeaseId,
    /// Its TTL.
    pub ttl: Duration,
    /// Who created it, if recorded.
    pub origin: Option<Arc<super::LeaseOrigin>>,
}

/// A held lock read back from disk.
#[derive(Debug, Clone)]
pub struct RestoredLock {
    /// The lock.
    pub lock: LockName,
    /// The lease that holds it.
    pub lease: LeaseId,
    /// Its grant's token.
    pub token: FencingToken,
    /// The holder's name.
    pub holder: Arc<str>,
    /// Its lock-delay.
    pub lock_delay: Duration,
}

/// A queued acquirer read back from disk.
#[derive(Debug, Clone)]
pub struct RestoredWaiter {
    /// Its place.
    pub waiter: super::WaiterId,
    /// What it asked for.
    pub request: super::Acquire,
}

/// A lock-delay read back from disk: its holder expired with it, and it had not ended.
#[derive(Debug, Clone)]
pub struct RestoredDelay {
    /// The lock.
    pub lock: LockName,
    /// The whole lock-delay, restored in full from the restart.
    pub delay: Duration,
}

/// Durable state that contradicts itself: a sign of corruption, refused rather than
/// guessed at (a guess could hand out a token twice). Or limits the table cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The limits given are invalid (a caller that skipped [`Config::validate`]).
    ///
    /// [`Config::validate`]: crate::config::Config::validate
    #[error("invalid limits: {0}")]
    Limits(#[from] super::LimitsError),
    /// A held lock names a lease that is not on disk.
    #[error("lock {lock:?} is held by a lease that is not on disk")]
    OrphanLock {
        /// The lock.
        lock: LockName,
    },
    /// A lock is both held and in a lock-delay (a grant ends the delay in the same batch).
    #[error("lock {lock:?} is held and in a lock-delay at once")]
    DelayOnHeldLock {
        /// The lock.
        lock: LockName,
    },
    /// A held lock's token is not below the stored next token.
    #[error("lock {lock:?} holds token {token}, but the stored next token is {next_token}")]
    TokenAhead {
        /// The lock.
        lock: LockName,
        /// Its token.
        token: FencingToken,
        /// The stored next token.
        next_token: FencingToken,
    },
}

impl LockTable {
    /// Describes one lock as of `now`. The engine applies the expiries due by `now` first
    /// and makes them durable before it answers ([`crate::engine::Engine::read`]), so a
    /// lease shown as gone stays gone after a crash; a lease past its expiry that is still
    /// in the table is shown as gone all the same, never as holding the lock.
    pub fn describe(&self, now: Timestamp, lock: &LockName) -> LockView {
        match self.locks.get(lock) {
            Some(entry) => self.view(now, lock, entry),
            None => LockView {
                lock: lock.clone(),
                holder: None,
                remaining: Duration::ZERO,
                waiters: 0,
            },
        }
    }

    /// One page of the held or awaited locks whose names start with `prefix`, in name
    /// order, after the lock entry `after` (exclusive) or from the first. It examines at
    /// most `page` lock entries (at least one), so the work done under the engine's lock is
    /// bounded by the page, not by the table; entries with neither a live holder nor a
    /// waiter (a lock-delay, an expiry not yet reaped) are examined but not listed, so a
    /// page may hold fewer locks while more follow.
    pub fn list(
        &self,
        now: Timestamp,
        prefix: &str,
        after: Option<&LockName>,
        page: usize,
    ) -> ListPage {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Included(prefix),
        };
        let mut entries = self
            .locks
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.as_str().starts_with(prefix));
        let mut locks = Vec::new();
        let mut last = None;
        for (name, entry) in entries.by_ref().take(page.max(1)) {
            let view = self.view(now, name, entry);
            if view.holder.is_some() || view.waiters > 0 {
                locks.push(view);
            }
            last = Some(name);
        }
        let next = match entries.next() {
            Some(_) => last.cloned(),
            None => None,
        };
        ListPage { locks, next }
    }

    /// The locks lease `lease` holds (none for a lease the table does not know): what the
    /// policy decides a renewal or release by lease id on ([`crate::access`]).
    pub fn lease_locks(&self, lease: &LeaseId) -> impl Iterator<Item = &LockName> {
        self.leases
            .get(lease)
            .into_iter()
            .flat_map(|lease| lease.locks.iter())
    }

    /// The live holder's token of a lock, if it is held at `now`.
    pub fn current_token(&self, now: Timestamp, lock: &LockName) -> Option<FencingToken> {
        self.describe(now, lock).holder.map(|(_, token)| token)
    }

    fn view(&self, now: Timestamp, lock: &LockName, entry: &LockEntry) -> LockView {
        let live = entry.holding.as_ref().and_then(|holding| {
            let lease = self.leases.get(&holding.lease)?;
            (lease.expires_at > now).then(|| {
                (
                    (holding.holder.clone(), holding.token),
                    lease.expires_at.saturating_since(now),
                )
            })
        });
        LockView {
            lock: lock.clone(),
            holder: live.as_ref().map(|(holder, _)| holder.clone()),
            remaining: live.map(|(_, remaining)| remaining).unwrap_or_default(),
            waiters: entry.queue.len(),
        }
    }
}
