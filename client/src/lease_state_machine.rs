//! [`LeaseStateMachine`]: the pure state machine of one lease on the client side.
//!
//! It owns no I/O and reads no clock: every event comes with `now`, so the whole of CONTRACT
//! S4 and the pause rules can be tested with a hand-made clock. The renewal task, the pause
//! watchdog and [`Lease::fence`](crate::Lease::fence) drive it through
//! [`SharedLease`](crate::shared_lease::SharedLease), which publishes its state.
//!
//! The rules, in one place:
//! - The local deadline is `sent + ttl * (1 - drift) - margin` of the latest *confirmed*
//!   request, counted from its send time ([`DeadlinePolicy::deadline`]).
//! - Held becomes Suspect when the deadline passes or a pause is reported; a late grant
//!   starts Suspect.
//! - Suspect becomes Held only on a renewal that was *sent* after the lease became suspect
//!   and whose new deadline has not passed: an answer that was already on its way before a
//!   pause confirms nothing about the time after it.
//! - The server's EXPIRED / RELEASED / UNKNOWN / INVALID, a release, or silence until
//!   [`DeadlinePolicy::surely_expired`] make the lease Lost, and nothing brings it back
//!   (CONTRACT S7).

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::DeadlinePolicy;
use crate::state::{LeaseState, LostReason, StateChange, SuspectReason};

/// How many state changes a lease remembers for [`LeaseStateMachine::history`].
const HISTORY: usize = 64;

/// The client's record of one lease.
#[derive(Debug, Clone)]
pub(crate) struct LeaseStateMachine {
    /// The TTL the server granted.
    ttl: Duration,
    /// The deadline arithmetic.
    policy: DeadlinePolicy,
    /// What the SDK believes now.
    state: LeaseState,
    /// The local deadline: after it no token is handed out.
    deadline: Duration,
    /// Send time of the latest request the server confirmed (the grant or a renewal).
    confirmed_sent: Duration,
    /// When the answer confirming `confirmed_sent` arrived. The server handled that request
    /// no later than this, so its expiry is no later than this plus the TTL: the bound for
    /// giving the lease up. (A queued grant can arrive long after its request was sent;
    /// counting from the send there would give up a lease the server has just granted.)
    confirmed_at: Duration,
    /// When the lease last became suspect; a renewal must be sent after this to clear it.
    suspect_since: Option<Duration>,
    /// When the next renewal is due.
    next_renewal: Duration,
    /// Send times of the renewals awaiting an answer on the current stream, oldest first
    /// (the server answers a stream's requests in order).
    in_flight: VecDeque<Duration>,
    /// Consecutive failed renewal attempts.
    failures: u32,
    /// The latest failure, in words.
    last_error: Option<String>,
    /// The latest state changes, oldest first.
    history: VecDeque<StateChange>,
}

impl LeaseStateMachine {
    /// The record of a grant sent at `sent` for `ttl` and answered at `now`.
    ///
    /// A queued acquire may be answered long after it was sent; if a renewal is already due
    /// by then, the lease starts suspect and asks for a renewal at once.
    pub(crate) fn granted(
        sent: Duration,
        ttl: Duration,
        now: Duration,
        policy: DeadlinePolicy,
    ) -> LeaseStateMachine {
        let renew_at = policy.renew_at(sent, ttl);
        let late = now >= renew_at;
        let state = if late {
            LeaseState::Suspect {
                reason: SuspectReason::LateGrant {
                    waited: now.saturating_sub(sent),
                },
            }
        } else {
            LeaseState::Held
        };
        let mut history = VecDeque::new();
        history.push_back(StateChange {
            at: now,
            state: state.clone(),
        });
        let mut machine = LeaseStateMachine {
            ttl,
            policy,
            state,
            deadline: policy.deadline(sent, ttl),
            confirmed_sent: sent,
            confirmed_at: now,
            suspect_since: late.then_some(now),
            next_renewal: if late { now } else { renew_at },
            in_flight: VecDeque::new(),
            failures: 0,
            last_error: None,
            history,
        };
        machine.check(now);
        machine
    }

    /// What the SDK believes now (as of the last event: call [`LeaseStateMachine::check`] first).
    pub(crate) fn state(&self) -> &LeaseState {
        &self.state
    }

    /// The granted TTL.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The local deadline.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Consecutive failed renewal attempts and the latest failure.
    pub(crate) fn failures(&self) -> (u32, Option<&str>) {
        (self.failures, self.last_error.as_deref())
    }

    /// The latest state changes, oldest first.
    pub(crate) fn history(&self) -> Vec<StateChange> {
        self.history.iter().cloned().collect()
    }

