//! [`EndedLeases`]: a bounded memory of leases that ended, so a late renewal learns whether
//! its lease expired or was released instead of hearing "unknown".

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use fenced_types::LeaseId;

use crate::clock::Timestamp;

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its TTL ran out without a renewal.
    Expired,
    /// Its holder released it.
    Released,
}

/// Ended lease ids, remembered for at least `keep_for` unless more than `max` ended within
/// that time (then the oldest are forgotten early, so memory stays bounded).
#[derive(Debug)]
pub struct EndedLeases {
    /// Reason by lease id.
    reasons: HashMap<LeaseId, EndReason>,
    /// Lease ids in the order they ended, for pruning.
    order: VecDeque<(Timestamp, LeaseId)>,
    /// How long to remember.
    keep_for: Duration,
    /// How many to remember at most.
    max: usize,
}

impl EndedLeases {
    /// An empty memory.
    pub fn new(keep_for: Duration, max: usize) -> Self {
        EndedLeases {
            reasons: HashMap::new(),
            order: VecDeque::new(),
            keep_for,
            max,
        }
    }

    /// Remembers that a lease ended now.
    pub fn remember(&mut self, now: Timestamp, lease: LeaseId, reason: EndReason) {
        self.prune(now);
        while self.order.len() >= self.max {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.reasons.remove(&oldest);
        }
        if self.reasons.insert(lease, reason).is_none() {
            self.order.push_back((now, lease));
        }
    }

    /// How a lease ended, if it is remembered.
    pub fn reason(&self, lease: &LeaseId) -> Option<EndReason> {
        self.reasons.get(lease).copied()
    }

    /// Forgets what ended longer ago than `keep_for`.
    fn prune(&mut self, now: Timestamp) {
        while let Some(&(at, lease)) = self.order.front() {
            if now.saturating_since(at) <= self.keep_for {
                break;
            }
            self.order.pop_front();
            self.reasons.remove(&lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_the_time_and_stays_bounded() {
        let mut ended = EndedLeases::new(Duration::from_secs(60), 2);
        let (a, b, c) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
        ended.remember(Timestamp::from_millis(0), a, EndReason::Expired);
        ended.remember(Timestamp::from_millis(10), b, EndReason::Released);
        assert_eq!(ended.reason(&a), Some(EndReason::Expired));
        assert_eq!(ended.reason(&b), Some(EndReason::Released));
        // A third within the minute pushes out the oldest: bounded memory wins.
        ended.remember(Timestamp::from_millis(20), c, EndReason::Expired);
        assert_eq!(ended.reason(&a), None);
        // Past the keep time everything older goes.
        let later = LeaseId::random();
        ended.remember(Timestamp::from_millis(61_000), later, EndReason::Expired);
        assert_eq!(ended.reason(&b), None);
        assert_eq!(ended.reason(&c), None);
        assert_eq!(ended.reason(&later), Some(EndReason::Expired));
    }

    #[test]
    fn a_memory_of_nothing_forgets_at_once_and_never_spins() {
        let mut ended = EndedLeases::new(Duration::from_secs(60), 0);
        let lease = LeaseId::random();
        ended.remember(Timestamp::from_millis(0), lease, EndReason::Released);
        ended.remember(
            Timestamp::from_millis(1),
            LeaseId::random(),
            EndReason::Expired,
        );
        assert!(ended.order.len() <= 1);
    }
}
