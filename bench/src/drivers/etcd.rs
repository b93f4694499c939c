//! etcd through its Lease and Lock services, used the way etcd's own `concurrency` package
//! uses them: each client grants one session lease when it connects and keeps it alive in
//! the background (a KeepAlive stream at TTL/3); each grant is one `Lock` on that lease
//! and each release one `Unlock`. That spares etcd a lease grant and a revoke per cycle,
//! the most favourable way to run it. etcd's `Lock` cannot try once: it always queues,
//! so "try once" is a wait bounded by the call timeout.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{IntervalStream, ReceiverStream};
use tonic::transport::Channel;

use crate::config::MeasuredServer;
use crate::driver::{within, KeepAliveStream, LeaseConn, LeaseSystem, LockClient, LockSystem};
use crate::drivers::grpc_channel;
use crate::error::BenchError;
use crate::etcd_api::etcdserverpb::lease_client::LeaseClient;
use crate::etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcd_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, StatusRequest,
};
use crate::etcd_api::v3lockpb::lock_client::LockClient as EtcdLockClient;
use crate::etcd_api::v3lockpb::{LockRequest, UnlockRequest};

const NAME: &str = "etcd";

/// An etcd server.
#[derive(Clone, Debug)]
pub struct EtcdSystem {
    /// Its endpoint and process id.
    target: MeasuredServer,
    /// The longest a call may take beyond any waiting it asked for.
    rpc_timeout: Duration,
}

impl EtcdSystem {
    /// The etcd server at `target`.
    pub fn new(target: MeasuredServer, rpc_timeout: Duration) -> EtcdSystem {
        EtcdSystem {
            target,
            rpc_timeout,
        }
    }

    /// Asks the server for its version (`Maintenance.Status`).
    pub async fn version(&self) -> Result<String, BenchError> {
        let conn = self.connect_leases().await?;
        let mut maintenance = MaintenanceClient::new(conn.channel);
        let call = async {
            maintenance
                .status(StatusRequest {})
                .await
                .map_err(|status| BenchError::rpc(NAME, "Status", status))
        };
        Ok(within(NAME, "Status", self.rpc_timeout, call)
            .await?
            .into_inner()
            .version)
    }
}

impl LockSystem for EtcdSystem {
    type Client = EtcdClient;

    fn name(&self) -> &'static str {
        NAME
    }

    fn pid(&self) -> Option<u32> {
        self.target.pid
    }

    fn ping_carrier(&self) -> &'static str {
        "a unary `Maintenance.Status` call"
    }

    async fn connect(&self, ttl: Duration) -> Result<EtcdClient, BenchError> {
        let mut conn = self.connect_leases().await?;
        let (session, granted) = conn.grant(ttl).await?;
        let keepalive = tokio::spawn(keep_session_alive(
            LeaseClient::new(conn.channel.clone()),
            session,
            granted / 3,
        ));
        Ok(EtcdClient {
            conn,
            session,
            keepalive,
        })
    }
}

/// Renews the session lease `id` every `every` until the task is aborted.
async fn keep_session_alive(mut lease: LeaseClient<Channel>, id: i64, every: Duration) {
    let ticks = IntervalStream::new(tokio::time::interval(every));
    let requests = ticks.map(move |_| LeaseKeepAliveRequest { id });
    if let Ok(response) = lease.lease_keep_alive(requests).await {
        let mut answers = response.into_inner();
        while let Ok(Some(_)) = answers.message().await {}
    }
}

/// One etcd client: a connection of its own and a session lease kept alive on it.
pub struct EtcdClient {
    /// The connection.
    conn: EtcdLeases,
    /// The session lease every `Lock` of this client holds.
    session: i64,
    /// Renews the session lease; aborted on close or drop.
    keepalive: JoinHandle<()>,
}

/// A grant: etcd's ownership key (`name/lease-in-hex`), which `Unlock` deletes.
pub struct EtcdHeld {
    /// The key.
    key: Vec<u8>,
}

impl LockClient for EtcdClient {
    type Held = EtcdHeld;

