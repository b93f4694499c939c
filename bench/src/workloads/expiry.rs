//! expiry: in each of N pairs, a holder takes a fresh lock under a lease it never renews,
//! and a waiter queues for that lock at once. The delay is from the holder lease's expiry
//! to the waiter's grant.
//!
//! The server's expiry instant is not visible to a client. It lies between the holder's
//! request *sent* time plus the granted TTL and the holder's *answer* time plus the TTL
//! (the server counts the TTL from when it handled the request). The benchmark reports the
//! delay from both: from the earliest possible expiry (an upper bound on the true delay)
//! and from the latest (a lower bound); the two differ by the holder's acquire round trip.
//! A grant before the earliest possible expiry would be two holders at once: it is counted
//! as `early` and kept out of the delays.
//!
//! The pairs' leases expire in one of two [`Expiries`] arrangements. *Together*: every pair
//! starts at once, so each round's leases expire within a few milliseconds of one another,
//! and the last waiters' grants queue behind the others' handoffs and the pairs' next
//! rounds (a burst of four requests per pair on the same cores). *Spread*: pair `i` starts
//! `i / pairs` of a TTL late, so the expiries are evenly spaced and each handoff is
//! measured on its own, with all the pairs still live.
//!
//! Every round starts after a random pause (up to the configured offset; each pair draws
//! its own), so the expiry falls at a random phase of any timer in the server. etcd looks
//! for expired leases every 500 ms: a round started right after the previous grant, which
//! that check produced, would expire a whole number of TTLs later, just after a check,
//! and meet its worst case every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::Config;
use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::workloads::{connect_all, Errors, Window, ERROR_PAUSE};

/// When the pairs' leases expire relative to one another (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiries {
    /// Every pair starts at once: each round's expiries come in one burst.
    Together,
    /// Pair `i` starts `i / pairs` of a TTL late: the expiries are evenly spaced.
    Spread,
}

impl Expiries {
    /// How the arrangement is named in tables and progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Expiries::Together => "together",
            Expiries::Spread => "spread",
        }
    }
}

/// What one expiry phase measured.
#[derive(Clone, Debug)]
pub struct ExpiryResult {
    /// Earliest possible expiry to the waiter's grant (an upper bound on the delay).
    pub delay: LatencySummary,
    /// Latest possible expiry to the waiter's grant (a lower bound; 0 if the grant came
    /// before it).
    pub delay_lower: LatencySummary,
    /// The holder's TTL as the server granted it.
    pub ttl: Duration,
    /// Grants to the waiter before the holder's lease could have expired.
    pub early: u64,
    /// Failed operations.
    pub errors: Errors,
}

/// Runs `pairs` holder/waiter pairs, their expiries arranged as `expiries`, each doing
/// rounds until the phase ends; the phase lasts at least three TTLs so even one pair (or
/// the last to start, when spread) gives two samples or more.
pub async fn run<S: LockSystem>(
    system: &S,
    pairs: usize,
    expiries: Expiries,
    config: &Config,
    prefix: &str,
    ops: Arc<AtomicU64>,
) -> Result<ExpiryResult, BenchError> {
    let holders = connect_all(system, pairs, config.expiry_ttl).await?;
    let waiters = connect_all(system, pairs, config.ttl).await?;
    let length = config.duration.max(config.expiry_ttl * 3);
    let window = Window::starting_now(Duration::ZERO, length);
    let tasks: Vec<_> = holders
        .into_iter()
        .zip(waiters)
        .enumerate()
        .map(|(i, (holder, waiter))| {
            let pair = Pair {
                holder,
                waiter,
                lock_prefix: format!("{prefix}/expiry/{pairs}/{i}"),
                ttl: config.expiry_ttl,
                max_wait: config.max_wait,
                offset_max: config.expiry_offset_max,
            };
            let late_by = match expiries {
                Expiries::Together => Duration::ZERO,
                Expiries::Spread => config.expiry_ttl.mul_f64(i as f64 / pairs as f64),
            };
            let ops = ops.clone();
            tokio::spawn(async move {
                tokio::time::sleep(late_by).await;
                pair.run(window, ops).await
            })
        })
        .collect();
    let mut delay = Latencies::new();
    let mut delay_lower = Latencies::new();
    let mut ttl = Duration::ZERO;
    let mut early = 0;
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(done) => {
                delay.merge(&done.delay);
                delay_lower.merge(&done.delay_lower);
                ttl = ttl.max(done.ttl);
                early += done.early;
                errors.merge(done.errors);
            }
            Err(join) => errors.add(&BenchError::Unexpected {
                system: system.name(),
                op: "expiry",
                detail: format!("pair task failed: {join}"),
            }),
        }
    }
    Ok(ExpiryResult {
        delay: delay.summary(),
        delay_lower: delay_lower.summary(),
        ttl,
        early,
        errors,
    })
}

