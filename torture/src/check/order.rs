//! L2: waiters are granted in arrival order. Of two waiting acquires of one lock that were
//! both granted, the one that started waiting at least [`Options::fifo_margin`] earlier
//! must get the lower token (the server hands tokens out in grant order).
//!
//! A fault can delay a request on its way (a paused worker, a slow link) or cost a waiter
//! its place (a waiter whose place was not yet durable when its server was lost), and a
//! liveness rule is promised only "when the network and processes behave". So a pair of
//! waits is judged only
//! - far from any fault ([`Options::fault_settle`] before, during or after it), or
//! - across a restart or a failover (CONTRACT.md, "Queued acquirers across a restart or a
//!   failover"): when every fault near the waits is a kill of the lock server (a cluster
//!   member or the single node) or a leader change,
//!   and the earlier waiter's place was surely committed before the first of them: a grant
//!   sent at least the FIFO margin after that waiter started (so it reached the leader
//!   after the waiter's place) was acknowledged, so committed, before the first kill, and
//!   at least the settle time before the first leader change the harness noticed (it
//!   notices one the nemesis did not make late, so none came between). Its client,
//!   which no fault touched, sends its acquire again within the waiter grace, so the new
//!   leader serves it before anyone who came after it. A pause of the leader is left out:
//!   a client may wait on the paused leader past the grace.

use std::collections::HashMap;

use super::model::{FaultWindow, Grant, Model, LOCK_SERVER};
use super::{secs, OpRef, Options, Rule, Violation};
use crate::history::Nanos;

/// Why a pair of waits is judged.
enum Basis<'m> {
    /// No fault near it.
    Quiet,
    /// Failover only, and the earlier waiter's place committed before it: this grant shows.
    CommittedPlace(&'m Grant),
}

/// Reports a waiter overtaken by one that came later.
pub fn check(model: &Model, options: &Options, out: &mut Vec<Violation>) {
    let near = |from: Nanos, to: Nanos| -> Vec<&FaultWindow> {
        model
            .faults
            .iter()
            .filter(|fault| {
                let end = fault
                    .end
                    .map_or(Nanos::MAX, |e| e.saturating_add(options.fault_settle));
                !(end < from || fault.start > to)
            })
            .collect()
    };
    let mut by_lock: HashMap<&str, Vec<&Grant>> = HashMap::new();
    for grant in model.grants.iter().filter(|g| g.wait_ms > 0) {
        by_lock.entry(grant.lock.as_str()).or_default().push(grant);
    }
    for waiters in by_lock.values() {
        for early in waiters {
            for late in waiters {
                if early.invoked.saturating_add(options.fifo_margin) >= late.invoked
                    || late.token >= early.token
                {
                    continue;
                }
                let faults = near(early.invoked, early.completed.max(late.completed));
                let basis = if faults.is_empty() {
                    Basis::Quiet
                } else if let Some(proof) =
                    committed_before_failover(model, options, early, &faults)
                {
                    Basis::CommittedPlace(proof)
                } else {
                    continue;
                };
                let mut message = format!(
                    "{} started waiting for {} at {}, {} ms before {} did, but {} was granted \
                     first (token {} < {})",
                    early.lease,
                    early.lock,
                    secs(early.invoked),
                    (late.invoked - early.invoked) / 1_000_000,
                    late.lease,
                    late.lease,
                    late.token,
                    early.token
                );
                let mut ops = vec![OpRef::of(model.op(early.op)), OpRef::of(model.op(late.op))];
                if let Basis::CommittedPlace(proof) = basis {
                    message.push_str(&format!(
                        "; across a failover ({}), with {}'s place committed before it ({} was \
                         granted after it queued)",
                        faults
                            .iter()
                            .map(|fault| format!("{} {}", fault.kind, fault.target))
                            .collect::<Vec<_>>()
                            .join(", "),
                        early.lease,
                        proof.lease
                    ));
                    ops.push(OpRef::of(model.op(proof.op)));
                }
                out.push(Violation {
                    rule: Rule::L2,
                    at: late.completed,
                    message,
                    ops,
                });
            }
        }
    }
}