    /// Applies the passage of time: Held past the deadline becomes Suspect, and silence
    /// until the server has surely expired the lease makes it Lost.
    pub(crate) fn check(&mut self, now: Duration) {
        if self.state.is_lost() {
            return;
        }
        let gone = self.policy.surely_expired(self.confirmed_at, self.ttl);
        if now >= gone {
            self.lose(
                LostReason::ExpiredLocally {
                    silent_for: now.saturating_sub(self.confirmed_at),
                },
                now,
            );
        } else if self.state.is_held() && now >= self.deadline {
            self.suspect(SuspectReason::DeadlinePassed, now);
        }
    }

    /// The check a guarded write makes: `Ok` only while held and before the deadline.
    pub(crate) fn fence(&mut self, now: Duration) -> Result<(), LeaseState> {
        self.check(now);
        match self.state {
            LeaseState::Held => Ok(()),
            ref other => Err(other.clone()),
        }
    }

    /// Whether a renewal should be sent now: not lost, none awaiting an answer, and due.
    pub(crate) fn renewal_due(&self, now: Duration) -> bool {
        !self.state.is_lost() && self.in_flight.is_empty() && now >= self.next_renewal
    }

    /// A renewal was handed to the stream at `now`.
    pub(crate) fn on_sent(&mut self, now: Duration) {
        self.in_flight.push_back(now);
    }

    /// Whether the oldest unanswered renewal has waited longer than a renewal interval: the
    /// stream is then presumed dead and replaced (HTTP/2 keepalive may take longer).
    pub(crate) fn stuck(&self, now: Duration) -> bool {
        self.in_flight
            .front()
            .is_some_and(|&sent| now >= sent.saturating_add(self.stuck_after()))
    }

    /// How long a renewal may wait for its answer before the stream is presumed dead.
    fn stuck_after(&self) -> Duration {
        self.policy
            .renew_at(Duration::ZERO, self.ttl)
            .max(Duration::from_millis(100))
    }

    /// The server renewed the lease for `ttl` (answering the oldest renewal in flight).
    pub(crate) fn on_renewed(&mut self, ttl: Duration, now: Duration) {
        let Some(sent) = self.in_flight.pop_front() else {
            // An answer to nothing we sent on this stream: it proves nothing about when
            // the renewal was sent, so it cannot move the deadline.
            tracing::warn!("renewal answer with no renewal in flight: ignored");
            return;
        };
        if self.state.is_lost() {
            return;
        }
        self.failures = 0;
        self.last_error = None;
        if sent >= self.confirmed_sent {
            // The latest renewal the server handled sets its expiry, even if that is
            // earlier than before (a server that shortened the TTL): so the deadline is
            // this renewal's, not the later of the two.
            self.confirmed_sent = sent;
            self.confirmed_at = now;
            self.ttl = ttl;
            self.deadline = self.policy.deadline(sent, ttl);
            self.next_renewal = self.policy.renew_at(sent, ttl);
        }
        let confirms = self.suspect_since.is_none_or(|since| sent >= since);
        if !self.state.is_held() {
            if confirms && now < self.deadline {
                self.suspect_since = None;
                self.set(LeaseState::Held, now);
            } else {
                // Still in doubt: ask again at once rather than at the usual interval.
                self.next_renewal = now;
            }
        }
        self.check(now);
    }

    /// The server refused to renew: the lease is lost for good.
    pub(crate) fn on_refused(&mut self, reason: LostReason, now: Duration) {
        self.in_flight.pop_front();
        self.lose(reason, now);
    }

    /// The stream failed (or never opened): every renewal in flight is void; retry at
    /// `retry_at`.
    pub(crate) fn on_failure(&mut self, error: &str, now: Duration, retry_at: Duration) {
        let attempted = !self.in_flight.is_empty() || self.next_renewal <= now;
        self.in_flight.clear();
        if self.state.is_lost() {
            return;
        }
        if attempted {
            self.failures = self.failures.saturating_add(1);
            self.last_error = Some(error.to_string());
        }
        self.next_renewal = self.next_renewal.max(retry_at);
        self.check(now);
    }

    /// The process was paused for `paused`, noticed at `now`: whatever was true before is
    /// in doubt until a renewal sent from now on is confirmed, so renew at once.
    pub(crate) fn on_pause(&mut self, paused: Duration, now: Duration) {
        if self.state.is_lost() {
            return;
        }
        self.suspect_since = Some(now);
        self.next_renewal = now;
        if self.state.is_held() {
            self.set(
                LeaseState::Suspect {
                    reason: SuspectReason::Paused { paused },
                },
                now,
            );
        }
        self.check(now);
    }

    /// Marks the lease lost for good.
    pub(crate) fn lose(&mut self, reason: LostReason, now: Duration) {
        if !self.state.is_lost() {
            self.in_flight.clear();
            self.set(LeaseState::Lost { reason }, now);
        }
    }

