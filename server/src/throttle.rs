//! [`Throttle`]: a warning that a client can trigger at will (a connection refused at the
//! cap, a handshake that fails), logged at most once per interval with a count of those
//! held back, so that a flood of them cannot flood the log too.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets an event through at most once per interval and counts the ones it holds back.
#[derive(Debug)]
pub struct Throttle {
    /// The shortest time between two events let through.
    interval: Duration,
    /// When an event was last let through, and how many were held back since.
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    /// When an event was last let through.
    last: Option<Instant>,
    /// Events held back since then.
    held_back: u64,
}

impl Throttle {
    /// A throttle that lets one event through per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// Whether to log the event that happens at `now`: `Some(held_back)` (how many were
    /// held back since the last one let through) at most once per interval, else `None`.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting: the count is
        // still a count.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.held_back = state.held_back.saturating_add(1);
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_goes_through_with_the_count_of_those_held_back() {
        let throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        assert_eq!(throttle.admit(start + Duration::from_millis(10)), None);
        assert_eq!(throttle.admit(start + Duration::from_millis(999)), None);
        assert_eq!(throttle.admit(start + Duration::from_secs(1)), Some(2));
        assert_eq!(throttle.admit(start + Duration::from_millis(1500)), None);
        assert_eq!(throttle.admit(start + Duration::from_secs(5)), Some(1));
    }
}
