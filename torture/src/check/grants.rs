//! S2: no acknowledged, unreleased grant is overtaken by another grant of the same lock
//! before its TTL ran out, with the TTL counted as the server counts it.
//!
//! The server expires a lease no earlier than the latest of:
//! - its request's send time plus the TTL (the server granted it no earlier);
//! - every confirmed renewal's send time plus the renewed TTL (it handled the renewal no
//!   earlier, and a renewal extends the lease to a full TTL from then);
//! - after a restart of the lock server, the time the new process was started plus the
//!   TTL, if the lease was surely alive when the old process died (an acknowledged grant
//!   is on disk, and recovery restores it with its full TTL from the restart).
//!
//! A second grant of the lock answered before that instant was granted while the first
//! lease was unexpired: a violation, unless the first lease's holder had started to
//! release it.
//!
//! In a cluster (members `fenced-1`, `fenced-2`, ... in the history) the restart clause
//! does not apply: a member's restart is not the service restarting. The leases live in
//! the replicated state; what gives them a full TTL again is a new leader's promotion
//! (CONTRACT C3), at an instant the history does not record (the harness sees kills,
//! pauses and cuts, not elections), and a killed member that followed restores nothing
//! anyone is served from. So a cluster's leases are held to the first two bounds, which
//! hold in any case: C3 says a failover never shortens a lease. The extension C3 allows
//! (up to `TTL + 2 x election_timeout_max + P` after the last confirmed renewal) only
//! moves an expiry later, so a grant before these bounds is a violation in a cluster as
//! on one node, and the checker claims nothing more of a cluster than they prove. The
//! single lock server (target `fenced`) keeps the restart clause exactly as above.

use std::collections::HashMap;

use super::model::{Grant, Model, Renewal, ServerEvent, LOCK_SERVER};
use super::{granted_before, secs, OpRef, Options, Rule, Violation};
use crate::history::{Nanos, ServerChange};

/// Reports grants that overtook an unexpired lease.
pub fn check(model: &Model, options: &Options, out: &mut Vec<Violation>) {
    let mut by_lock: HashMap<&str, Vec<&Grant>> = HashMap::new();
    for grant in &model.grants {
        by_lock.entry(grant.lock.as_str()).or_default().push(grant);
    }
    let no_renewals = Vec::new();
    for grants in by_lock.values() {
        for second in grants {
            for first in grants {
                if first.lease == second.lease || !granted_before(first, second) {
                    continue;
                }
                if first.released.is_some_and(|r| r <= second.completed) {
                    continue;
                }
                let renewals = model.renewals.get(&first.lease).unwrap_or(&no_renewals);
                let (expiry, why) =
                    earliest_expiry(first, second.completed, renewals, &model.servers);
                if second.completed.saturating_add(options.slack) < expiry {
                    out.push(Violation {
                        rule: Rule::S2,
                        at: second.completed,
                        message: format!(
                            "{} (token {}) was granted {} by {}, but {} (token {}) held it \
                             until at least {} ({why})",
                            second.lock,
                            second.token,
                            second.lease,
                            secs(second.completed),
                            first.lease,
                            first.token,
                            secs(expiry)
                        ),
                        ops: vec![
                            OpRef::of(model.op(first.op)),
                            OpRef::of(model.op(second.op)),
                        ],
                    });
                    // One overtaken lease is enough evidence against this grant.
                    break;
                }
            }
        }
    }
}

