//! S1: every acknowledged token is unique, and above every token acknowledged before its
//! request was sent (across locks: the server has one counter).

use std::collections::HashMap;

use super::model::Model;
use super::{secs, OpRef, Rule, Violation};

/// Reports repeated tokens and tokens that did not go up.
pub fn check(model: &Model, out: &mut Vec<Violation>) {
    let grants = &model.grants;
    let mut first: HashMap<u64, usize> = HashMap::new();
    for (index, grant) in grants.iter().enumerate() {
        if let Some(&earlier) = first.get(&grant.token) {
            let other = &grants[earlier];
            out.push(Violation {
                rule: Rule::S1,
                at: grant.completed.max(other.completed),
                message: format!(
                    "token {} was acknowledged twice: to {} on {} and to {} on {}",
                    grant.token, other.lease, other.lock, grant.lease, grant.lock
                ),
                ops: vec![OpRef::of(model.op(other.op)), OpRef::of(model.op(grant.op))],
            });
        } else {
            first.insert(grant.token, index);
        }
    }

    // Sweep the grants in order of their requests, keeping the highest token among those
    // answered before the current request was sent.
    let mut by_completion: Vec<usize> = (0..grants.len()).collect();
    by_completion.sort_by_key(|&i| grants[i].completed);
    let mut answered = by_completion.into_iter().peekable();
    let mut highest: Option<usize> = None;
    for grant in grants {
        while let Some(&i) = answered.peek() {
            if grants[i].completed >= grant.invoked {
                break;
            }
            if highest.is_none_or(|h| grants[i].token > grants[h].token) {
                highest = Some(i);
            }
            answered.next();
        }
        if let Some(h) = highest {
            let before = &grants[h];
            if before.token > grant.token {
                out.push(Violation {
                    rule: Rule::S1,
                    at: grant.completed,
                    message: format!(
                        "token {} ({} on {}) was acknowledged after token {} ({} on {}) had \
                         been acknowledged at {}, before the request for {} was sent at {}",
                        grant.token,
                        grant.lease,
                        grant.lock,
                        before.token,
                        before.lease,
                        before.lock,
                        secs(before.completed),
                        grant.token,
                        secs(grant.invoked)
                    ),
                    ops: vec![
                        OpRef::of(model.op(before.op)),
                        OpRef::of(model.op(grant.op)),
                    ],
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;

    // checks: S1
    #[test]
    fn increasing_tokens_pass_and_overlapping_requests_may_come_in_any_order() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 5, 1000, 0)
            .grant("w2", 20, 30, "b", "w2.1", 6, 1000, 0)
            // Overlapping requests: either order of tokens is fine.
            .grant("w1", 40, 60, "a", "w1.2", 8, 1000, 0)
            .grant("w2", 45, 55, "b", "w2.2", 7, 1000, 0);
        assert!(h.violations(Rule::S1).is_empty(), "{:?}", h.check());
    }

    // checks: S1
    #[test]
    fn a_token_that_goes_back_is_reported_with_both_grants() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 9, 1000, 0)
            .grant("w2", 20, 30, "b", "w2.1", 4, 1000, 0);
        let found = h.violations(Rule::S1);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].ops.len(), 2);
        assert!(found[0].message.contains("token 4"), "{}", found[0].message);
    }

    // checks: S1
    #[test]
    fn a_token_issued_twice_is_reported_even_when_the_requests_overlap() {
        let mut h = H::new();
        h.grant("w1", 0, 50, "a", "w1.1", 9, 1000, 0)
            .grant("w2", 10, 40, "b", "w2.1", 9, 1000, 0);
        let found = h.violations(Rule::S1);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("twice"));
    }
}
