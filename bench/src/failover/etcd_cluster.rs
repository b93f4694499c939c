//! A 3-member etcd cluster under test: the members' command lines, and the probes'
//! client, one gRPC connection per member. Any member serves every call (a follower
//! forwards proposals and lease renewals to the leader), so the client needs no redirect:
//! it tries every member. Locks are taken as the benchmark's etcd driver takes them: `Lock`
//! under a session lease granted before (etcd's `concurrency` package's way).

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::BenchError;
use crate::etcd_api::etcdserverpb::lease_client::LeaseClient;
use crate::etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcd_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, StatusRequest, StatusResponse,
};
use crate::etcd_api::v3lockpb::lock_client::LockClient;
use crate::etcd_api::v3lockpb::LockRequest;
use crate::failover::members::{data_dir, MemberCommand, PortPicker, CLUSTER_SIZE};
use crate::failover::probe::{Attempt, ClusterClient};

const NAME: &str = "etcd";

/// The TTL of the probes' leases, in seconds (long enough to outlive any failover
/// measured).
const LEASE_TTL_SECS: i64 = 30;

/// The raft timing every member runs with.
#[derive(Clone, Copy, Debug)]
pub struct EtcdTiming {
    /// `--heartbeat-interval`.
    pub heartbeat: Duration,
    /// `--election-timeout` (etcd randomizes each timeout in `[it, 2 x it)`).
    pub election_timeout: Duration,
}