    /// The next instant at which something may change without an outside event: a
    /// renewal falls due, the deadline passes, the lease is given up, or an answer is late.
    pub(crate) fn next_event(&self) -> Option<Duration> {
        if self.state.is_lost() {
            return None;
        }
        let mut next = self.policy.surely_expired(self.confirmed_at, self.ttl);
        if self.state.is_held() {
            next = next.min(self.deadline);
        }
        match self.in_flight.front() {
            Some(&sent) => next = next.min(sent.saturating_add(self.stuck_after())),
            None => next = next.min(self.next_renewal),
        }
        Some(next)
    }

    /// Makes the lease suspect for `reason`.
    fn suspect(&mut self, reason: SuspectReason, now: Duration) {
        self.suspect_since = Some(now);
        self.next_renewal = self.next_renewal.min(now);
        self.set(LeaseState::Suspect { reason }, now);
    }

    /// Changes the state and remembers the change.
    fn set(&mut self, state: LeaseState, now: Duration) {
        if self.state == state {
            return;
        }
        self.state = state.clone();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(StateChange { at: now, state });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> DeadlinePolicy {
        DeadlinePolicy {
            drift_bound: 0.05,
            safety_margin: ms(100),
            renew_fraction: 1.0 / 3.0,
        }
    }

    /// A lease granted for 3 s on a request sent at 100 s, answered 20 ms later.
    fn granted(clock: &ManualClock) -> (LeaseStateMachine, Duration) {
        let sent = clock.now();
        clock.advance(ms(20));
        (
            LeaseStateMachine::granted(sent, Duration::from_secs(3), clock.now(), policy()),
            sent,
        )
    }

    fn paused(state: &LeaseState) -> Option<Duration> {
        match state {
            LeaseState::Suspect {
                reason: SuspectReason::Paused { paused },
            } => Some(*paused),
            _ => None,
        }
    }

    // checks: S4
    #[test]
    fn deadline_counts_from_the_send_not_the_answer() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        // 3 s * 0.95 - 100 ms = 2750 ms after the send, whatever the answer's delay.
        assert_eq!(machine.deadline(), sent + ms(2_750));
        assert_eq!(machine.fence(clock.now()), Ok(()));
        clock.set(sent + ms(2_749));
        assert_eq!(machine.fence(clock.now()), Ok(()));
        clock.set(sent + ms(2_750));
        assert_eq!(
            machine.fence(clock.now()),
            Err(LeaseState::Suspect {
                reason: SuspectReason::DeadlinePassed
            })
        );
    }

