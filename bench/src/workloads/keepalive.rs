//! keepalive: `leases` leases (each holding `locks_per_lease` locks) renewed every TTL/3
//! over KeepAlive streams, each stream on its own connection carrying an equal share of
//! the leases. Measured over a window of whole renewal periods (the configured window
//! rounded up), after one full renewal round: renewals per second,
//! the server's CPU time per renewal, and its resident memory with every lease live.
//!
//! The setup stops at a time limit (the phase then reports how many leases and locks it
//! made). Renewals start as soon as a lease exists, so leases made early in a long setup never
//! expire before the window; afterwards every lease is revoked, so the next phase starts
//! from an empty server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{Config, KeepaliveCase};
use crate::driver::{KeepAliveStream, LeaseConn, LeaseSystem};
use crate::error::BenchError;
use crate::procstat::{self, ProcSample};
use crate::workloads::Errors;

/// How often a stream looks for renewals that are due.
const PACE_TICK: Duration = Duration::from_millis(10);

/// What one keepalive phase measured.
#[derive(Clone, Debug)]
pub struct KeepaliveResult {
    /// The case that ran.
    pub case: KeepaliveCase,
    /// Leases actually created (fewer than asked when the setup hit its time limit or
    /// failed).
    pub leases_made: usize,
    /// Locks actually held, the first lock of each lease included.
    pub locks_made: usize,
    /// How long creating the leases and locks took.
    pub setup: Duration,
    /// Renewals answered `renewed` in the window.
    pub renewals: u64,
    /// Renewals per second over the window.
    pub rate: f64,
    /// Server CPU time (user + system) over the window, when its pid is known.
    pub cpu: Option<Duration>,
    /// Server resident memory at the end of the window.
    pub rss_bytes: Option<u64>,
    /// Server resident memory before the setup.
    pub rss_before: Option<u64>,
    /// Renewals answered anything but `renewed` (during the whole phase).
    pub failed_renewals: u64,
    /// Failed operations (setup, streams, cleanup).
    pub errors: Errors,
}

impl KeepaliveResult {
    /// Renewals per CPU-second of the server.
    pub fn renewals_per_cpu_second(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.renewals as f64 / cpu)
    }
}

/// The KeepAlive streams of a phase, running from before the first lease exists until
/// after the last is revoked (so no lease expires on its own, whatever the setup's and
/// cleanup's speed).
struct Streams<L> {
    /// One feed per stream: a lease sent here is renewed on that stream from then on.
    feeds: Vec<mpsc::UnboundedSender<L>>,
    /// The pacing and counting tasks.
    tasks: Vec<JoinHandle<()>>,
    /// What the streams' answers said.
    counters: Arc<Counters>,
    /// Stops the tasks; cancelled on drop too, however the phase ends.
    stop: DropGuard,
}

/// Counts shared by a phase's stream tasks.
#[derive(Default)]
struct Counters {
    /// Renewals answered `renewed`.
    renewed: AtomicU64,
    /// Renewals answered anything else.
    failed: AtomicU64,
    /// Stream failures.
    errors: Mutex<Errors>,
}

impl<L: Clone + Send + Sync + 'static> Streams<L> {
    /// Opens `count` streams, each on a connection of its own, renewing every `period`.
    async fn start<S>(
        system: &S,
        count: usize,
        period: Duration,
        ops: Arc<AtomicU64>,
    ) -> Result<Streams<L>, BenchError>
    where
        S: LeaseSystem,
        S::Conn: LeaseConn<Lease = L>,
    {
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let mut streams = Streams {
            feeds: Vec::new(),
            tasks: Vec::new(),
            counters: counters.clone(),
            stop: cancel.clone().drop_guard(),
        };
        for _ in 0..count {
            let mut conn = system.connect_leases().await?;
            let KeepAliveStream { renew, answers } = conn.keepalive().await?;
            let (feed, leases) = mpsc::unbounded_channel();
            streams.feeds.push(feed);
            streams
                .tasks
                .push(tokio::spawn(pace(renew, leases, period, cancel.clone())));
            streams.tasks.push(tokio::spawn(count_answers(
                answers,
                counters.clone(),
                ops.clone(),
                cancel.clone(),
            )));
        }
        Ok(streams)
    }

    /// Renews `lease` from now on, on stream `i` (modulo the stream count).
    fn feed(&self, i: usize, lease: L) {
        if let Some(feed) = self.feeds.get(i % self.feeds.len().max(1)) {
            // A stream whose task ended has counted its failure already.
            let _ = feed.send(lease);
        }
    }

    /// Stops every stream; answers their failures.
    async fn stop(self) -> Errors {
        self.stop.disarm().cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        match self.counters.errors.lock() {
            Ok(mut errors) => std::mem::take(&mut *errors),
            Err(_) => Errors::default(),
        }
    }
}