/// Whether `faults` (those near a pair of waits) are a failover only (lock servers killed:
/// a cluster's members or the single node; leaders changed) and `early`'s place was surely committed before the first of them:
/// the acknowledged grant that shows it. See the module documentation.
fn committed_before_failover<'m>(
    model: &'m Model,
    options: &Options,
    early: &Grant,
    faults: &[&FaultWindow],
) -> Option<&'m Grant> {
    let failover_only = faults.iter().all(|fault| {
        let lock_server =
            fault.target == LOCK_SERVER || fault.target.starts_with(&format!("{LOCK_SERVER}-"));
        let member_kill = lock_server && fault.kind.starts_with("kill");
        let leader_change = fault.target == "cluster" && fault.kind == "leader-change";
        member_kill || leader_change
    });
    if !failover_only {
        return None;
    }
    // A kill is recorded before the signal; a leader change the harness did not make is
    // recorded when it is noticed, up to the settle time after it began.
    let before_every_fault = faults
        .iter()
        .map(|fault| {
            let noticed_late_by = if fault.kind == "leader-change" {
                options.fault_settle
            } else {
                options.slack
            };
            fault.start.saturating_sub(noticed_late_by)
        })
        .min()?;
    model.grants.iter().find(|grant| {
        grant.invoked >= early.invoked.saturating_add(options.fifo_margin)
            && grant.completed <= before_every_fault
    })
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;

    // checks: L2
    #[test]
    fn waiters_in_order_pass_and_close_arrivals_are_not_judged() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .grant("w2", 100, 1000, "a", "w2.1", 2, 1000, 3000)
            .grant("w3", 700, 2000, "a", "w3.1", 3, 1000, 3000)
            // Started within the margin of w3: either order is fine.
            .grant("w4", 800, 1500, "a", "w4.1", 4, 1000, 3000);
        let mut h2 = H::new();
        h2.grant("w3", 1000, 3000, "a", "w3.1", 6, 1000, 3000)
            .grant("w4", 1200, 2000, "a", "w4.1", 5, 1000, 3000);
        assert!(h.violations(Rule::L2).is_empty(), "{:?}", h.check());
        assert!(h2.violations(Rule::L2).is_empty(), "{:?}", h2.check());
    }

    // checks: L2
    #[test]
    fn a_waiter_overtaken_by_a_later_one_is_reported_unless_a_fault_was_near() {
        let mut h = H::new();
        h.grant("w2", 100, 2500, "a", "w2.1", 3, 1000, 3000)
            .grant("w3", 900, 1500, "a", "w3.1", 2, 1000, 3000);
        assert_eq!(h.violations(Rule::L2).len(), 1, "{:?}", h.check());
        // The same with w2 paused while it waited: not judged.
        h.fault("w2", "pause", 200, 600);
        assert!(h.violations(Rule::L2).is_empty(), "{:?}", h.check());
    }

    /// w2 starts waiting for `a` at 100 ms; w4 is granted `b` from `proof.0` to `proof.1`;
    /// w3 starts waiting for `a` at 4500 ms and is granted it before w2.
    fn overtaken(proof: (u64, u64)) -> H {
        let mut h = H::new();
        h.grant("w2", 100, 9000, "a", "w2.1", 5, 1000, 20_000)
            .grant("w4", proof.0, proof.1, "b", "w4.1", 2, 1000, 0)
            .grant("w3", 4500, 8000, "a", "w3.1", 4, 1000, 20_000);
        h
    }

    // checks: L2
    #[test]
    fn across_a_leaders_kill_a_waiter_whose_place_was_committed_is_judged() {
        // w4's grant, sent 600 ms after w2 queued, is acknowledged long before the leader
        // is killed at 4000: w2's place was committed, and w3 overtook it.
        let mut h = overtaken((700, 800));
        h.fault("fenced-1", "kill leader", 4000, 4300).fault(
            "cluster",
            "leader-change",
            4000,
            4700,
        );
        let found = h.violations(Rule::L2);
        assert_eq!(found.len(), 1, "{:?}", h.check());
        assert!(
            found[0].message.contains("committed"),
            "{}",
            found[0].message
        );
        // The single node's kill and restart is judged alike.
        let mut h = overtaken((700, 800));
        h.fault("fenced", "kill", 4000, 4300);
        assert_eq!(h.violations(Rule::L2).len(), 1, "{:?}", h.check());
    }

    // checks: L2
    #[test]
    fn across_a_failover_a_waiter_is_not_judged_without_proof_or_with_other_faults() {
        // w4's grant was answered after the kill: no proof.
        let mut h = overtaken((700, 4100));
        h.fault("fenced-1", "kill leader", 4000, 4300);
        assert!(h.violations(Rule::L2).is_empty(), "{:?}", h.check());
        // w4's grant was sent within the FIFO margin of w2's wait: it may have come first.
        let mut h = overtaken((300, 400));
        h.fault("fenced-1", "kill leader", 4000, 4300);
        assert!(h.violations(Rule::L2).is_empty(), "{:?}", h.check());
        // A leader change the harness did not make is noticed late: a grant answered less
        // than the settle time before it was noticed may have come after it.
        let mut h = overtaken((700, 2500));
        h.fault("cluster", "leader-change", 4000, 4300);
        assert!(h.violations(Rule::L2).is_empty(), "{:?}", h.check());
        h.grant("w1", 700, 1500, "c", "w1.1", 1, 1000, 0);
        assert_eq!(h.violations(Rule::L2).len(), 1, "{:?}", h.check());
        // A paused leader, or a fault on the waiter's worker: not a failover the rule covers.
        for (target, kind) in [("fenced-1", "pause leader"), ("w2", "pause")] {
            let mut h = overtaken((700, 800));
            h.fault(target, kind, 4000, 4300);
            assert!(h.violations(Rule::L2).is_empty(), "{kind}: {:?}", h.check());
        }
    }
}
