//! A worker: one real process (`fenced-torture worker ...`) that uses the SDK the way an
//! application does, and records every call it makes in its own history file.
//!
//! It loops until its time is up: acquire one of a few locks (try-once or waiting, a TTL
//! drawn from a range), sometimes fence the store with the token, then a few steps of
//! `fence()` and a guarded write (sometimes holding the token a while before the write
//! goes out, so that a pause lands between the check and the write), sometimes a read,
//! sometimes a rest longer than the TTL (the SDK renews), and a release. A watcher task
//! records the SDK's state changes and every renewal it confirms.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_client::{AcquireOptions, Client, DeadlinePolicy, Error, Lease, LeaseState, LostReason};
use fenced_proto::kv::v1 as kv;
use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::history::{now, Event, HistoryError, Nanos, Op, Outcome, Recorder, SdkState};

/// What a worker is told on its command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name (`w1`): the process name in the history and the holder name.
    pub name: String,
    /// The lock server's endpoint (through this worker's proxy), or a cluster's members'
    /// endpoints, comma-separated.
    pub lock_server: String,
    /// The store's endpoint.
    pub store: String,
    /// The locks it competes for; lock `l` guards resource `l` in the store.
    pub locks: Vec<String>,
    /// Where it writes its history.
    pub history: PathBuf,
    /// How long it works.
    pub duration: Duration,
    /// The seed of its choices.
    pub seed: u64,
    /// The shortest TTL it asks for.
    pub ttl_min: Duration,
    /// The longest TTL it asks for.
    pub ttl_max: Duration,
    /// The longest it holds a token between `fence()` and the write.
    pub hold_max: Duration,
}

/// Why a worker stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The history could not be written: the run is worthless.
    #[error("history: {0}")]
    History(#[from] HistoryError),
    /// The options do not work.
    #[error("bad options: {0}")]
    Options(String),
}

/// Writes the worker's events.
#[derive(Clone)]
struct Log {
    recorder: Arc<Recorder>,
    process: String,
    /// The last operation number given out (shared with the lease watchers).
    last_id: Arc<AtomicU64>,
}

impl Log {
    fn invoke(&mut self, op: Op) -> Result<u64, HistoryError> {
        self.invoke_at(now(), op)
    }

    fn invoke_at(&self, t: Nanos, op: Op) -> Result<u64, HistoryError> {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.recorder.record(&Event::Invoke {
            t,
            process: self.process.clone(),
            id,
            op,
        })?;
        Ok(id)
    }

    fn complete(&self, id: u64, outcome: Outcome) -> Result<(), HistoryError> {
        self.recorder.record(&Event::Complete {
            t: now(),
            process: self.process.clone(),
            id,
            outcome,
        })
    }
}