    async fn acquire(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> Result<Option<EtcdHeld>, BenchError> {
        let bounded = if wait.is_zero() {
            self.conn.rpc_timeout
        } else {
            wait
        };
        let call = self.conn.lock(lock, self.session);
        match tokio::time::timeout(bounded, call).await {
            Ok(key) => Ok(Some(EtcdHeld { key: key? })),
            // Dropping the call cancels it; etcd then deletes the waiter's key.
            Err(_) if !wait.is_zero() => Ok(None),
            Err(_) => Err(BenchError::Timeout {
                system: NAME,
                op: "Lock",
                after: bounded,
            }),
        }
    }

    async fn release(&mut self, held: EtcdHeld) -> Result<(), BenchError> {
        let request = UnlockRequest { key: held.key };
        let lock = &mut self.conn.lock;
        let call = async {
            lock.unlock(request)
                .await
                .map_err(|status| BenchError::rpc(NAME, "Unlock", status))
        };
        within(NAME, "Unlock", self.conn.rpc_timeout, call).await?;
        Ok(())
    }

    async fn acquire_unrenewed(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> Result<Duration, BenchError> {
        let (lease, granted) = self.conn.grant(ttl).await?;
        within(
            NAME,
            "Lock",
            self.conn.rpc_timeout,
            self.conn.lock(lock, lease),
        )
        .await?;
        Ok(granted)
    }

    async fn ping(&mut self) -> Result<(), BenchError> {
        let mut maintenance = MaintenanceClient::new(self.conn.channel.clone());
        let call = async {
            maintenance
                .status(StatusRequest {})
                .await
                .map_err(|status| BenchError::rpc(NAME, "Status", status))
        };
        within(NAME, "Status", self.conn.rpc_timeout, call).await?;
        Ok(())
    }

    async fn close(mut self) -> Result<(), BenchError> {
        self.keepalive.abort();
        let session = self.session;
        self.conn.revoke(&session).await
    }
}

impl Drop for EtcdClient {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl LeaseSystem for EtcdSystem {
    type Conn = EtcdLeases;

    async fn connect_leases(&self) -> Result<EtcdLeases, BenchError> {
        let channel = grpc_channel(NAME, &self.target.endpoint, self.rpc_timeout, None).await?;
        Ok(EtcdLeases {
            lease: LeaseClient::new(channel.clone()),
            lock: EtcdLockClient::new(channel.clone()),
            channel,
            rpc_timeout: self.rpc_timeout,
        })
    }
}

/// Lease and lock calls on one etcd connection (clones share it).
#[derive(Clone)]
pub struct EtcdLeases {
    /// The connection itself.
    channel: Channel,
    /// The Lease service.
    lease: LeaseClient<Channel>,
    /// The Lock service.
    lock: EtcdLockClient<Channel>,
    /// The longest a call may take.
    rpc_timeout: Duration,
}

impl EtcdLeases {
    /// Grants a lease of `ttl` (rounded up to whole seconds); answers its id and the TTL
    /// etcd granted (which it raises to its minimum).
    async fn grant(&mut self, ttl: Duration) -> Result<(i64, Duration), BenchError> {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let request = LeaseGrantRequest {
            ttl: i64::try_from(seconds.max(1)).unwrap_or(i64::MAX),
            id: 0,
        };
        let lease = &mut self.lease;
        let call = async {
            lease
                .lease_grant(request)
                .await
                .map_err(|status| BenchError::rpc(NAME, "LeaseGrant", status))
        };
        let response = within(NAME, "LeaseGrant", self.rpc_timeout, call)
            .await?
            .into_inner();
        if !response.error.is_empty() || response.ttl <= 0 {
            return Err(BenchError::Unexpected {
                system: NAME,
                op: "LeaseGrant",
                detail: format!("error {:?}, ttl {}", response.error, response.ttl),
            });
        }
        let granted = Duration::from_secs(u64::try_from(response.ttl).unwrap_or(0));
        Ok((response.id, granted))
    }

    /// Waits (without a bound of its own) until `lease` holds `lock`; answers the key.
    async fn lock(&mut self, lock: &str, lease: i64) -> Result<Vec<u8>, BenchError> {
        let request = LockRequest {
            name: lock.as_bytes().to_vec(),
            lease,
        };
        let response = self
            .lock
            .lock(request)
            .await
            .map_err(|status| BenchError::rpc(NAME, "Lock", status))?;
        Ok(response.into_inner().key)
    }
}

impl LeaseConn for EtcdLeases {
    type Lease = i64;

    async fn grant_with_lock(&mut self, lock: &str, ttl: Duration) -> Result<i64, BenchError> {
        let (lease, _) = self.grant(ttl).await?;
        let rpc_timeout = self.rpc_timeout;
        within(NAME, "Lock", rpc_timeout, self.lock(lock, lease)).await?;
        Ok(lease)
    }

    async fn add_lock(
        &mut self,
        lease: &i64,
        lock: &str,
        _ttl: Duration,
    ) -> Result<(), BenchError> {
        let rpc_timeout = self.rpc_timeout;
        within(NAME, "Lock", rpc_timeout, self.lock(lock, *lease)).await?;
        Ok(())
    }

    async fn revoke(&mut self, lease: &i64) -> Result<(), BenchError> {
        let request = LeaseRevokeRequest { id: *lease };
        let client = &mut self.lease;
        let call = async {
            client
                .lease_revoke(request)
                .await
                .map_err(|status| BenchError::rpc(NAME, "LeaseRevoke", status))
        };
        within(NAME, "LeaseRevoke", self.rpc_timeout, call).await?;
        Ok(())
    }

    async fn keepalive(&mut self) -> Result<KeepAliveStream<i64>, BenchError> {
        let (renew, leases) = mpsc::channel::<i64>(1024);
        let requests = ReceiverStream::new(leases).map(|id| LeaseKeepAliveRequest { id });
        let mut client = self.lease.clone();
        // etcd sends no response headers before its first answer, so the call must not
        // be awaited before renewals are sent: it is made when the answers are polled.
        let answers = futures::stream::once(async move { client.lease_keep_alive(requests).await })
            .flat_map(|opened| match opened {
                Ok(response) => response
                    .into_inner()
                    .map(|answer| match answer {
                        Ok(answer) => Ok(answer.ttl > 0),
                        Err(status) => Err(BenchError::rpc(NAME, "LeaseKeepAlive", status)),
                    })
                    .boxed(),
                Err(status) => futures::stream::once(async {
                    Err(BenchError::rpc(NAME, "LeaseKeepAlive", status))
                })
                .boxed(),
            })
            .boxed();
        Ok(KeepAliveStream { renew, answers })
    }
}
