//! [`Election`]: leader election on one lock. The leader is whoever holds the lock; its
//! fencing token is its term number, which only goes up (CONTRACT S1), so a resource that
//! checks tokens also turns away deposed leaders.

use std::time::Duration;

use fenced_types::LockName;

use crate::client::{AcquireOptions, Client, Holder, LockWatch};
use crate::error::Error;
use crate::lease::Lease;

/// Leader election on one lock.
///
/// ```no_run
/// # async fn run(client: fenced_client::Client) -> Result<(), fenced_client::Error> {
/// use fenced_client::Election;
/// let election = Election::new(&client, "orders/leader")?;
/// let lease = election.campaign().await?; // waits until elected
/// tokio::select! {
///     reason = lease.lost() => eprintln!("no longer leader: {reason}"),
///     _ = async { /* lead, calling lease.fence() before every write */ } => {}
/// }
/// election.resign(lease).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    /// The client that campaigns.
    client: Client,
    /// The lock whose holder is the leader.
    lock: LockName,
    /// The leader's lease TTL; `None` uses the client's default.
    ttl: Option<Duration>,
    /// How long one acquire waits in the queue before the campaign asks again.
    attempt_wait: Duration,
    /// Pause between attempts after a transient failure (server unreachable).
    retry: Duration,
}

impl Election {
    /// An election on `lock`, with the client's default TTL, attempts that wait 30 s in the
    /// queue and a 500 ms pause after transient failures.
    pub fn new(client: &Client, lock: &str) -> Result<Self, Error> {
        Ok(Election {
            client: client.clone(),
            lock: LockName::new(lock)?,
            ttl: None,
            attempt_wait: Duration::from_secs(30),
            retry: Duration::from_millis(500),
        })
    }

    /// The leader's lease TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long each acquire attempt waits in the queue.
    pub fn attempt_wait(mut self, wait: Duration) -> Self {
        self.attempt_wait = wait;
        self
    }

    /// The lock this election runs on.
    pub fn lock(&self) -> &LockName {
        &self.lock
    }

    /// Waits until this client is the leader, and returns its lease. It queues FIFO with
    /// the other candidates, asking again whenever an attempt times out, and waits out
    /// transient failures; other errors end the campaign. Drop the future to stop
    /// campaigning.
    pub async fn campaign(&self) -> Result<Lease, Error> {
        loop {
            let mut options = AcquireOptions::wait(self.attempt_wait);
            options.ttl = self.ttl;
            match self.client.acquire(self.lock.as_str(), options).await {
                Ok(lease) => {
                    tracing::info!(lock = %self.lock, token = %lease.token(), "elected leader");
                    return Ok(lease);
                }
                Err(Error::Busy { .. }) => {
                    tracing::debug!(lock = %self.lock, "still not leader: campaigning on");
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(lock = %self.lock, %error, "campaign attempt failed: retrying");
                    tokio::time::sleep(self.retry).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The current leader and its token (the term), if there is one.
    pub async fn leader(&self) -> Result<Option<Holder>, Error> {
        Ok(self.client.describe(self.lock.as_str()).await?.holder)
    }

    /// Streams leadership changes: `Acquired` is a new leader (with its token), `Released`
    /// a resignation, `Expired` a leader that stopped renewing.
    pub async fn observe(&self) -> Result<LockWatch, Error> {
        self.client.watch(self.lock.as_str()).await
    }

    /// Steps down: releases the lease so the next candidate is elected at once.
    pub async fn resign(&self, lease: Lease) -> Result<(), Error> {
        tracing::info!(lock = %self.lock, token = %lease.token(), "resigning");
        lease.release().await
    }
}
