//! The workloads, one file each, written once against [`crate::driver`]'s traits.
//!
//! # Layout
//! - [`cycle`]: acquire then release, each client on its own lock.
//! - [`contended`]: every client queued on one lock; order and exclusion checked.
//! - [`expiry`]: a holder stops renewing; time from its expiry to the waiter's grant.
//! - [`keepalive`]: many leases renewed at TTL/3 over KeepAlive streams; server CPU and
//!   memory.
//! - [`serial`]: the serial limit of a durable handoff (one fdatasync + one round trip).

pub mod contended;
pub mod cycle;
pub mod expiry;
pub mod keepalive;
pub mod serial;

use std::time::{Duration, Instant};

use futures::future::try_join_all;

use crate::driver::LockSystem;
use crate::error::BenchError;

/// When a phase counts: after its warmup, until its end.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Events before this are warmup.
    pub measure_from: Instant,
    /// No new operation starts after this.
    pub end: Instant,
}

impl Window {
    /// A window that opens `warmup` from now and lasts `duration`.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Window {
        let measure_from = Instant::now() + warmup;
        Window {
            measure_from,
            end: measure_from + duration,
        }
    }

    /// Whether `at` falls in the measured part.
    pub fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at <= self.end
    }

    /// The measured part's length.
    pub fn length(&self) -> Duration {
        self.end.saturating_duration_since(self.measure_from)
    }

    /// Whether the phase is over.
    pub fn is_over(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Failed operations of a phase: how many, and the first one's words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    /// How many operations failed.
    pub count: u64,
    /// The first failure.
    pub first: Option<String>,
}

impl Errors {
    /// Counts one failure.
    pub fn add(&mut self, error: &BenchError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(error.to_string());
        }
    }

    /// Adds another task's failures.
    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// After a failed operation a client pauses this long, so a broken server is not hammered.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Opens `count` clients at once, each on its own connection.
pub async fn connect_all<S: LockSystem>(
    system: &S,
    count: usize,
    ttl: Duration,
) -> Result<Vec<S::Client>, BenchError> {
    try_join_all((0..count).map(|_| system.connect(ttl))).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::fake::FakeSystem;
    use crate::workloads::expiry::Expiries;

    fn quick() -> Config {
        Config {
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            expiry_ttl: Duration::from_millis(100),
            expiry_offset_max: Duration::from_millis(20),
            // The fake queues in arrival order; only an OS preemption between a client's
            // timestamp and its enqueue could reorder two, so a wide margin keeps a loaded
            // machine from failing the test.
            fifo_margin: Duration::from_millis(50),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn cycle_counts_cycles_and_latencies() {
        let ops = Arc::new(AtomicU64::new(0));
        let result = cycle::run(&FakeSystem::default(), 4, &quick(), "t", ops.clone())
            .await
            .unwrap();
        assert_eq!(result.errors.count, 0, "{:?}", result.errors);
        assert!(result.cycles > 0);
        assert!(result.rate > 0.0);
        // Only cycles in the window count; the counter saw warmup ones too.
        assert!(ops.load(std::sync::atomic::Ordering::Relaxed) >= result.cycles);
        assert!(result.acquire.count > 0);
    }

    #[tokio::test]
    async fn contended_grants_of_a_fifo_lock_are_in_order_and_exclusive() {
        let ops = Arc::new(AtomicU64::new(0));
        let result = contended::run(&FakeSystem::default(), 8, &quick(), "t", ops)
            .await
            .unwrap();
        assert_eq!(result.errors.count, 0, "{:?}", result.errors);
        assert!(result.handoffs > 0);
        // Behind a queue the releaser goes to the back: every grant in the window but
        // possibly the first moves the lock to another client.
        assert!(result.grants - result.handoffs <= 1, "{result:?}");
        assert_eq!(result.order.overlaps, 0);
        assert_eq!(result.order.overtakes, 0, "{:?}", result.order);
        assert_eq!(result.gave_up, 0);
    }

    #[tokio::test]
    async fn without_a_queue_a_releaser_retaking_its_lock_is_no_handoff() {
        let ops = Arc::new(AtomicU64::new(0));
        let result = contended::run(&FakeSystem::without_queue(), 8, &quick(), "t", ops)
            .await
            .unwrap();
        assert_eq!(result.errors.count, 0, "{:?}", result.errors);
        // The releaser's next try comes after one yield, the waiters' after a pause: it
        // takes the lock back far more often than a waiter gets it, and only the waiters'
        // grants are handoffs.
        assert!(result.handoffs < result.grants / 2, "{result:?}");
        assert_eq!(result.order.overlaps, 0);
    }

    #[tokio::test]
    async fn expiry_measures_from_the_ttl_and_sees_no_early_grant() {
        for expiries in [Expiries::Together, Expiries::Spread] {
            let ops = Arc::new(AtomicU64::new(0));
            let result = expiry::run(&FakeSystem::default(), 2, expiries, &quick(), "t", ops)
                .await
                .unwrap();
            assert_eq!(result.errors.count, 0, "{expiries:?}: {:?}", result.errors);
            assert_eq!(result.early, 0, "{expiries:?}");
            assert!(result.delay.count >= 2, "{expiries:?}: {:?}", result.delay);
            // The fake hands over as soon as its timer fires: well under the TTL itself.
            assert!(
                result.delay.p50 < Duration::from_millis(100),
                "{expiries:?}: {:?}",
                result.delay
            );
        }
    }
}
