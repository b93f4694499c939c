//! [`Clock`]: where the SDK reads the time, and the two clocks it ships.
//!
//! Every deadline in the SDK is a [`Duration`] since an arbitrary, fixed origin, read from one
//! [`Clock`]. The production clock is [`BootClock`] (`CLOCK_BOOTTIME`): unlike
//! `std::time::Instant` (`CLOCK_MONOTONIC` on Linux) it keeps counting while the machine is
//! suspended, so a laptop lid closed for an hour cannot make a lease look younger than it is
//! (CONTRACT S4). [`ManualClock`] is a hand-made clock for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// A source of the current time, as a duration since a fixed origin.
///
/// It must never go backwards and must keep counting while the process is paused or the
/// machine is suspended: the SDK's safety argument (CONTRACT S4) rests on that.
pub trait Clock: Send + Sync + 'static {
    /// The current time since this clock's origin.
    fn now(&self) -> Duration;
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now: {:?})", self.now())
    }
}

/// `CLOCK_BOOTTIME`: time since boot, including time spent suspended.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootClock;

impl Clock for BootClock {
    fn now(&self) -> Duration {
        let ts = clock_gettime(ClockId::Boottime);
        // The kernel never reports negative boot time; clamp rather than trust a cast.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
        Duration::new(secs, nanos)
    }
}

/// A clock that moves only when told to: for tests of time-dependent logic.
///
/// Clones share one time, so a test keeps a clone and advances the clock the SDK reads.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    /// Nanoseconds since the origin.
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Duration) -> Self {
        let clock = ManualClock::default();
        clock.set(start);
        clock
    }

    /// Moves the clock forward by `by`, stopping at the end of its range (584 years)
    /// rather than wrapping around to the past.
    pub fn advance(&self, by: Duration) {
        let by = as_nanos(by);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |nanos| {
                Some(nanos.saturating_add(by))
            });
    }

    /// Sets the clock to `to`. Going backwards is refused (the trait forbids it): the clock
    /// then stays where it is.
    pub fn set(&self, to: Duration) {
        self.nanos.fetch_max(as_nanos(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn as_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward() {
        let clock = BootClock;
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        let b = clock.now();
        assert!(b >= a + Duration::from_millis(5), "{a:?} then {b:?}");
    }

    #[test]
    fn manual_clock_moves_only_forward_and_when_told() {
        let clock = ManualClock::new(Duration::from_secs(10));
        let view = clock.clone();
        assert_eq!(view.now(), Duration::from_secs(10));
        clock.advance(Duration::from_millis(250));
        assert_eq!(view.now(), Duration::from_millis(10_250));
        clock.set(Duration::from_secs(1));
        assert_eq!(view.now(), Duration::from_millis(10_250));
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping_around() {
        let clock = ManualClock::new(Duration::from_secs(10));
        clock.advance(Duration::MAX);
        let end = clock.now();
        assert!(end > Duration::from_secs(10), "went back to {end:?}");
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), end);
    }
}
