//! The pause watchdog: [`Pulse`], a heartbeat that any code path can take, and the thread
//! that beats it.
//!
//! A process can stop running without knowing it: a stop-the-world GC, a VM descheduled by
//! its host, `SIGSTOP`, a suspended laptop. Afterwards every belief about time-limited
//! things is stale. The watchdog thread sleeps [`Config::watchdog_period`] and beats the
//! pulse; a gap between beats longer than [`Config::pause_threshold`] is a pause.
//!
//! When a stopped process is continued, *any* of its threads may run first, including the
//! one about to make a guarded write. So [`Lease::fence`](crate::Lease::fence) beats the
//! pulse itself before it looks at the lease: whoever runs first after a pause sees the gap
//! and reports it, exactly once (the beat is one atomic swap). The watchdog is a plain OS
//! thread rather than a tokio task so that a busy runtime does not look like a pause, and
//! a pause is still noticed while the runtime's workers are all blocked.
//!
//! [`Config::watchdog_period`]: crate::Config::watchdog_period
//! [`Config::pause_threshold`]: crate::Config::pause_threshold

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use crate::clock::as_nanos;
use crate::shared::Shared;

/// The time of the last heartbeat, and what counts as a pause.
#[derive(Debug)]
pub(crate) struct Pulse {
    /// The last beat, in nanoseconds on the SDK's clock.
    last: AtomicU64,
    /// A gap longer than this is a pause.
    threshold: Duration,
}

impl Pulse {
    /// A pulse that last beat at `now`.
    pub(crate) fn new(now: Duration, threshold: Duration) -> Self {
        Pulse {
            last: AtomicU64::new(as_nanos(now)),
            threshold,
        }
    }

    /// Beats at `now`; returns the gap since the previous beat if it was a pause. Of two
    /// threads beating at once after a pause, exactly one gets the gap.
    pub(crate) fn beat(&self, now: Duration) -> Option<Duration> {
        let now = as_nanos(now);
        let previous = self.last.fetch_max(now, Ordering::AcqRel);
        let gap = Duration::from_nanos(now.saturating_sub(previous));
        (gap > self.threshold).then_some(gap)
    }
}

/// Starts the watchdog thread. It holds only a weak reference, and ends once the client is
/// closed or gone.
pub(crate) fn spawn(shared: Weak<Shared>, period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("fenced-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.closed.is_cancelled() {
                return;
            }
            shared.heartbeat(shared.now());
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_gap_over_the_threshold_is_a_pause_reported_once() {
        let pulse = Pulse::new(ms(1_000), ms(500));
        assert_eq!(pulse.beat(ms(1_050)), None);
        assert_eq!(
            pulse.beat(ms(1_550)),
            None,
            "exactly the threshold is no pause"
        );
        assert_eq!(pulse.beat(ms(3_000)), Some(ms(1_450)));
        assert_eq!(
            pulse.beat(ms(3_000)),
            None,
            "the second observer sees no gap"
        );
        // A reader whose clock reading is older than the last beat sees no gap at all.
        assert_eq!(pulse.beat(ms(2_900)), None);
    }
}
