//! S7: a lost lease stays lost. Once the SDK reported a lease lost (the server said it
//! expired or was released, or it surely expired), nothing revives it: no state `held`
//! after it, no confirmed renewal sent after it, no token from `fence()` after it.

use super::model::{Model, StateChange};
use super::{secs, OpRef, Options, Rule, Violation};
use crate::history::SdkState;

/// Reports leases that came back after they were lost.
pub fn check(model: &Model, options: &Options, out: &mut Vec<Violation>) {
    for grant in &model.grants {
        let Some(states) = model.states.get(&grant.lease) else {
            continue;
        };
        let mut states: Vec<&StateChange> = states.iter().collect();
        states.sort_by_key(|s| s.at);
        let Some(lost) = states.iter().find(|s| s.state == SdkState::Lost) else {
            continue;
        };
        let after = lost.at.saturating_add(options.slack);
        let lost_words = format!(
            "{} (token {}) was reported lost at {} ({})",
            grant.lease,
            grant.token,
            secs(lost.at),
            lost.detail
        );
        if let Some(revived) = states
            .iter()
            .find(|s| s.state == SdkState::Held && s.at > after)
        {
            out.push(Violation {
                rule: Rule::S7,
                at: revived.at,
                message: format!("{lost_words}, and held again at {}", secs(revived.at)),
                ops: vec![OpRef::of(model.op(grant.op))],
            });
        }
        if let Some(renewal) = model
            .renewals
            .get(&grant.lease)
            .and_then(|r| r.iter().find(|r| r.sent > after))
        {
            out.push(Violation {
                rule: Rule::S7,
                at: renewal.seen,
                message: format!(
                    "{lost_words}, and a renewal sent at {} was confirmed",
                    secs(renewal.sent)
                ),
                ops: vec![OpRef::of(model.op(grant.op))],
            });
        }
        if let Some(&(at, fence)) = grant.fences.iter().find(|(at, _)| *at > after) {
            out.push(Violation {
                rule: Rule::S7,
                at,
                message: format!(
                    "{lost_words}, and fence() handed out its token at {}",
                    secs(at)
                ),
                ops: vec![OpRef::of(model.op(grant.op)), OpRef::of(model.op(fence))],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;
    use crate::history::SdkState;

    // checks: S7
    #[test]
    fn suspect_and_held_again_before_the_loss_is_fine() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .state("w1", 10, "w1.1", SdkState::Held)
            .state("w1", 400, "w1.1", SdkState::Suspect)
            .renewed("w1", 450, "w1.1", 420, 1000)
            .state("w1", 450, "w1.1", SdkState::Held)
            .fence("w1", 500, "w1.1", 1)
            .state("w1", 900, "w1.1", SdkState::Lost);
        assert!(h.violations(Rule::S7).is_empty(), "{:?}", h.check());
    }

    // checks: S7
    #[test]
    fn a_lease_held_renewed_or_fenced_after_its_loss_is_reported() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .state("w1", 10, "w1.1", SdkState::Held)
            .state("w1", 400, "w1.1", SdkState::Lost)
            .renewed("w1", 520, "w1.1", 500, 1000)
            .state("w1", 520, "w1.1", SdkState::Held)
            .fence("w1", 600, "w1.1", 1);
        let found = h.violations(Rule::S7);
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