/// The earliest instant the server can have expired `grant`, from what was seen before
/// `until`, and why.
pub fn earliest_expiry(
    grant: &Grant,
    until: Nanos,
    renewals: &[Renewal],
    servers: &[ServerEvent],
) -> (Nanos, String) {
    let mut expiry = grant.invoked.saturating_add(grant.ttl);
    let mut why = format!("granted on a request sent at {}", secs(grant.invoked));
    // What a restart restores: the TTL the lease was granted (or last renewed) with.
    let mut restore_ttl = grant.ttl;
    enum Point {
        Renewed(Nanos, Nanos),
        Died(Nanos),
    }
    let mut points: Vec<(Nanos, Point)> = renewals
        .iter()
        .filter(|r| r.sent < until)
        .map(|r| (r.sent, Point::Renewed(r.sent, r.ttl)))
        .collect();
    points.extend(
        servers
            .iter()
            .filter(|s| {
                s.target == LOCK_SERVER
                    && s.change == ServerChange::Down
                    && s.at > grant.invoked
                    && s.at < until
            })
            .map(|s| (s.at, Point::Died(s.at))),
    );
    points.sort_by_key(|(at, _)| *at);
    for (_, point) in points {
        match point {
            Point::Renewed(sent, ttl) => {
                restore_ttl = restore_ttl.min(ttl);
                if sent.saturating_add(ttl) > expiry {
                    expiry = sent.saturating_add(ttl);
                    why = format!("renewal sent at {} confirmed", secs(sent));
                }
            }
            Point::Died(died) => {
                if expiry <= died {
                    continue;
                }
                let restarted = servers
                    .iter()
                    .find(|s| {
                        s.target == LOCK_SERVER
                            && s.change == ServerChange::Starting
                            && s.at >= died
                    })
                    .map(|s| s.at);
                if let Some(started) = restarted.filter(|&s| s < until) {
                    let restored = started.saturating_add(restore_ttl);
                    if restored > expiry {
                        expiry = restored;
                        why = format!(
                            "alive when the lock server died at {}, so restored with its \
                             full TTL from the restart at {}",
                            secs(died),
                            secs(started)
                        );
                    }
                }
            }
        }
    }
    (expiry, why)
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;

    // checks: S2
    #[test]
    fn a_grant_after_the_ttl_or_after_a_release_is_fine() {
        let mut h = H::new();
        // w1's lease (1 s from its request at 0) lapses; w2 gets the lock at 1100.
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .grant("w2", 500, 1100, "a", "w2.1", 2, 1000, 2000)
            // w2 starts releasing at 1200; w1 is granted at 1250.
            .release("w2", 1200, 1300, "w2.1")
            .grant("w1", 1150, 1250, "a", "w1.2", 3, 1000, 2000);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());
    }

    // checks: S2
    #[test]
    fn a_grant_inside_the_ttl_is_reported() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .grant("w2", 500, 900, "a", "w2.1", 2, 1000, 2000);
        let found = h.violations(Rule::S2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("w1.1"), "{}", found[0].message);
    }

    // checks: S2
    #[test]
    fn renewals_extend_the_ttl_in_both_directions() {
        // Renewed at 800 for 1 s: held until at least 1800. A grant at 1500 is too early...
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .renewed("w1", 820, "w1.1", 800, 1000)
            .grant("w2", 500, 1500, "a", "w2.1", 2, 1000, 2000);
        assert_eq!(h.violations(Rule::S2).len(), 1, "{:?}", h.check());
        // ...and a grant at 1900 is fine.
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .renewed("w1", 820, "w1.1", 800, 1000)
            .grant("w2", 500, 1900, "a", "w2.1", 2, 1000, 2000);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());
    }

    // checks: S2
    #[test]
    fn a_restart_restores_live_leases_with_a_full_ttl_from_the_restart() {
        // w1's lease (until >= 1000) is alive when the server dies at 600; the new server
        // starts at 700, so the lease holds until at least 1700.
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .restart(600, 700, 750)
            .grant("w2", 760, 1200, "a", "w2.1", 2, 1000, 0);
        let found = h.violations(Rule::S2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("restart"), "{}", found[0].message);

        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .restart(600, 700, 750)
            .grant("w2", 760, 1750, "a", "w2.1", 2, 1000, 0);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());
    }

    // checks: S2
    #[test]
    fn a_lease_that_may_have_expired_before_the_crash_is_not_extended() {
        // The lease may be gone at 1000; the server dies at 1500: no claim from the restart.
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .restart(1500, 1600, 1650)
            .grant("w2", 1660, 1700, "a", "w2.1", 2, 1000, 0);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());
    }

    // checks: S2 (the shape of a run the harness flagged before the worker recorded the
    // SDK's own release: the lock server restarts, the SDK gives the lease up as surely
    // expired, releases it in the background, and the next waiter gets the lock)
    #[test]
    fn a_lease_the_sdk_gave_up_and_released_is_not_held_after_a_restart() {
        let mut h = H::new();
        h.grant("w3", 0, 6, "l0", "w3.2", 7, 509, 848)
            .restart(20, 210, 400)
            .state("w3", 570, "w3.2", crate::history::SdkState::Lost)
            .op(
                "w3",
                570,
                Some(570),
                crate::history::Op::Release {
                    lease: "w3.2".into(),
                },
                crate::history::Outcome::Unknown {
                    error: "released by the SDK in the background".into(),
                },
            )
            .grant("w2", 430, 610, "l0", "w2.3", 8, 551, 1944);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());
        // Without the release, the restored lease (until 210 + 509) was overtaken.
        let mut h = H::new();
        h.grant("w3", 0, 6, "l0", "w3.2", 7, 509, 848)
            .restart(20, 210, 400)
            .grant("w2", 430, 610, "l0", "w2.3", 8, 551, 1944);
        assert_eq!(h.violations(Rule::S2).len(), 1, "{:?}", h.check());
    }

    // checks: S2, C3 (a cluster member's restart is not the service restarting: the
    // restart clause stays the single server's; the TTL bound holds in a cluster too)
    #[test]
    fn a_cluster_member_restart_restores_nothing_but_the_ttl_still_binds() {
        // The same history as a single server's restart above, which is a violation there.
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .restart_of("fenced-2", 600, 700, 750)
            .grant("w2", 760, 1200, "a", "w2.1", 2, 1000, 0);
        assert!(h.violations(Rule::S2).is_empty(), "{:?}", h.check());

        // A grant inside the TTL is a violation in a cluster as on one node.
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .restart_of("fenced-2", 600, 700, 750)
            .grant("w2", 760, 900, "a", "w2.1", 2, 1000, 0);
        let found = h.violations(Rule::S2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            !found[0].message.contains("restart"),
            "{}",
            found[0].message
        );
    }
}
