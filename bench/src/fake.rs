//! An in-memory lock system for the workloads' own tests: FIFO queues (or, like Redis, none:
//! waiters retry), leases that expire when their TTL passes, no network. Every call yields
//! once, as a round trip would, so clients interleave. It lets the tests check what the
//! workloads count without a server.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;

/// Lock name to its holder's grant number and its queue.
#[derive(Default)]
struct State {
    held: HashMap<String, u64>,
    queues: HashMap<String, VecDeque<(u64, oneshot::Sender<()>)>>,
    next: u64,
}

/// The fake system.
#[derive(Clone)]
pub struct FakeSystem {
    state: Arc<Mutex<State>>,
    /// Whether waiters queue (FIFO) or retry after a pause.
    queue: bool,
}

impl Default for FakeSystem {
    fn default() -> FakeSystem {
        FakeSystem {
            state: Arc::default(),
            queue: true,
        }
    }
}

impl FakeSystem {
    /// A fake whose waiters retry every [`RETRY_PAUSE`] instead of queueing, as Redis's do.
    pub fn without_queue() -> FakeSystem {
        FakeSystem {
            queue: false,
            ..FakeSystem::default()
        }
    }
}

/// How long a waiter of a fake without a queue pauses between tries.
pub const RETRY_PAUSE: Duration = Duration::from_millis(1);

/// A fake client (shares the system's state).
pub struct FakeClient {
    state: Arc<Mutex<State>>,
    queue: bool,
}

/// A fake grant.
pub struct FakeHeld {
    lock: String,
    grant: u64,
}

impl LockSystem for FakeSystem {
    type Client = FakeClient;

    fn name(&self) -> &'static str {
        "fake"
    }

    fn pid(&self) -> Option<u32> {
        None
    }

    fn ping_carrier(&self) -> &'static str {
        "a call into memory"
    }

    async fn connect(&self, _ttl: Duration) -> Result<FakeClient, BenchError> {
        Ok(FakeClient {
            state: self.state.clone(),
            queue: self.queue,
        })
    }
}

/// Ends grant `grant` of `lock` (if it still holds it), handing the lock to the next waiter.
fn end(state: &Mutex<State>, lock: &str, grant: u64) {
    let mut state = state.lock().unwrap();
    if state.held.get(lock) != Some(&grant) {
        return;
    }
    state.held.remove(lock);
    while let Some((next, wake)) = state.queues.get_mut(lock).and_then(|q| q.pop_front()) {
        if wake.send(()).is_ok() {
            state.held.insert(lock.to_string(), next);
            return;
        }
    }
}

impl LockClient for FakeClient {
    type Held = FakeHeld;

    async fn acquire(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> Result<Option<FakeHeld>, BenchError> {
        tokio::task::yield_now().await;
        if !self.queue {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if let Some(held) = self.acquire_queued(lock, Duration::ZERO).await? {
                    return Ok(Some(held));
                }
                if tokio::time::Instant::now() + RETRY_PAUSE > deadline {
                    return Ok(None);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        self.acquire_queued(lock, wait).await
    }

    async fn release(&mut self, held: FakeHeld) -> Result<(), BenchError> {
        tokio::task::yield_now().await;
        end(&self.state, &held.lock, held.grant);
        Ok(())
    }

    async fn acquire_unrenewed(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> Result<Duration, BenchError> {
        let Some(held) = self.acquire(lock, Duration::ZERO).await? else {
            return Err(BenchError::Unexpected {
                system: "fake",
                op: "acquire",
                detail: format!("{lock} taken"),
            });
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            end(&state, &held.lock, held.grant);
        });
        Ok(ttl)
    }

    async fn ping(&mut self) -> Result<(), BenchError> {
        Ok(())
    }

    async fn close(self) -> Result<(), BenchError> {
        Ok(())
    }
}

impl FakeClient {
    /// Takes `lock` if free, else queues for up to `wait` (not at all when zero).
    async fn acquire_queued(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> Result<Option<FakeHeld>, BenchError> {
        let (grant, woken) = {
            let mut state = self.state.lock().unwrap();
            state.next += 1;
            let grant = state.next;
            if !state.held.contains_key(lock) {
                state.held.insert(lock.to_string(), grant);
                return Ok(Some(FakeHeld {
                    lock: lock.to_string(),
                    grant,
                }));
            }
            if wait.is_zero() {
                return Ok(None);
            }
            let (wake, woken) = oneshot::channel();
            state
                .queues
                .entry(lock.to_string())
                .or_default()
                .push_back((grant, wake));
            (grant, woken)
        };
        match tokio::time::timeout(wait, woken).await {
            Ok(Ok(())) => Ok(Some(FakeHeld {
                lock: lock.to_string(),
                grant,
            })),
            _ => Ok(None),
        }
    }
}