/// Runs the worker until its time is up.
pub async fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    if options.locks.is_empty() || options.ttl_min > options.ttl_max {
        return Err(WorkerError::Options(
            "needs at least one lock and ttl_min <= ttl_max".into(),
        ));
    }
    let recorder = Arc::new(Recorder::create(&options.history)?);
    let mut log = Log {
        recorder: recorder.clone(),
        process: options.name.clone(),
        last_id: Arc::default(),
    };
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let Some(client) = connect(&options, deadline).await else {
        return Ok(());
    };
    let policy = client.config().policy();
    let store = Endpoint::from_shared(options.store.clone())
        .map_err(|e| WorkerError::Options(format!("store endpoint: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut worker = Worker {
        options: &options,
        client,
        store: GatedKvClient::new(store),
        policy,
        rng: &mut rng,
        leases: 0,
        writes: 0,
        deadline,
    };
    while Instant::now() < deadline {
        worker.cycle(&mut log).await?;
    }
    Ok(())
}

/// Connects to the lock server, retrying while it is down (a nemesis may have killed it).
async fn connect(options: &WorkerOptions, deadline: Instant) -> Option<Client> {
    while Instant::now() < deadline {
        let built = Client::builder_for_cluster(options.lock_server.split(','))
            .holder(options.name.clone())
            .timeouts(Duration::from_secs(1), Duration::from_secs(2))
            .retry(Duration::from_millis(50), Duration::from_millis(500))
            .connect()
            .await;
        if let Ok(client) = built {
            return Some(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// One worker's state.
struct Worker<'a> {
    options: &'a WorkerOptions,
    client: Client,
    store: GatedKvClient<Channel>,
    policy: DeadlinePolicy,
    rng: &'a mut StdRng,
    /// Leases granted so far (names them).
    leases: u64,
    /// Writes so far (names their values).
    writes: u64,
    deadline: Instant,
}

impl Worker<'_> {
    /// Acquire, work, release.
    async fn cycle(&mut self, log: &mut Log) -> Result<(), WorkerError> {
        let lock = self.options.locks[self.rng.random_range(0..self.options.locks.len())].clone();
        let ttl = Duration::from_millis(
            self.rng
                .random_range(millis(self.options.ttl_min)..=millis(self.options.ttl_max)),
        );
        let left = self.deadline.saturating_duration_since(Instant::now());
        let wait = if self.rng.random_bool(0.6) {
            Duration::from_millis(self.rng.random_range(300..=2500)).min(left)
        } else {
            Duration::ZERO
        };
        let id = log.invoke(Op::Acquire {
            lock: lock.clone(),
            wait_ms: millis(wait),
            ttl_ms: millis(ttl),
        })?;
        let options = if wait.is_zero() {
            AcquireOptions::try_once().ttl(ttl)
        } else {
            AcquireOptions::wait(wait).ttl(ttl)
        };
        match self.client.acquire(&lock, options).await {
            Ok(lease) => {
                self.leases += 1;
                let name = format!("{}.{}", self.options.name, self.leases);
                let granted_ttl = lease.status().ttl;
                log.complete(
                    id,
                    Outcome::Granted {
                        lease: name.clone(),
                        token: lease.token().get(),
                        ttl_ms: millis(granted_ttl),
                    },
                )?;
                self.hold(log, lease, &name, &lock).await
            }
            Err(error) => {
                log.complete(id, acquire_failure(&error))?;
                let rest = self.rng.random_range(10..=100);
                tokio::time::sleep(Duration::from_millis(rest)).await;
                Ok(())
            }
        }
    }

    /// Works under a lease, then releases it.
    async fn hold(
        &mut self,
        log: &mut Log,
        lease: Lease,
        name: &str,
        resource: &str,
    ) -> Result<(), WorkerError> {
        let lease = Arc::new(lease);
        let (stop, stopped) = oneshot::channel();
        let watcher = tokio::spawn(watch(
            lease.clone(),
            log.clone(),
            name.to_string(),
            self.policy,
            stopped,
        ));
        let outcome = self.work(log, &lease, name, resource).await;
        let _ = stop.send(());
        let watched = watcher.await;
        let id = log.invoke(Op::Release {
            lease: name.to_string(),
        })?;
        let released = match Arc::try_unwrap(lease) {
            Ok(lease) => match lease.release().await {
                Ok(()) => Outcome::Done,
                Err(error) if error.is_transient() => Outcome::Unknown {
                    error: error.to_string(),
                },
                Err(error) => Outcome::Failed {
                    error: error.to_string(),
                },
            },
            // The watcher still holds it (it panicked): dropping releases in the background.
            Err(_) => Outcome::Unknown {
                error: "lease still shared; released on drop".into(),
            },
        };
        log.complete(id, released)?;
        if let Ok(Err(error)) = watched {
            return Err(error.into());
        }
        outcome
    }

    /// The steps under one lease.
    async fn work(
        &mut self,
        log: &mut Log,
        lease: &Lease,
        name: &str,
        resource: &str,
    ) -> Result<(), WorkerError> {
        if self.rng.random_bool(0.3) {
            let Ok(token) = self.fence(log, lease, name)? else {
                return Ok(());
            };
            let id = log.invoke(Op::KvFence {
                lease: name.to_string(),
                resource: resource.to_string(),
                token,
            })?;
            let request = kv::FenceRequest {
                resource: resource.to_string(),
                token,
                sequencer: Vec::new(),
            };
            let outcome = match self.store.fence(request).await {
                Ok(reply) => Outcome::Accepted {
                    mark: reply.into_inner().mark,
                },
                Err(status) => store_failure(&status),
            };
            log.complete(id, outcome)?;
        }
        let steps = self.rng.random_range(1..=4);
        for _ in 0..steps {
            if Instant::now() >= self.deadline {
                break;
            }
            let token = match self.fence(log, lease, name)? {
                Ok(token) => token,
                Err(lost) if lost => return Ok(()),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.rng.random_bool(0.35) {
                // The token is out; the write is about to leave. A pause here makes a
                // zombie whose write only the gate can stop. Say so on stdout, so that
                // the nemesis can aim its pauses here.
                let hold =
                    Duration::from_millis(self.rng.random_range(0..=millis(self.options.hold_max)));
                println!("{HOLDING} {}", now().saturating_add(nanos(hold)));
                tokio::time::sleep(hold).await;
            }
            self.put(log, name, resource, token).await?;
            if self.rng.random_bool(0.3) {
                self.get(log, resource).await?;
            }
            let rest = if self.rng.random_bool(0.1) {
                // Longer than the TTL: only the SDK's renewals keep the lease.
                lease.status().ttl.mul_f64(1.5)
            } else {
                Duration::from_millis(self.rng.random_range(0..=50))
            };
            let left = self.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(rest.min(left)).await;
        }
        Ok(())
    }

    /// `fence()`, recorded. `Err(true)` when the lease is lost, `Err(false)` when suspect.
    fn fence(
        &mut self,
        log: &mut Log,
        lease: &Lease,
        name: &str,
    ) -> Result<Result<u64, bool>, WorkerError> {
        let id = log.invoke(Op::Fence {
            lease: name.to_string(),
        })?;
        match lease.fence() {
            Ok(token) => {
                log.complete(id, Outcome::Token { token: token.get() })?;
                Ok(Ok(token.get()))
            }
            Err(refusal) => {
                log.complete(
                    id,
                    Outcome::Refused {
                        reason: refusal.to_string(),
                    },
                )?;
                Ok(Err(lease.state().is_lost()))
            }
        }
    }

    /// A guarded write, recorded.
    async fn put(
        &mut self,
        log: &mut Log,
        name: &str,
        resource: &str,
        token: u64,
    ) -> Result<(), WorkerError> {
        self.writes += 1;
        let value = format!("{}-{}", self.options.name, self.writes);
        let id = log.invoke(Op::Put {
            lease: name.to_string(),
            resource: resource.to_string(),
            key: KEY.to_string(),
            value: value.clone(),
            token,
        })?;
        let request = kv::PutRequest {
            resource: resource.to_string(),
            key: KEY.to_string(),
            value: value.into_bytes(),
            token,
            sequencer: Vec::new(),
        };
        let outcome = match self.store.put(request).await {
            Ok(reply) => Outcome::Accepted {
                mark: reply.into_inner().mark,
            },
            Err(status) => store_failure(&status),
        };
        log.complete(id, outcome)?;
        Ok(())
    }

    /// A read, recorded.
    async fn get(&mut self, log: &mut Log, resource: &str) -> Result<(), WorkerError> {
        let id = log.invoke(Op::Get {
            resource: resource.to_string(),
            key: KEY.to_string(),
        })?;
        let outcome = read(&mut self.store, resource).await;
        log.complete(id, outcome)?;
        Ok(())
    }
}

/// The line a worker prints when it holds a token before its write: `holding <until>`,
/// with the end of the hold in nanoseconds on the machine's clock.
pub const HOLDING: &str = "holding";

/// The one key every worker writes in a resource, so that writes of different holders
/// land on top of each other.
pub const KEY: &str = "k";

/// Reads [`KEY`] of `resource`.
pub async fn read(store: &mut GatedKvClient<Channel>, resource: &str) -> Outcome {
    let request = kv::GetRequest {
        resource: resource.to_string(),
        key: KEY.to_string(),
    };
    match store.get(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            Outcome::Read {
                found: reply.found,
                value: String::from_utf8_lossy(&reply.value).into_owned(),
                token: reply.token,
            }
        }
        Err(status) => Outcome::Unknown {
            error: format!("{}: {}", status.code(), status.message()),
        },
    }
}

/// A refused acquire is definite; anything else may have been granted unseen.
fn acquire_failure(error: &Error) -> Outcome {
    match error {
        Error::Busy { .. } => Outcome::Refused {
            reason: error.to_string(),
        },
        _ => Outcome::Unknown {
            error: error.to_string(),
        },
    }
}

/// A store call that failed: the gate's rejection (with both tokens) is definite;
/// anything else may have taken effect.
fn store_failure(status: &tonic::Status) -> Outcome {
    match fenced_gate::grpc::stale_tokens(status) {
        Some((presented, current)) => Outcome::Rejected {
            presented: presented.get(),
            current: current.get(),
        },
        None => Outcome::Unknown {
            error: format!("{}: {}", status.code(), status.message()),
        },
    }
}

/// Records the lease's state changes and confirmed renewals until told to stop or the
/// lease is lost. A lease the SDK gives up on its own (no renewal confirmed until the
/// server has surely expired it) is released by the SDK in the background: that release
/// is recorded as an operation starting at the loss.
async fn watch(
    lease: Arc<Lease>,
    log: Log,
    name: String,
    policy: DeadlinePolicy,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), HistoryError> {
    let recorder = log.recorder.clone();
    let process = log.process.clone();
    let mut last_change: Option<Duration> = None;
    let mut last_deadline: Nanos = 0;
    loop {
        let stopping = !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        // The local deadline is `sent + usable(ttl)` of the latest confirmed request: when
        // it moves, a renewal was confirmed, and its send time follows. Reading the clock
        // before `status()` gives a lower bound of the deadline, so of the send time.
        let before = now();
        let status = lease.status();
        if !status.state.is_lost() && !status.remaining.is_zero() {
            let deadline = before.saturating_add(nanos(status.remaining));
            if deadline > last_deadline.saturating_add(5_000_000) {
                if let Some(usable) = policy.usable(status.ttl) {
                    recorder.record(&Event::Renewed {
                        t: before,
                        process: process.clone(),
                        lease: name.clone(),
                        sent: deadline.saturating_sub(nanos(usable)),
                        ttl_ms: millis(status.ttl),
                    })?;
                }
                last_deadline = deadline;
            }
        }
        let mut lost = false;
        for change in lease.history() {
            if last_change.is_some_and(|at| change.at <= at) {
                continue;
            }
            last_change = Some(change.at);
            let state = match &change.state {
                LeaseState::Held => SdkState::Held,
                LeaseState::Suspect { .. } => SdkState::Suspect,
                LeaseState::Lost { .. } => SdkState::Lost,
            };
            lost |= state == SdkState::Lost;
            recorder.record(&Event::LeaseState {
                t: nanos(change.at),
                process: process.clone(),
                lease: name.clone(),
                state,
                detail: change.state.to_string(),
            })?;
            if let LeaseState::Lost {
                reason: LostReason::ExpiredLocally { .. },
            } = &change.state
            {
                let id = log.invoke_at(
                    nanos(change.at),
                    Op::Release {
                        lease: name.clone(),
                    },
                )?;
                log.complete(
                    id,
                    Outcome::Unknown {
                        error: "released by the SDK in the background after giving up".into(),
                    },
                )?;
            }
        }
        if stopping || lost {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = &mut stop => {}
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