    // checks: S4
    #[test]
    fn renewal_moves_the_deadline_from_its_send_time() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        assert!(!machine.renewal_due(clock.now()));
        clock.set(sent + ms(1_000));
        assert!(
            machine.renewal_due(clock.now()),
            "due at a third of the TTL"
        );
        let renew_sent = clock.now();
        machine.on_sent(renew_sent);
        assert!(
            !machine.renewal_due(clock.now()),
            "one renewal in flight at a time"
        );
        // The answer takes 1.5 s to come back: the deadline still counts from the send.
        clock.advance(ms(1_500));
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert_eq!(machine.deadline(), renew_sent + ms(2_750));
        assert_eq!(machine.state(), &LeaseState::Held);
        assert_eq!(machine.failures().0, 0);
        // A renewal granted with a shorter TTL shortens the deadline: the server's expiry
        // moved earlier too.
        clock.set(renew_sent + ms(1_000));
        let short_sent = clock.now();
        machine.on_sent(short_sent);
        machine.on_renewed(ms(500), clock.now());
        assert_eq!(machine.deadline(), short_sent + ms(375));
        assert!(machine.deadline() < renew_sent + ms(2_750));
    }

    // checks: S4 (pause rule)
    #[test]
    fn pause_makes_suspect_until_a_later_renewal_is_confirmed() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        // A renewal goes out, then the process freezes for 800 ms (less than the TTL).
        clock.set(sent + ms(1_000));
        machine.on_sent(clock.now());
        clock.advance(ms(800));
        machine.on_pause(ms(800), clock.now());
        assert_eq!(paused(machine.state()), Some(ms(800)));
        assert!(machine.fence(clock.now()).is_err());
        // The answer to the renewal sent before the pause arrives: it moves the deadline
        // but does not vouch for the time after the pause.
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert_eq!(paused(machine.state()), Some(ms(800)));
        assert!(
            machine.renewal_due(clock.now()),
            "a confirming renewal is due at once"
        );
        // A renewal sent after the pause is confirmed: held again.
        machine.on_sent(clock.now());
        clock.advance(ms(30));
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert_eq!(machine.state(), &LeaseState::Held);
        assert_eq!(machine.fence(clock.now()), Ok(()));
        let states: Vec<_> = machine.history().into_iter().map(|c| c.state).collect();
        assert_eq!(states.len(), 3, "{states:?}");
        assert!(paused(&states[1]).is_some());
    }

    // checks: S4, S7
    #[test]
    fn suspect_after_the_deadline_and_lost_when_the_server_has_surely_expired() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        // Every renewal attempt fails (a partition).
        clock.set(sent + ms(1_000));
        machine.on_sent(clock.now());
        machine.on_failure("connection reset", clock.now(), clock.now() + ms(50));
        assert_eq!(machine.failures(), (1, Some("connection reset")));
        assert_eq!(
            machine.state(),
            &LeaseState::Held,
            "still before the deadline"
        );
        clock.set(sent + ms(2_750));
        machine.check(clock.now());
        assert_eq!(
            machine.state(),
            &LeaseState::Suspect {
                reason: SuspectReason::DeadlinePassed
            }
        );
        // 3 s * 1.05 + 100 ms after the grant's answer arrived (20 ms after the send) the
        // server has surely expired it: it handled the grant no later than that arrival.
        clock.set(sent + ms(3_269));
        machine.check(clock.now());
        assert!(!machine.state().is_lost());
        clock.set(sent + ms(3_270));
        machine.check(clock.now());
        assert!(machine.state().is_lost(), "{:?}", machine.state());
        assert!(
            !machine.renewal_due(clock.now()),
            "a lost lease is not renewed"
        );
        assert_eq!(machine.next_event(), None);
    }

    // checks: S7
    #[test]
    fn lost_after_the_server_says_expired_and_nothing_revives_it() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        clock.set(sent + ms(1_000));
        machine.on_sent(clock.now());
        clock.advance(ms(10));
        let expired = LostReason::Expired {
            message: "lease expired".into(),
        };
        machine.on_refused(expired.clone(), clock.now());
        assert_eq!(machine.state(), &LeaseState::Lost { reason: expired });
        assert!(
            machine.fence(clock.now()).is_err(),
            "well before the deadline"
        );
        // A stray RENEWED (say, from an older stream) changes nothing.
        machine.on_sent(clock.now());
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert!(machine.state().is_lost());
        machine.on_pause(ms(900), clock.now());
        assert!(machine.state().is_lost());
    }

    // checks: S4
    #[test]
    fn a_late_grant_is_confirmed_before_its_token_is_used() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let sent = clock.now();
        // Queued for 2 s of a 3 s TTL.
        clock.advance(ms(2_000));
        let mut machine =
            LeaseStateMachine::granted(sent, Duration::from_secs(3), clock.now(), policy());
        assert_eq!(
            machine.fence(clock.now()),
            Err(LeaseState::Suspect {
                reason: SuspectReason::LateGrant { waited: ms(2_000) }
            })
        );
        assert!(machine.renewal_due(clock.now()));
        let renew_sent = clock.now();
        machine.on_sent(renew_sent);
        clock.advance(ms(5));
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert_eq!(machine.fence(clock.now()), Ok(()));
        assert_eq!(machine.deadline(), renew_sent + ms(2_750));
        // Granted after the deadline had passed already: suspect too, never held.
        let clock = ManualClock::new(Duration::from_secs(100));
        let sent = clock.now();
        clock.advance(ms(2_900));
        let mut machine =
            LeaseStateMachine::granted(sent, Duration::from_secs(3), clock.now(), policy());
        assert!(machine.fence(clock.now()).is_err());
        // A grant that waited longer than a whole TTL (the server counts the TTL from the
        // grant) is suspect, not lost: it is not given up before its confirming renewal
        // had a chance.
        let clock = ManualClock::new(Duration::from_secs(100));
        let sent = clock.now();
        clock.advance(ms(4_000));
        let mut machine =
            LeaseStateMachine::granted(sent, Duration::from_secs(3), clock.now(), policy());
        clock.advance(ms(50));
        machine.check(clock.now());
        assert!(
            matches!(machine.state(), LeaseState::Suspect { .. }),
            "{:?}",
            machine.state()
        );
        let renew_sent = clock.now();
        machine.on_sent(renew_sent);
        clock.advance(ms(5));
        machine.on_renewed(Duration::from_secs(3), clock.now());
        assert_eq!(machine.fence(clock.now()), Ok(()));
    }

    #[test]
    fn next_event_is_the_earliest_of_renewal_deadline_and_stuck_answer() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let (mut machine, sent) = granted(&clock);
        assert_eq!(machine.next_event(), Some(sent + ms(1_000)));
        clock.set(sent + ms(1_000));
        machine.on_sent(clock.now());
        assert_eq!(machine.next_event(), Some(sent + ms(2_000)));
        assert!(!machine.stuck(sent + ms(1_999)));
        assert!(machine.stuck(sent + ms(2_000)));
    }
}
