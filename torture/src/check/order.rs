//! L2: waiters are granted in arrival order. Of two waiting acquires of one lock that were
//! both granted, the one that started waiting at least [`Options::fifo_margin`] earlier
//! must get the lower token (the server hands tokens out in grant order).
//!
//! Only waits far from any fault are compared: a fault can delay a request on its way (a
//! paused worker, a slow link) or empty the queue (a restart), and a liveness rule is
//! promised only "when the network and processes behave".

use std::collections::HashMap;

use super::model::{Grant, Model};
use super::{secs, OpRef, Options, Rule, Violation};
use crate::history::Nanos;

/// Reports a waiter overtaken by one that came later.
pub fn check(model: &Model, options: &Options, out: &mut Vec<Violation>) {
    let quiet = |from: Nanos, to: Nanos| {
        model.faults.iter().all(|fault| {
            let end = fault
                .end
                .map_or(Nanos::MAX, |e| e.saturating_add(options.fault_settle));
            end < from || fault.start > to
        })
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
                if !quiet(early.invoked, early.completed.max(late.completed)) {
                    continue;
                }
                out.push(Violation {
                    rule: Rule::L2,
                    at: late.completed,
                    message: format!(
                        "{} started waiting for {} at {}, {} ms before {} did, but {} was \
                         granted first (token {} < {})",
                        early.lease,
                        early.lock,
                        secs(early.invoked),
                        (late.invoked - early.invoked) / 1_000_000,
                        late.lease,
                        late.lease,
                        late.token,
                        early.token
                    ),
                    ops: vec![OpRef::of(model.op(early.op)), OpRef::of(model.op(late.op))],
                });
            }
        }
    }
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
}