/// Runs one keepalive case.
pub async fn run<S: LeaseSystem>(
    system: &S,
    case: KeepaliveCase,
    config: &Config,
    prefix: &str,
    ops: Arc<AtomicU64>,
) -> Result<KeepaliveResult, BenchError> {
    let period = config.keepalive_ttl / 3;
    let before = system.pid().map(procstat::sample).transpose()?;
    let streams = Streams::start(system, config.keepalive_streams, period, ops).await?;

    let setup_started = Instant::now();
    let setup = Setup {
        conns: connect_some(system, config.setup_concurrency).await?,
        concurrency: config.setup_concurrency,
        deadline: setup_started + config.keepalive_setup_limit,
        ttl: config.keepalive_ttl,
        names: format!(
            "{prefix}/keepalive/{}x{}",
            case.leases, case.locks_per_lease
        ),
    };
    let (leases, mut errors) = setup.leases(case.leases, &streams).await;
    let extra = case.locks().saturating_sub(case.leases);
    let (added, more) = setup.locks(&leases, case.leases, extra).await;
    errors.merge(more);
    let setup_took = setup_started.elapsed();

    // One full round at the steady pace, then the window.
    tokio::time::sleep(period).await;
    let start_sample = system.pid().map(procstat::sample).transpose()?;
    let start_renewed = streams.counters.renewed.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(whole_periods(config.keepalive_window, period)).await;
    let end_sample = system.pid().map(procstat::sample).transpose()?;
    let renewals = streams.counters.renewed.load(Ordering::Relaxed) - start_renewed;
    let window = started.elapsed();
    let failed_renewals = streams.counters.failed.load(Ordering::Relaxed);

    // Revoke while the streams still renew, so no lease expires before its revoke.
    errors.merge(setup.revoke(&leases).await);
    errors.merge(streams.stop().await);
    let cpu = match (start_sample, end_sample) {
        (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu)),
        _ => None,
    };
    Ok(KeepaliveResult {
        case,
        leases_made: leases.len(),
        locks_made: leases.len() + added,
        setup: setup_took,
        renewals,
        rate: renewals as f64 / window.as_secs_f64(),
        cpu,
        rss_bytes: end_sample.map(|s: ProcSample| s.rss_bytes),
        rss_before: before.map(|s| s.rss_bytes),
        failed_renewals,
        errors,
    })
}

/// Creates and revokes a case's leases and locks, `concurrency` requests at a time.
struct Setup<C> {
    /// A few connections, shared round-robin by the concurrent requests.
    conns: Vec<C>,
    /// Requests in flight at once.
    concurrency: usize,
    /// No new lease or lock is asked for after this.
    deadline: Instant,
    /// The leases' TTL.
    ttl: Duration,
    /// Lock `i` is called `{names}/{i}`.
    names: String,
}

impl<C: LeaseConn> Setup<C> {
    /// Creates up to `count` leases, each holding one lock, and feeds each to a stream as
    /// soon as it exists.
    async fn leases(&self, count: usize, streams: &Streams<C::Lease>) -> (Vec<C::Lease>, Errors) {
        let next = AtomicUsize::new(0);
        let made = self
            .parallel(|mut conn| {
                let next = &next;
                async move {
                    let mut made = Vec::new();
                    let mut errors = Errors::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || Instant::now() >= self.deadline {
                            break;
                        }
                        let lock = format!("{}/{i}", self.names);
                        match conn.grant_with_lock(&lock, self.ttl).await {
                            Ok(lease) => {
                                streams.feed(i, lease.clone());
                                made.push(lease);
                            }
                            Err(error) => errors.add(&error),
                        }
                    }
                    (made, errors)
                }
            })
            .await;
        let mut leases = Vec::with_capacity(count);
        let mut errors = Errors::default();
        for (some, more) in made {
            leases.extend(some);
            errors.merge(more);
        }
        (leases, errors)
    }

    /// Adds `extra` locks (named from `first` on) to `leases`, round-robin; answers how
    /// many were added.
    async fn locks(&self, leases: &[C::Lease], first: usize, extra: usize) -> (usize, Errors) {
        if leases.is_empty() {
            return (0, Errors::default());
        }
        let next = AtomicUsize::new(0);
        let added = self
            .parallel(|mut conn| {
                let next = &next;
                async move {
                    let mut added = 0;
                    let mut errors = Errors::default();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        if j >= extra || Instant::now() >= self.deadline {
                            break;
                        }
                        let lock = format!("{}/{}", self.names, first + j);
                        match conn
                            .add_lock(&leases[j % leases.len()], &lock, self.ttl)
                            .await
                        {
                            Ok(()) => added += 1,
                            Err(error) => errors.add(&error),
                        }
                    }
                    (added, errors)
                }
            })
            .await;
        let mut total = 0;
        let mut errors = Errors::default();
        for (some, more) in added {
            total += some;
            errors.merge(more);
        }
        (total, errors)
    }

    /// Revokes every lease (and so every lock).
    async fn revoke(&self, leases: &[C::Lease]) -> Errors {
        let next = AtomicUsize::new(0);
        let revoked = self
            .parallel(|mut conn| {
                let next = &next;
                async move {
                    let mut errors = Errors::default();
                    while let Some(lease) = leases.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(error) = conn.revoke(lease).await {
                            errors.add(&error);
                        }
                    }
                    errors
                }
            })
            .await;
        let mut errors = Errors::default();
        for more in revoked {
            errors.merge(more);
        }
        errors
    }

    /// Runs `concurrency` copies of `work`, spread over the connections, and collects
    /// their results.
    async fn parallel<'a, F, Fut, T>(&'a self, work: F) -> Vec<T>
    where
        F: Fn(C) -> Fut,
        Fut: std::future::Future<Output = T> + 'a,
    {
        let copies = (0..self.concurrency).filter_map(|i| {
            self.conns
                .get(i % self.conns.len().max(1))
                .cloned()
                .map(&work)
        });
        futures::future::join_all(copies).await
    }
}