/// Each member's command line, and the client endpoints (`http://host:port`) by member.
pub fn commands(
    etcd: &Path,
    dir: &Path,
    timing: EtcdTiming,
    ports: &mut PortPicker,
) -> Result<(Vec<MemberCommand>, Vec<String>), BenchError> {
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CLUSTER_SIZE {
        peers.push(format!("http://127.0.0.1:{}", ports.pick()?));
        clients.push(format!("http://127.0.0.1:{}", ports.pick()?));
    }
    let initial_cluster = (0..CLUSTER_SIZE)
        .map(|i| format!("m{}={}", i + 1, peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let commands = (0..CLUSTER_SIZE)
        .map(|i| MemberCommand {
            program: etcd.to_path_buf(),
            args: vec![
                "--name".to_string(),
                format!("m{}", i + 1),
                "--data-dir".to_string(),
                data_dir(dir, NAME, i).to_string_lossy().into_owned(),
                "--listen-client-urls".to_string(),
                clients[i].clone(),
                "--advertise-client-urls".to_string(),
                clients[i].clone(),
                "--listen-peer-urls".to_string(),
                peers[i].clone(),
                "--initial-advertise-peer-urls".to_string(),
                peers[i].clone(),
                "--initial-cluster".to_string(),
                initial_cluster.clone(),
                "--initial-cluster-state".to_string(),
                "new".to_string(),
                "--heartbeat-interval".to_string(),
                timing.heartbeat.as_millis().to_string(),
                "--election-timeout".to_string(),
                timing.election_timeout.as_millis().to_string(),
                "--logger".to_string(),
                "zap".to_string(),
                "--log-level".to_string(),
                "warn".to_string(),
            ],
            env: Vec::new(),
            log: dir.join(format!("{NAME}-{}.log", i + 1)),
        })
        .collect();
    Ok((commands, clients))
}

/// The probes' client: one connection per member.
pub struct EtcdCluster {
    /// Each member's channel, lazily connected.
    channels: Vec<Channel>,
    /// Each member's etcd member id, as its last `Status` said (0: not known yet).
    member_ids: Mutex<Vec<u64>>,
}

/// What the probes hold across a kill: a lease to renew, and the session lease the
/// grants are taken under.
pub struct EtcdHeld {
    /// The lease the renewal probe renews.
    renewed: i64,
    /// The lease every `Lock` of the grant probe is taken under.
    session: i64,
}

impl EtcdCluster {
    /// Clients of the members at `endpoints`, each call bounded by `rpc_timeout`.
    pub fn new(endpoints: &[String], rpc_timeout: Duration) -> Result<EtcdCluster, BenchError> {
        let channels = endpoints
            .iter()
            .map(|endpoint| {
                let channel =
                    Endpoint::from_shared(endpoint.clone()).map_err(|e| BenchError::Connect {
                        system: NAME,
                        endpoint: endpoint.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(channel
                    .tcp_nodelay(true)
                    .connect_timeout(rpc_timeout)
                    .timeout(rpc_timeout)
                    .connect_lazy())
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        Ok(EtcdCluster {
            channels,
            member_ids: Mutex::new(vec![0; CLUSTER_SIZE]),
        })
    }

    async fn status(&self, member: usize) -> Result<StatusResponse, Status> {
        let mut maintenance = MaintenanceClient::new(self.channels[member].clone());
        Ok(maintenance.status(StatusRequest {}).await?.into_inner())
    }

    async fn grant(&self, member: usize) -> Result<i64, BenchError> {
        let mut lease = LeaseClient::new(self.channels[member].clone());
        let request = LeaseGrantRequest {
            ttl: LEASE_TTL_SECS,
            id: 0,
        };
        let granted = lease
            .lease_grant(request)
            .await
            .map_err(|status| BenchError::rpc(NAME, "LeaseGrant", status))?
            .into_inner();
        if !granted.error.is_empty() || granted.ttl <= 0 {
            return Err(BenchError::Unexpected {
                system: NAME,
                op: "LeaseGrant",
                detail: format!("error {:?}, ttl {}", granted.error, granted.ttl),
            });
        }
        Ok(granted.id)
    }

    /// What a refusal means to a probe: try again (no leader, leader changed,
    /// unreachable), or never.
    fn refused(op: &str, status: &Status) -> Attempt {
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                Attempt::Retry
            }
            _ => Attempt::Lost(format!("{op}: {status}")),
        }
    }
}

impl ClusterClient for EtcdCluster {
    type Held = EtcdHeld;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn whole_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for member in 0..CLUSTER_SIZE {
            let status = self.status(member).await.ok()?;
            ids.push(status.header.map_or(0, |header| header.member_id));
            leaders.push(status.leader);
        }
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|l| *l != leader) {
            return None;
        }
        let index = ids.iter().position(|id| *id == leader)?;
        *self
            .member_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ids;
        Some(index)
    }

    async fn hold(&self, leader: usize, _kill: usize) -> Result<EtcdHeld, BenchError> {
        let held = EtcdHeld {
            renewed: self.grant(leader).await?,
            session: self.grant(leader).await?,
        };
        match self.renew_once(leader, &held).await {
            Attempt::Done => Ok(held),
            other => Err(BenchError::Unexpected {
                system: NAME,
                op: "LeaseKeepAlive",
                detail: format!("the held lease's first renewal answered {other:?}"),
            }),
        }
    }

    async fn leader_known_once(&self, member: usize, killed: usize) -> Attempt {
        let killed_id = self
            .member_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(killed)
            .copied()
            .unwrap_or(0);
        match self.status(member).await {
            Ok(status) if status.leader != 0 && status.leader != killed_id => Attempt::Done,
            _ => Attempt::Retry,
        }
    }

    async fn grant_once(&self, member: usize, held: &EtcdHeld, lock: String) -> Attempt {
        let mut client = LockClient::new(self.channels[member].clone());
        let request = LockRequest {
            name: lock.into_bytes(),
            lease: held.session,
        };
        match client.lock(request).await {
            Ok(_) => Attempt::Done,
            Err(status) => Self::refused("Lock", &status),
        }
    }

    async fn renew_once(&self, member: usize, held: &EtcdHeld) -> Attempt {
        let mut lease = LeaseClient::new(self.channels[member].clone());
        // The request stream stays open until the answer came: a stream that ended could
        // be closed by the server before it answers.
        let requests = futures::stream::iter([LeaseKeepAliveRequest { id: held.renewed }])
            .chain(futures::stream::pending());
        let mut answers = match lease.lease_keep_alive(requests).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Self::refused("LeaseKeepAlive", &status),
        };
        match answers.message().await {
            Ok(Some(answer)) if answer.ttl > 0 => Attempt::Done,
            Ok(Some(answer)) => Attempt::Lost(format!(
                "LeaseKeepAlive answered TTL {} (the lease is gone)",
                answer.ttl
            )),
            Ok(None) => Attempt::Retry,
            Err(status) => Self::refused("LeaseKeepAlive", &status),
        }
    }
}
