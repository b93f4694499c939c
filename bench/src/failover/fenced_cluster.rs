//! A 3-member fenced cluster under test: the members' command lines, and the probes'
//! client, one gRPC connection per member (reconnected by tonic after a restart). A
//! member that does not lead refuses with `UNAVAILABLE` and `fenced-error: not-leader`,
//! naming the leader in `fenced-leader` when it knows it.

use std::path::Path;
use std::time::Duration;

use fenced_proto::metadata::{ERROR_CODE, LEADER, NOT_LEADER_CODE};
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::renew_response::Outcome;
use fenced_proto::v1::{AcquireRequest, DescribeRequest, RenewRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::BenchError;
use crate::failover::members::{data_dir, MemberCommand, PortPicker, CLUSTER_SIZE};
use crate::failover::probe::{Attempt, ClusterClient};

const NAME: &str = "fenced";

/// The holder name of the probes' grants.
const HOLDER: &str = "fenced-failover";

/// The TTL of the probes' grants (long enough to outlive any failover measured).
const GRANT_TTL: Duration = Duration::from_secs(30);

/// The raft timing every member runs with.
#[derive(Clone, Copy, Debug)]
pub struct FencedTiming {
    /// `--heartbeat-ms`.
    pub heartbeat: Duration,
    /// `--election-timeout-ms` (the shortest; the longest is twice it).
    pub election_timeout: Duration,
}

/// Each member's command line, and the client addresses (`host:port`) by member.
pub fn commands(
    fenced: &Path,
    dir: &Path,
    timing: FencedTiming,
    ports: &mut PortPicker,
) -> Result<(Vec<MemberCommand>, Vec<String>), BenchError> {
    let mut raft = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CLUSTER_SIZE {
        raft.push(format!("127.0.0.1:{}", ports.pick()?));
        clients.push(format!("127.0.0.1:{}", ports.pick()?));
    }
    let members = (0..CLUSTER_SIZE)
        .map(|i| format!("{}={}/{}", i + 1, raft[i], clients[i]))
        .collect::<Vec<_>>()
        .join(",");
    let commands = (0..CLUSTER_SIZE)
        .map(|i| MemberCommand {
            program: fenced.to_path_buf(),
            args: vec![
                "--node-id".to_string(),
                (i + 1).to_string(),
                "--raft-listen".to_string(),
                raft[i].clone(),
                "--members".to_string(),
                members.clone(),
                "--listen".to_string(),
                clients[i].clone(),
                "--data-dir".to_string(),
                data_dir(dir, NAME, i).to_string_lossy().into_owned(),
                "--heartbeat-ms".to_string(),
                timing.heartbeat.as_millis().to_string(),
                "--election-timeout-ms".to_string(),
                timing.election_timeout.as_millis().to_string(),
            ],
            // openraft logs every failed attempt to reach the killed member; fenced's own
            // messages (promotions, demotions) stay.
            env: vec![("RUST_LOG".to_string(), "info,openraft=off".to_string())],
            log: dir.join(format!("{NAME}-{}.log", i + 1)),
        })
        .collect();
    Ok((commands, clients))
}

/// The probes' client: one connection per member.
pub struct FencedCluster {
    /// Each member's client address (`host:port`).
    addrs: Vec<String>,
    /// Each member's client, lazily connected.
    clients: Vec<LockServiceClient<Channel>>,
}

/// What the probes hold across a kill: a lease holding one lock.
pub struct FencedHeld {
    /// The lease's id.
    lease_id: String,
}

impl FencedCluster {
    /// Clients of the members at `addrs`, each call bounded by `rpc_timeout`.
    pub fn new(addrs: Vec<String>, rpc_timeout: Duration) -> Result<FencedCluster, BenchError> {
        let clients = addrs
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| {
                    BenchError::Connect {
                        system: NAME,
                        endpoint: addr.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let channel = endpoint
                    .tcp_nodelay(true)
                    .connect_timeout(rpc_timeout)
                    .timeout(rpc_timeout)
                    .connect_lazy();
                Ok(LockServiceClient::new(channel))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        Ok(FencedCluster { addrs, clients })
    }

    /// Whether `member` leads and serves (answers a `Describe`); else the leader its
    /// refusal names, if any.
    async fn leads(&self, member: usize) -> Result<(), Option<String>> {
        let mut client = self.clients[member].clone();
        let request = DescribeRequest {
            lock: "failover/probe".to_string(),
        };
        match client.describe(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(named_leader(&status)),
        }
    }

    /// What a refusal means to a probe: try again (no leader, not this one, unreachable),
    /// or never.
    fn refused(op: &str, status: &Status) -> Attempt {
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                Attempt::Retry
            }
            _ => Attempt::Lost(format!("{op}: {status}")),
        }
    }
}

/// The leader a not-leader refusal names, if it is one and names one.
fn named_leader(status: &Status) -> Option<String> {
    let code = status.metadata().get(ERROR_CODE)?.to_str().ok()?;
    if status.code() != Code::Unavailable || code != NOT_LEADER_CODE {
        return None;
    }
    Some(status.metadata().get(LEADER)?.to_str().ok()?.to_string())
}

impl ClusterClient for FencedCluster {
    type Held = FencedHeld;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn whole_leader(&self) -> Option<usize> {
        let mut leader = None;
        let mut named = Vec::new();
        for member in 0..CLUSTER_SIZE {
            match self.leads(member).await {
                Ok(()) if leader.is_none() => leader = Some(member),
                Ok(()) => return None,
                Err(Some(addr)) => named.push(addr),
                Err(None) => return None,
            }
        }
        let leader = leader?;
        named
            .iter()
            .all(|addr| *addr == self.addrs[leader])
            .then_some(leader)
    }

    async fn hold(&self, leader: usize, kill: usize) -> Result<FencedHeld, BenchError> {
        let mut client = self.clients[leader].clone();
        let request = AcquireRequest {
            lock: format!("failover/{kill}/held"),
            holder: HOLDER.to_string(),
            ttl_ms: u64::try_from(GRANT_TTL.as_millis()).unwrap_or(u64::MAX),
            ..AcquireRequest::default()
        };
        let granted = client
            .acquire(request)
            .await
            .map_err(|status| BenchError::rpc(NAME, "Acquire", status))?
            .into_inner();
        let held = FencedHeld {
            lease_id: granted.lease_id,
        };
        match self.renew_once(leader, &held).await {
            Attempt::Done => Ok(held),
            other => Err(BenchError::Unexpected {
                system: NAME,
                op: "Renew",
                detail: format!("the held lease's first renewal answered {other:?}"),
            }),
        }
    }

    async fn leader_known_once(&self, member: usize, killed: usize) -> Attempt {
        match self.leads(member).await {
            Ok(()) => Attempt::Done,
            Err(Some(addr)) if addr != self.addrs[killed] => Attempt::Done,
            Err(_) => Attempt::Retry,
        }
    }

    async fn grant_once(&self, member: usize, _held: &FencedHeld, lock: String) -> Attempt {
        let mut client = self.clients[member].clone();
        let request = AcquireRequest {
            lock,
            holder: HOLDER.to_string(),
            ttl_ms: u64::try_from(GRANT_TTL.as_millis()).unwrap_or(u64::MAX),
            ..AcquireRequest::default()
        };
        match client.acquire(request).await {
            Ok(_) => Attempt::Done,
            Err(status) => Self::refused("Acquire", &status),
        }
    }

    async fn renew_once(&self, member: usize, held: &FencedHeld) -> Attempt {
        let mut client = self.clients[member].clone();
        let request = RenewRequest {
            lease_id: held.lease_id.clone(),
        };
        match client.renew(request).await {
            Ok(answer) => match answer.into_inner().outcome() {
                Outcome::Renewed => Attempt::Done,
                other => Attempt::Lost(format!("Renew answered {other:?}")),
            },
            Err(status) => Self::refused("Renew", &status),
        }
    }
}
