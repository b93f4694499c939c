//! S3 and S4: for each lock, the intervals from a grant to its holder's last successful
//! `fence()` never overlap between holders.
//!
//! If lease B of a lock was granted after lease A, and A's holder got its token from
//! `fence()` after B's grant was answered, then at that instant either the server had two
//! unexpired leases on the lock (S3) or the SDK's local deadline was later than the
//! server's expiry (S4). The history cannot tell which, so the violation names both.

use std::collections::HashMap;

use super::model::{Grant, Model};
use super::{granted_before, secs, OpRef, Options, Rule, Violation};

/// Reports holders that still got their token after the next holder's grant.
pub fn check(model: &Model, options: &Options, out: &mut Vec<Violation>) {
    let mut by_lock: HashMap<&str, Vec<&Grant>> = HashMap::new();
    for grant in &model.grants {
        by_lock.entry(grant.lock.as_str()).or_default().push(grant);
    }
    for grants in by_lock.values() {
        for first in grants {
            for second in grants {
                if first.lease == second.lease || !granted_before(first, second) {
                    continue;
                }
                let late = first
                    .fences
                    .iter()
                    .find(|(at, _)| *at > second.completed.saturating_add(options.slack));
                if let Some(&(at, fence)) = late {
                    out.push(Violation {
                        rule: Rule::S3S4,
                        at,
                        message: format!(
                            "{} held {} (token {}) by its fence() at {}, after {} (token {}) \
                             was granted the same lock by {}",
                            first.lease,
                            first.lock,
                            first.token,
                            secs(at),
                            second.lease,
                            second.token,
                            secs(second.completed)
                        ),
                        ops: vec![
                            OpRef::of(model.op(first.op)),
                            OpRef::of(model.op(second.op)),
                            OpRef::of(model.op(fence)),
                        ],
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;

    // checks: S3, S4
    #[test]
    fn holders_one_after_the_other_pass() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .fence("w1", 100, "w1.1", 1)
            .fence("w1", 800, "w1.1", 1)
            .grant("w2", 50, 1000, "a", "w2.1", 2, 1000, 2000)
            .fence("w2", 1010, "w2.1", 2)
            // Another lock is another story.
            .grant("w3", 500, 510, "b", "w3.1", 3, 1000, 0)
            .fence("w3", 900, "w3.1", 3);
        assert!(h.violations(Rule::S3S4).is_empty(), "{:?}", h.check());
    }

    // checks: S3, S4
    #[test]
    fn a_fence_after_the_next_grant_is_reported_with_the_three_operations() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .fence("w1", 100, "w1.1", 1)
            .grant("w2", 50, 600, "a", "w2.1", 2, 1000, 2000)
            .fence("w1", 700, "w1.1", 1);
        let found = h.violations(Rule::S3S4);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].ops.len(), 3);
    }

    // checks: S3, S4
    #[test]
    fn overlapping_acquires_are_ordered_by_token() {
        // Both requests overlap; token 2 came second, so w1 (token 1) must stop fencing
        // once token 2 was answered.
        let mut h = H::new();
        h.grant("w1", 0, 30, "a", "w1.1", 1, 1000, 0)
            .grant("w2", 10, 20, "a", "w2.1", 2, 1000, 0)
            .fence("w1", 40, "w1.1", 1);
        assert_eq!(h.violations(Rule::S3S4).len(), 1, "{:?}", h.check());
    }
}