/// `window` rounded up to whole renewal periods: every lease is renewed on its own
/// schedule, so only whole periods see each lease the same number of times.
fn whole_periods(window: Duration, period: Duration) -> Duration {
    if period.is_zero() {
        return window;
    }
    // Less a hair, so that a window of exactly three periods (10 s at TTL/3 of 10 s, give
    // or take a nanosecond of rounding) stays three.
    let periods = (window.as_secs_f64() / period.as_secs_f64() - 1e-6)
        .ceil()
        .max(1.0);
    period.mul_f64(periods)
}

/// Opens a few lease connections for setup and cleanup (one per 8 concurrent requests).
async fn connect_some<S: LeaseSystem>(
    system: &S,
    concurrency: usize,
) -> Result<Vec<S::Conn>, BenchError> {
    let count = concurrency.div_ceil(8).max(1);
    futures::future::try_join_all((0..count).map(|_| system.connect_leases())).await
}

/// Sends each lease fed to this stream once every `period`, starting one period after it
/// arrives, until cancelled.
async fn pace<L: Clone>(
    renew: mpsc::Sender<L>,
    mut feed: mpsc::UnboundedReceiver<L>,
    period: Duration,
    cancel: CancellationToken,
) {
    // tokio's clock (the same as std's, except in tests that pause time).
    let mut schedule: VecDeque<(tokio::time::Instant, L)> = VecDeque::new();
    let mut tick = tokio::time::interval(PACE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        while let Ok(lease) = feed.try_recv() {
            schedule.push_back((now + period, lease));
        }
        while schedule.front().is_some_and(|(due, _)| *due <= now) {
            let Some((due, lease)) = schedule.pop_front() else {
                break;
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                sent = renew.send(lease.clone()) => if sent.is_err() { return },
            }
            schedule.push_back((due + period, lease));
        }
    }
}

/// Counts a stream's answers until it ends or the phase is cancelled.
async fn count_answers(
    mut answers: futures::stream::BoxStream<'static, Result<bool, BenchError>>,
    counters: Arc<Counters>,
    ops: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    loop {
        let answer = tokio::select! {
            _ = cancel.cancelled() => return,
            answer = answers.next() => answer,
        };
        match answer {
            Some(Ok(true)) => {
                counters.renewed.fetch_add(1, Ordering::Relaxed);
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(false)) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(error)) => {
                if let Ok(mut errors) = counters.errors.lock() {
                    errors.add(&error);
                }
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_up_to_whole_periods() {
        let period = Duration::from_secs(10) / 3;
        assert_eq!(whole_periods(Duration::from_secs(10), period), period * 3);
        assert_eq!(whole_periods(Duration::from_secs(3), period), period);
        assert_eq!(whole_periods(Duration::from_secs(4), period), period * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn pace_renews_each_lease_once_per_period() {
        let (renew, mut sent) = mpsc::channel(1024);
        let (feed, leases) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let period = Duration::from_secs(3);
        let task = tokio::spawn(pace(renew, leases, period, cancel.clone()));
        for lease in 0..5u32 {
            feed.send(lease).unwrap();
        }
        // Three full periods (plus a tick of slack): each lease three times, none early.
        tokio::time::sleep(period * 3 + PACE_TICK * 2).await;
        cancel.cancel();
        task.await.unwrap();
        let mut counts = [0; 5];
        while let Ok(lease) = sent.try_recv() {
            counts[lease as usize] += 1;
        }
        assert_eq!(counts, [3; 5]);
    }
}
