//! [`KillPlan`]: when to SIGTERM and when to SIGKILL a child whose lease is in trouble,
//! from the lease's standing and the time left until its local deadline. Pure: it reads
//! no clock, so every rule is tested with hand-made times. The rules are in the crate
//! documentation (`When the child is stopped`).

use std::time::Duration;

use crate::error::Error;

/// The thresholds, for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillPlan {
    /// SIGKILL when this little is left until the local deadline.
    pub kill_before: Duration,
    /// SIGKILL this long after the SIGTERM at the latest; SIGTERM when
    /// `kill_before + term_grace` is left.
    pub term_grace: Duration,
    /// SIGTERM when the lease has been suspect this long.
    pub suspect_grace: Duration,
    /// How often the supervisor looks at the lease.
    pub check_every: Duration,
}

/// Settings given on the command line; `None` takes the default (a sixth of the usable TTL).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// `--kill-before`.
    pub kill_before: Option<Duration>,
    /// `--term-grace`.
    pub term_grace: Option<Duration>,
    /// `--suspect-grace`.
    pub suspect_grace: Option<Duration>,
}

/// What the supervisor sees of the lease at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Held: the server confirmed it and the local deadline has not passed.
    Held,
    /// Suspect for this long so far.
    Suspect {
        /// How long it has been suspect.
        for_: Duration,
    },
    /// Lost for good.
    Lost,
}

/// What to do to the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Wait,
    /// SIGTERM to its process group.
    Terminate,
    /// SIGKILL to its process group.
    Kill,
}

impl KillPlan {
    /// The plan for a lease of `ttl` of which `usable` may be used (the SDK's
    /// `DeadlinePolicy::usable`), renewed every `ttl * renew_fraction`. Refuses thresholds
    /// that a healthy lease would reach, or that leave nothing.
    pub fn new(
        ttl: Duration,
        usable: Duration,
        renew_fraction: f64,
        overrides: Overrides,
    ) -> Result<KillPlan, Error> {
        let sixth = usable / 6;
        let plan = KillPlan {
            kill_before: overrides.kill_before.unwrap_or(sixth),
            term_grace: overrides.term_grace.unwrap_or(sixth),
            suspect_grace: overrides.suspect_grace.unwrap_or(sixth),
            check_every: (usable / 40).clamp(Duration::from_millis(5), Duration::from_millis(50)),
        };
        if plan.kill_before < plan.check_every {
            return Err(Error::Settings(format!(
                "--kill-before {:?} is shorter than how often the lease is checked ({:?}): the SIGKILL could land after the local deadline",
                plan.kill_before, plan.check_every
            )));
        }
        // The least time a healthy lease has left: just before a renewal sent at
        // `ttl * renew_fraction` is confirmed.
        let healthy_least = usable.saturating_sub(ttl.mul_f64(renew_fraction.clamp(0.0, 1.0)));
        let term_at = plan.kill_before.saturating_add(plan.term_grace);
        if term_at >= healthy_least {
            return Err(Error::Settings(format!(
                "--kill-before {:?} plus --term-grace {:?} is not below {:?}, the least time a healthy lease of ttl {:?} has left: children of healthy leases would be stopped",
                plan.kill_before, plan.term_grace, healthy_least, ttl
            )));
        }
        Ok(plan)
    }

    /// What to do now, given the lease's standing, the time left until its local deadline,
    /// and how long ago the SIGTERM went out (`None`: not sent).
    pub fn decide(
        &self,
        standing: Standing,
        remaining: Duration,
        terminated_for: Option<Duration>,
    ) -> Action {
        if standing == Standing::Lost || remaining <= self.kill_before {
            return Action::Kill;
        }
        if let Some(since) = terminated_for {
            return if since >= self.term_grace {
                Action::Kill
            } else {
                Action::Wait
            };
        }
        if remaining <= self.kill_before.saturating_add(self.term_grace) {
            return Action::Terminate;
        }
        match standing {
            Standing::Suspect { for_ } if for_ >= self.suspect_grace => Action::Terminate,
            _ => Action::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A 10 s lease with the SDK's defaults: 9.85 s usable, renewed every 3.33 s.
    fn plan() -> KillPlan {
        KillPlan::new(ms(10_000), ms(9_850), 1.0 / 3.0, Overrides::default()).unwrap()
    }

    // checks: S4 (the SIGKILL lands before the local deadline)
    #[test]
    fn defaults_are_a_sixth_of_the_usable_ttl() {
        let plan = plan();
        assert_eq!(plan.kill_before, ms(9_850) / 6);
        assert_eq!(plan.term_grace, ms(9_850) / 6);
        assert_eq!(plan.suspect_grace, ms(9_850) / 6);
        assert_eq!(plan.check_every, ms(50));
    }

    // checks: S4
    #[test]
    fn a_healthy_lease_is_left_alone() {
        let plan = plan();
        // Just before a renewal is confirmed: 9.85 - 3.33 s left, the least it gets.
        assert_eq!(plan.decide(Standing::Held, ms(6_500), None), Action::Wait);
        assert_eq!(plan.decide(Standing::Held, ms(9_850), None), Action::Wait);
        // A pause that the next renewal confirms quickly.
        let brief = Standing::Suspect { for_: ms(200) };
        assert_eq!(plan.decide(brief, ms(9_000), None), Action::Wait);
    }

    // checks: S4
    #[test]
    fn time_running_out_terminates_then_kills_before_the_deadline() {
        let plan = plan();
        let term_at = plan.kill_before + plan.term_grace;
        assert_eq!(
            plan.decide(Standing::Held, term_at + ms(1), None),
            Action::Wait
        );
        assert_eq!(
            plan.decide(Standing::Held, term_at, None),
            Action::Terminate
        );
        // After the SIGTERM, wait for the grace ...
        assert_eq!(
            plan.decide(Standing::Held, plan.kill_before + ms(1), Some(ms(10))),
            Action::Wait
        );
        // ... but never past kill_before before the deadline.
        assert_eq!(
            plan.decide(Standing::Held, plan.kill_before, Some(ms(10))),
            Action::Kill
        );
        assert_eq!(
            plan.decide(Standing::Held, plan.kill_before, None),
            Action::Kill
        );
        assert!(plan.kill_before > Duration::ZERO);
    }

    // checks: S4, S7
    #[test]
    fn a_lost_lease_kills_at_once_and_a_long_suspicion_terminates() {
        let plan = plan();
        assert_eq!(plan.decide(Standing::Lost, ms(9_000), None), Action::Kill);
        let long = Standing::Suspect {
            for_: plan.suspect_grace,
        };
        assert_eq!(plan.decide(long, ms(9_000), None), Action::Terminate);
        assert_eq!(
            plan.decide(long, ms(9_000), Some(plan.term_grace)),
            Action::Kill
        );
    }

    #[test]
    fn thresholds_a_healthy_lease_reaches_are_refused() {
        let too_late = Overrides {
            kill_before: Some(ms(4_000)),
            term_grace: Some(ms(3_000)),
            ..Overrides::default()
        };
        assert!(KillPlan::new(ms(10_000), ms(9_850), 1.0 / 3.0, too_late).is_err());
        let too_tight = Overrides {
            kill_before: Some(ms(1)),
            ..Overrides::default()
        };
        assert!(KillPlan::new(ms(10_000), ms(9_850), 1.0 / 3.0, too_tight).is_err());
    }
}
