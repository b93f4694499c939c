//! What the grants of one contended lock say about order, exclusion and handoffs.
//!
//! Every client runs in this one process on one monotonic clock, and the lock is held by
//! one client at a time, so sorting grants by when their answer arrived gives the order the
//! server granted them. Arrival order is approximated by when each request was sent: two
//! requests sent within `margin` of each other may reach the server either way round, so
//! only a grant that jumped a request sent more than `margin` before it counts against FIFO.

use std::time::{Duration, Instant};

/// One grant of the contended lock, seen by its client.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// Which client was granted (its index in the phase).
    pub client: usize,
    /// When the client sent its request (for a retrying client, its first try).
    pub requested: Instant,
    /// When the grant arrived.
    pub granted: Instant,
    /// When the client sent its release.
    pub released: Instant,
}

/// Order and exclusion of a set of grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderReport {
    /// How many grants were examined.
    pub grants: usize,
    /// Grants that went to a request sent more than `margin` after another request that
    /// was still waiting (each such grant counted once).
    pub overtakes: usize,
    /// The largest such jump: how much earlier the passed-over request had been sent.
    pub max_overtake: Duration,
    /// Grants that arrived before the previous holder had even sent its release: two
    /// holders at once, as the clients saw it.
    pub overlaps: usize,
}

/// Examines `grants` (any order).
pub fn analyse(grants: &mut [Grant], margin: Duration) -> OrderReport {
    grants.sort_by_key(|grant| grant.granted);
    let mut report = OrderReport {
        grants: grants.len(),
        ..OrderReport::default()
    };
    // A grant g jumped the queue when some request sent more than `margin` before g's was
    // still waiting when g was granted, i.e. it is granted later. Walking the grants from
    // the last one backwards, the earliest request among those granted after g is the
    // one g most unfairly passed.
    let mut earliest_later: Option<Instant> = None;
    for grant in grants.iter().rev() {
        if let Some(earlier) = earliest_later {
            let jump = grant.requested.saturating_duration_since(earlier);
            if jump > margin {
                report.overtakes += 1;
                report.max_overtake = report.max_overtake.max(jump);
            }
        }
        earliest_later = Some(earliest_later.map_or(grant.requested, |e| e.min(grant.requested)));
    }
    for pair in grants.windows(2) {
        if pair[1].granted < pair[0].released {
            report.overlaps += 1;
        }
    }
    report
}

/// Each grant of `sorted` (in the order granted, as [`analyse`] leaves them) with whether
/// it moved the lock to another client. A grant to the client that held the lock last (a
/// releaser re-taking its own lock, as a lock without a queue allows) is not a handoff:
/// nobody waiting got the lock. The first grant has no predecessor and is not one either.
pub fn handoffs(sorted: &[Grant]) -> impl Iterator<Item = (&Grant, bool)> + '_ {
    let previous = std::iter::once(None).chain(sorted.iter().map(|g| Some(g.client)));
    sorted
        .iter()
        .zip(previous)
        .map(|(grant, previous)| (grant, previous.is_some_and(|p| p != grant.client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(base: Instant, requested_ms: u64, granted_ms: u64) -> Grant {
        Grant {
            client: 0,
            requested: base + Duration::from_millis(requested_ms),
            granted: base + Duration::from_millis(granted_ms),
            released: base + Duration::from_millis(granted_ms) + Duration::from_micros(100),
        }
    }

    #[test]
    fn grants_in_request_order_are_fifo() {
        let base = Instant::now();
        let mut grants = vec![grant(base, 0, 10), grant(base, 1, 20), grant(base, 2, 30)];
        let report = analyse(&mut grants, Duration::from_millis(2));
        assert_eq!(report.grants, 3);
        assert_eq!(report.overtakes, 0);
        assert_eq!(report.overlaps, 0);
    }

    #[test]
    fn a_late_request_granted_first_is_an_overtake() {
        let base = Instant::now();
        // Requested at 0 but granted last; requests at 50 and 60 passed it.
        let mut grants = vec![
            grant(base, 0, 100),
            grant(base, 50, 70),
            grant(base, 60, 80),
        ];
        let report = analyse(&mut grants, Duration::from_millis(2));
        assert_eq!(report.overtakes, 2);
        assert_eq!(report.max_overtake, Duration::from_millis(60));
    }

    #[test]
    fn jumps_within_the_margin_are_forgiven() {
        let base = Instant::now();
        let mut grants = vec![grant(base, 1, 10), grant(base, 0, 20)];
        assert_eq!(analyse(&mut grants, Duration::from_millis(2)).overtakes, 0);
        assert_eq!(
            analyse(&mut grants, Duration::from_micros(500)).overtakes,
            1
        );
    }

    #[test]
    fn only_grants_that_change_hands_are_handoffs() {
        let base = Instant::now();
        let clients = [0, 0, 1, 1, 0, 2];
        let grants: Vec<Grant> = clients
            .iter()
            .enumerate()
            .map(|(i, &client)| Grant {
                client,
                ..grant(base, i as u64, 10 * i as u64 + 10)
            })
            .collect();
        let moved: Vec<bool> = handoffs(&grants).map(|(_, moved)| moved).collect();
        assert_eq!(moved, [false, false, true, false, true, true]);
        assert_eq!(handoffs(&[]).count(), 0);
    }

    #[test]
    fn a_grant_before_the_previous_release_is_an_overlap() {
        let base = Instant::now();
        let mut first = grant(base, 0, 10);
        first.released = base + Duration::from_millis(15);
        let mut grants = vec![first, grant(base, 1, 12)];
        assert_eq!(analyse(&mut grants, Duration::from_millis(2)).overlaps, 1);
    }
}
