//! A Redis lock: `SET key value NX PX ttl` and `INCR` of a token counter in one Lua script
//! (so a grant and its fencing token are one atomic, fsynced write), released by a
//! compare-and-delete script. Redis has no queue: a waiter retries after a random pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use crate::config::MeasuredServer;
use crate::driver::{within, LockClient, LockSystem};
use crate::error::BenchError;

const NAME: &str = "Redis";

/// The counter every grant increments for its fencing token (one for all locks, as
/// fenced's tokens are ordered across locks).
const TOKEN_KEY: &str = "fenced-bench:token";

/// Takes KEYS[1] for ARGV[2] ms with the random value ARGV[1]; answers the new token, or 0
/// when the lock is taken.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
";

/// Deletes KEYS[1] only while it still holds ARGV[1] (this grant's value).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A Redis server.
#[derive(Clone, Debug)]
pub struct RedisSystem {
    /// Its endpoint and process id.
    target: MeasuredServer,
    /// The longest a command may take.
    rpc_timeout: Duration,
    /// A waiter's pause between tries is random, up to twice this.
    retry: Duration,
    /// Numbers the clients, so every grant's value is unique.
    clients: Arc<AtomicU64>,
}

impl RedisSystem {
    /// The Redis server at `target`; waiters pause about `retry` between tries.
    pub fn new(target: MeasuredServer, rpc_timeout: Duration, retry: Duration) -> RedisSystem {
        RedisSystem {
            target,
            rpc_timeout,
            retry,
            clients: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LockSystem for RedisSystem {
    type Client = RedisClient;

    fn name(&self) -> &'static str {
        NAME
    }

    fn pid(&self) -> Option<u32> {
        self.target.pid
    }

    fn ping_carrier(&self) -> &'static str {
        "`PING`"
    }

    async fn connect(&self, ttl: Duration) -> Result<RedisClient, BenchError> {
        let connect_error = |e: redis::RedisError| BenchError::Connect {
            system: NAME,
            endpoint: self.target.endpoint.clone(),
            reason: e.to_string(),
        };
        let client = redis::Client::open(self.target.endpoint.as_str()).map_err(connect_error)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.rpc_timeout))
            .set_response_timeout(Some(self.rpc_timeout));
        // A multiplexed connection per client: its own TCP connection, as every other
        // system's client has.
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(connect_error)?;
        Ok(RedisClient {
            conn,
            id: self.clients.fetch_add(1, Ordering::Relaxed),
            grants: 0,
            ttl,
            retry: self.retry,
            rpc_timeout: self.rpc_timeout,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
        })
    }
}

/// One Redis client on a connection of its own.
pub struct RedisClient {
    /// The connection.
    conn: MultiplexedConnection,
    /// This client's number, part of every value it sets.
    id: u64,
    /// Grants tried so far, the other part.
    grants: u64,
    /// The `PX` of its grants.
    ttl: Duration,
    /// A waiter's pause between tries is random, up to twice this.
    retry: Duration,
    /// The longest a command may take.
    rpc_timeout: Duration,
    /// The acquire script (sent by SHA after the first call).
    acquire: Script,
    /// The release script.
    release: Script,
}

/// A grant: the key and the value only this grant set.
pub struct RedisHeld {
    /// The lock's key.
    key: String,
    /// The value that proves ownership.
    value: String,
}

impl RedisClient {
    /// One try; answers the value on success.
    async fn try_once(&mut self, lock: &str, ttl: Duration) -> Result<Option<String>, BenchError> {
        self.grants += 1;
        let value = format!("{}:{}", self.id, self.grants);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.acquire.prepare_invoke();
        invocation.key(lock).key(TOKEN_KEY).arg(&value).arg(ttl_ms);
        let call = async {
            invocation
                .invoke_async::<u64>(&mut self.conn)
                .await
                .map_err(|e| BenchError::redis("acquire script", e))
        };
        let token = within(NAME, "acquire script", self.rpc_timeout, call).await?;
        Ok((token > 0).then_some(value))
    }
}

impl LockClient for RedisClient {
    type Held = RedisHeld;

    async fn acquire(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> Result<Option<RedisHeld>, BenchError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(value) = self.try_once(lock, self.ttl).await? {
                return Ok(Some(RedisHeld {
                    key: lock.to_string(),
                    value,
                }));
            }
            let pause = self.retry.mul_f64(rand::rng().random_range(0.0..2.0));
            if Instant::now() + pause >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn release(&mut self, held: RedisHeld) -> Result<(), BenchError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(&held.key).arg(&held.value);
        let call = async {
            invocation
                .invoke_async::<u64>(&mut self.conn)
                .await
                .map_err(|e| BenchError::redis("release script", e))
        };
        match within(NAME, "release script", self.rpc_timeout, call).await? {
            1 => Ok(()),
            _ => Err(BenchError::Unexpected {
                system: NAME,
                op: "release script",
                detail: format!("{} no longer held this grant", held.key),
            }),
        }
    }

    async fn acquire_unrenewed(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> Result<Duration, BenchError> {
        match self.try_once(lock, ttl).await? {
            Some(_) => Ok(ttl),
            None => Err(BenchError::Unexpected {
                system: NAME,
                op: "acquire script",
                detail: format!("the fresh lock {lock:?} was taken"),
            }),
        }
    }

    async fn ping(&mut self) -> Result<(), BenchError> {
        let call = async {
            redis::cmd("PING")
                .query_async::<String>(&mut self.conn)
                .await
                .map_err(|e| BenchError::redis("PING", e))
        };
        within(NAME, "PING", self.rpc_timeout, call).await?;
        Ok(())
    }

    async fn close(self) -> Result<(), BenchError> {
        Ok(())
    }
}
