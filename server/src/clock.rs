//! The server's notion of time: a monotonic [`Timestamp`] that the lock table takes as an
//! argument, and the [`Clock`] that reads it at the edge.
//!
//! The lock table never reads a clock itself (STYLE point 1): every command carries the
//! time it is applied at, so tests drive time by hand and a replicated log can later carry
//! the leader's time to every node.

use std::ops::Add;
use std::time::Duration;

/// A point on the server's monotonic clock: the time elapsed since the clock's origin.
///
/// Monotonic means leases do not care about wall-clock jumps (NTP steps, a wrong date);
/// the price is that the server cannot know how long it was down, which is why recovery
/// restores every lease with its full TTL (CONTRACT S2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(Duration::ZERO);

    /// A timestamp this long after the origin (for tests and hand-made clocks).
    pub fn from_millis(ms: u64) -> Timestamp {
        Timestamp(Duration::from_millis(ms))
    }

    /// How long after `earlier` this is, or zero if it is not after it.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs))
    }
}

/// Reads the server's monotonic clock: tokio's `Instant`, so `tokio::time::pause` drives it
/// in tests, measured from when the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The instant that is [`Timestamp::ZERO`].
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Clock {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.origin.elapsed())
    }

    /// The tokio instant of a timestamp, for sleeping until it.
    pub fn instant_of(&self, at: Timestamp) -> tokio::time::Instant {
        self.origin + at.0
    }
}
