//! [`Pool`]: a small bounded pool of blocking PostgreSQL connections, so that concurrent
//! gate calls are concurrent transactions on separate connections.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use fenced_gate::StorageError;

use crate::sqlerror::storage_error;

/// How long a call waits for a free connection before it fails: long enough for any
/// queue of short gate transactions, short enough that a stuck database is reported.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most `size` connections, opened on demand and reused; a connection the server
/// closed is dropped and replaced on the next checkout.
pub struct Pool {
    /// Where and how to connect.
    config: postgres::Config,
    /// The most connections open at once.
    size: usize,
    /// Idle connections and the count of open ones.
    state: Mutex<PoolState>,
    /// Signalled when a connection is returned or closed.
    returned: Condvar,
}

/// The pool's mutable part.
struct PoolState {
    /// Connections not in use.
    idle: Vec<postgres::Client>,
    /// Connections open, idle or checked out (or being opened).
    open: usize,
}

/// A checked-out connection; returned to the pool when dropped.
pub struct Pooled<'a> {
    /// The pool it goes back to.
    pool: &'a Pool,
    /// Always `Some` until dropped.
    client: Option<postgres::Client>,
}

impl Pool {
    /// A pool of at most `size` (at least 1) connections made from `config`; connects
    /// lazily.
    pub fn new(config: postgres::Config, size: usize) -> Self {
        Pool {
            config,
            size: size.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// The most connections it opens.
    pub fn size(&self) -> usize {
        self.size
    }

    /// An idle connection, a new one if fewer than `size` are open, or the next one
    /// returned, waiting at most [`CHECKOUT_TIMEOUT`].
    pub fn get(&self) -> Result<Pooled<'_>, StorageError> {
        let mut state = self.lock();
        loop {
            if let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(self.pooled(client));
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.config.connect(postgres::NoTls) {
                    Ok(client) => Ok(self.pooled(client)),
                    Err(error) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(storage_error("connecting to PostgreSQL")(error))
                    }
                };
            }
            let (next, timeout) = self
                .returned
                .wait_timeout(state, CHECKOUT_TIMEOUT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.idle.is_empty() && state.open >= self.size {
                return Err(StorageError::new(
                    "waiting for a pooled PostgreSQL connection",
                    format!(
                        "all {} connections stayed busy for {CHECKOUT_TIMEOUT:?}",
                        self.size
                    ),
                ));
            }
        }
    }

    fn pooled(&self, client: postgres::Client) -> Pooled<'_> {
        Pooled {
            pool: self,
            client: Some(client),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Every change under the lock is one push, pop or count: a panic elsewhere cannot
        // leave the state half-changed, so a poisoned lock is still sound.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Pooled<'_> {
    /// The connection.
    pub fn client(&mut self) -> &mut postgres::Client {
        // `client` is `Some` from checkout until drop.
        match self.client.as_mut() {
            Some(client) => client,
            None => unreachable!("a pooled connection is present until it is dropped"),
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}