/// One holder and one waiter.
struct Pair<C> {
    /// Takes each round's lock and lets its lease expire.
    holder: C,
    /// Queues for the lock and releases it once granted.
    waiter: C,
    /// Each round's lock is this plus the round number.
    lock_prefix: String,
    /// The holder's TTL.
    ttl: Duration,
    /// How long the waiter waits beyond the TTL.
    max_wait: Duration,
    /// Each round starts after a random pause of up to this.
    offset_max: Duration,
}

/// A random pause in `[0, max)`: when the next round starts.
fn random_offset(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    max.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// One pair's share of the phase.
struct PairDone {
    delay: Latencies,
    delay_lower: Latencies,
    ttl: Duration,
    early: u64,
    errors: Errors,
}

impl<C: LockClient> Pair<C> {
    async fn run(mut self, window: Window, ops: Arc<AtomicU64>) -> PairDone {
        let mut done = PairDone {
            delay: Latencies::new(),
            delay_lower: Latencies::new(),
            ttl: Duration::ZERO,
            early: 0,
            errors: Errors::default(),
        };
        let mut round = 0u64;
        while !window.is_over() {
            tokio::time::sleep(random_offset(self.offset_max)).await;
            if window.is_over() {
                break;
            }
            round += 1;
            if let Err(error) = self.round(round, &mut done).await {
                done.errors.add(&error);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            ops.fetch_add(1, Ordering::Relaxed);
        }
        for client in [self.holder, self.waiter] {
            if let Err(error) = client.close().await {
                done.errors.add(&error);
            }
        }
        done
    }

    async fn round(&mut self, round: u64, done: &mut PairDone) -> Result<(), BenchError> {
        let lock = format!("{}/{round}", self.lock_prefix);
        let sent = Instant::now();
        let ttl = self.holder.acquire_unrenewed(&lock, self.ttl).await?;
        let answered = Instant::now();
        done.ttl = done.ttl.max(ttl);
        let earliest_expiry = sent + ttl;
        let latest_expiry = answered + ttl;
        let Some(held) = self.waiter.acquire(&lock, ttl + self.max_wait).await? else {
            return Err(BenchError::Unexpected {
                system: "expiry",
                op: "acquire",
                detail: format!(
                    "the waiter was not granted {lock:?} within {:?}",
                    ttl + self.max_wait
                ),
            });
        };
        let granted = Instant::now();
        match granted.checked_duration_since(earliest_expiry) {
            Some(delay) => {
                done.delay.record(delay);
                done.delay_lower
                    .record(granted.saturating_duration_since(latest_expiry));
            }
            None => done.early += 1,
        }
        self.waiter.release(held).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_offsets_fall_below_their_maximum() {
        assert_eq!(random_offset(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_millis(500);
        let offsets: Vec<Duration> = (0..200).map(|_| random_offset(max)).collect();
        assert!(offsets.iter().all(|o| *o < max), "{offsets:?}");
        // Spread over the range, not stuck at one end: 200 draws all in one half would
        // happen with probability 2^-199.
        assert!(offsets.iter().any(|o| *o < max / 2));
        assert!(offsets.iter().any(|o| *o >= max / 2));
    }
}
