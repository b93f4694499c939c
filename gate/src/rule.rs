//! The rule itself, in one place: given a resource's mark and a presented token, admit or
//! refuse. Every backend calls [`Admission::decide`] inside its atomic step, so the rule
//! cannot drift between backends.

use fenced_types::FencingToken;

/// How a gate admits writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// The gate is on (CONTRACT S5): a token below the mark is refused. The default, and the
    /// only mode for data anyone cares about.
    #[default]
    Fenced,
    /// The gate is OFF: every write is accepted, tokens are still recorded (the mark still
    /// rises to the highest token seen, values still carry their writer's token). It exists
    /// to show what fencing prevents (the zombie demo's counterfactual run), nothing else.
    Unfenced,
}

/// The outcome of the rule for one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Apply the write and set the resource's mark to `new_mark`.
    Admit {
        /// The mark after the write.
        new_mark: FencingToken,
    },
    /// Refuse the write: the token is below `current`.
    Refuse {
        /// The resource's mark.
        current: FencingToken,
    },
}

impl Admission {
    /// Decides one write. `mark` is `None` for a resource that has never seen a token.
    ///
    /// A token equal to the mark is admitted: it is the same holder writing again.
    pub fn decide(self, mark: Option<FencingToken>, token: FencingToken) -> Decision {
        match (self, mark) {
            (Admission::Fenced, Some(current)) if token < current => Decision::Refuse { current },
            (_, Some(current)) => Decision::Admit {
                new_mark: current.max(token),
            },
            (_, None) => Decision::Admit { new_mark: token },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: u64) -> FencingToken {
        FencingToken::new(v).unwrap()
    }

    // checks: S5
    #[test]
    fn fenced_refuses_below_the_mark_only() {
        let fenced = Admission::Fenced;
        assert_eq!(
            fenced.decide(None, t(5)),
            Decision::Admit { new_mark: t(5) }
        );
        assert_eq!(
            fenced.decide(Some(t(5)), t(5)),
            Decision::Admit { new_mark: t(5) }
        );
        assert_eq!(
            fenced.decide(Some(t(5)), t(6)),
            Decision::Admit { new_mark: t(6) }
        );
        assert_eq!(
            fenced.decide(Some(t(5)), t(4)),
            Decision::Refuse { current: t(5) }
        );
    }

    #[test]
    fn unfenced_admits_everything_and_keeps_the_highest_mark() {
        let off = Admission::Unfenced;
        assert_eq!(
            off.decide(Some(t(5)), t(4)),
            Decision::Admit { new_mark: t(5) }
        );
        assert_eq!(
            off.decide(Some(t(5)), t(9)),
            Decision::Admit { new_mark: t(9) }
        );
    }
}
