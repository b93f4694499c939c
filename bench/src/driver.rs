//! The common shape of a system under test, so one workload file drives all of them.
//!
//! [`LockSystem`] and [`LockClient`] are what cycle, contended and expiry need (every
//! system has them); [`LeaseSystem`] and [`LeaseConn`] are what keepalive needs (fenced and
//! etcd: a Redis lock has no lease to keep alive but its own key's TTL).

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::BenchError;

/// A system under test: where it listens, and how to open a client.
pub trait LockSystem: Send + Sync + 'static {
    /// One client with its own connection.
    type Client: LockClient;

    /// The system's name in tables ("fenced", "etcd", "redis").
    fn name(&self) -> &'static str;

    /// The server's process id, for CPU and memory readings.
    fn pid(&self) -> Option<u32>;

    /// What carries [`LockClient::ping`], for the report ("a unary `Describe` call").
    fn ping_carrier(&self) -> &'static str;

    /// Opens a client on a connection of its own, whose acquires hold leases of `ttl`.
    fn connect(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<Self::Client, BenchError>> + Send;
}

/// One client of a system: one connection, one request at a time.
pub trait LockClient: Send + 'static {
    /// What releasing a grant needs (lease id, ownership key, random value).
    type Held: Send + 'static;

    /// Takes `lock`, trying once when `wait` is zero, else waiting up to `wait` in the
    /// system's own way (a queue, or retries). `Ok(None)`: the lock stayed taken.
    fn acquire(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Self::Held>, BenchError>> + Send;

    /// Releases a grant of [`LockClient::acquire`].
    fn release(&mut self, held: Self::Held) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Takes the free lock `lock` under a fresh lease of `ttl` that nobody will renew, and
    /// answers the TTL as granted (a server may raise it to its minimum).
    fn acquire_unrenewed(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Duration, BenchError>> + Send;

    /// One round trip that writes nothing (the serial limit's network half).
    fn ping(&mut self) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Ends the client, returning what it holds for itself (etcd's session lease).
    fn close(self) -> impl Future<Output = Result<(), BenchError>> + Send;
}

/// A system whose leases can be kept alive over streams and hold many locks.
pub trait LeaseSystem: LockSystem {
    /// A connection for creating, renewing and revoking leases (cheap to clone: clones
    /// share the connection).
    type Conn: LeaseConn;

    /// Opens a lease connection of its own.
    fn connect_leases(&self) -> impl Future<Output = Result<Self::Conn, BenchError>> + Send;
}

/// Lease operations on one connection.
pub trait LeaseConn: Clone + Send + Sync + 'static {
    /// A lease's identity, as renewals and releases name it.
    type Lease: Clone + Send + Sync + 'static;

    /// Creates a lease of `ttl` holding the free lock `lock`.
    fn grant_with_lock(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Self::Lease, BenchError>> + Send;

    /// Adds the free lock `lock` to a live lease of `ttl` (the TTL it was granted with).
    fn add_lock(
        &mut self,
        lease: &Self::Lease,
        lock: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Ends a lease and releases every lock on it.
    fn revoke(
        &mut self,
        lease: &Self::Lease,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Opens one KeepAlive stream: every lease sent on `renew` is renewed once.
    fn keepalive(
        &mut self,
    ) -> impl Future<Output = Result<KeepAliveStream<Self::Lease>, BenchError>> + Send;
}

/// An open KeepAlive stream.
pub struct KeepAliveStream<L> {
    /// Leases to renew, one renewal per message.
    pub renew: mpsc::Sender<L>,
    /// One answer per renewal: `true` when the lease was renewed.
    pub answers: BoxStream<'static, Result<bool, BenchError>>,
}

/// Runs `call`, failing with [`BenchError::Timeout`] when it takes longer than `after`.
pub async fn within<T>(
    system: &'static str,
    op: &'static str,
    after: Duration,
    call: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result,
        Err(_) => Err(BenchError::Timeout { system, op, after }),
    }
}
