//! [`TestCluster`]: three real `fenced` processes as one replicated cluster on loopback
//! ports, each member with its own data directory, and [`Router`], a raw gRPC caller that
//! follows the not-leader refusal to whoever leads.
//!
//! Members are [`ServerProcess`]es, so a test kills one with SIGKILL, pauses it with
//! SIGSTOP or restarts it on its data directory and ports. The ports are picked before the
//! members start (each member's list names them all), by binding port 0 and letting go.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fenced_proto::metadata::{ERROR_CODE, LEADER, NOT_LEADER_CODE};
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::{self as pb};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::process::ServerProcess;

/// How long the tests wait for the cluster to elect a leader: long, so that only a cluster
/// that does not elect one fails.
pub const ELECTION_PATIENCE: Duration = Duration::from_secs(30);

/// An acquire of `lock` that creates a lease of `ttl_ms` with an id chosen here, as the
/// SDK does, so that [`Router`] may send it again after a leader change without making a
/// second lease.
pub fn new_lease_acquire(lock: &str, holder: &str, ttl_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: holder.to_string(),
        ttl_ms,
        new_lease_id: fenced_types::LeaseId::random().to_string(),
        ..pb::AcquireRequest::default()
    }
}

/// A cluster of three `fenced` members. Member `i` (1-based) is `members[i - 1]`.
pub struct TestCluster {
    /// The running (or killed) members.
    members: Vec<ServerProcess>,
    /// Each member's client address.
    client_addrs: Vec<SocketAddr>,
    /// Each member's raft address.
    raft_addrs: Vec<SocketAddr>,
}

/// A free loopback address that its member can listen on again after a restart.
fn free_addr() -> SocketAddr {
    crate::ports::restartable_addr()
}

impl TestCluster {
    /// Starts members 1, 2 and 3 of a new cluster, with `extra_args` for each (e.g.
    /// `--no-fdatasync`).
    pub fn start(extra_args: &[&str]) -> TestCluster {
        TestCluster::start_with(extra_args, &[])
    }

    /// As [`TestCluster::start`], with `first_only` given to member 1 alone. With
    /// `--seed-from DIR` in it, only member 1 gets the members list: it starts the cluster
    /// alone, seeds it, and adds the others, which wait to be added.
    pub fn start_with(extra_args: &[&str], first_only: &[&str]) -> TestCluster {
        TestCluster::launch(None, extra_args, first_only)
    }

    /// As [`TestCluster::start`], with member `i`'s data directory `base/member-i` (a
    /// filesystem whose power a test cuts, say) instead of a temporary one.
    pub fn start_in(base: &Path, extra_args: &[&str]) -> TestCluster {
        TestCluster::launch(Some(base), extra_args, &[])
    }

    fn launch(base: Option<&Path>, extra_args: &[&str], first_only: &[&str]) -> TestCluster {
        let raft: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let client_addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let members_list = (0..3)
            .map(|i| format!("{}={}/{}", i + 1, raft[i], client_addrs[i]))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..3)
            .map(|i| {
                let id = (i + 1).to_string();
                let raft_listen = raft[i].to_string();
                let seeding = first_only.contains(&"--seed-from");
                let mut args = vec!["--node-id", &id, "--raft-listen", &raft_listen];
                if i == 0 || !seeding {
                    args.extend_from_slice(&["--members", &members_list]);
                }
                args.extend_from_slice(extra_args);
                if i == 0 {
                    args.extend_from_slice(first_only);
                }
                // openraft logs every failed attempt to reach a member that is down (the
                // tests kill members on purpose); fenced's own warnings stay.
                let env = [("RUST_LOG", "warn,openraft=off")];
                match base {
                    Some(base) => ServerProcess::start_listening_in(
                        "fenced",
                        "fenced listening on ",
                        client_addrs[i],
                        base.join(format!("member-{}", i + 1)),
                        &args,
                        &env,
                    ),
                    None => ServerProcess::start_listening(
                        "fenced",
                        "fenced listening on ",
                        client_addrs[i],
                        &args,
                        &env,
                    ),
                }
            })
            .collect();
        TestCluster {
            members,
            client_addrs,
            raft_addrs: raft,
        }
    }

    /// Starts one more member, with the next id, that is in no cluster yet (no
    /// `--members`): it waits to be added (`ClusterService.AddMember`). Returns its id and
    /// its raft and client addresses.
    pub fn start_joining(&mut self, extra_args: &[&str]) -> (u64, SocketAddr, SocketAddr) {
        let id = self.members.len() + 1;
        let (raft, client) = (free_addr(), free_addr());
        let id_text = id.to_string();
        let raft_listen = raft.to_string();
        let mut args = vec!["--node-id", &id_text, "--raft-listen", &raft_listen];
        args.extend_from_slice(extra_args);
        self.members.push(ServerProcess::start_listening(
            "fenced",
            "fenced listening on ",
            client,
            &args,
            &[("RUST_LOG", "warn,openraft=off")],
        ));
        self.client_addrs.push(client);
        self.raft_addrs.push(raft);
        (id as u64, raft, client)
    }

    /// Member `id` (1-based).
    pub fn member(&mut self, id: usize) -> &mut ServerProcess {
        &mut self.members[id - 1]
    }

    /// Every member's `http://` endpoint, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.client_addrs
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect()
    }

    /// Member `id`'s raft address (where its peers send raft messages).
    pub fn raft_addr(&self, id: usize) -> SocketAddr {
        self.raft_addrs[id - 1]
    }

    /// Member `id`'s `http://` endpoint.
    pub fn endpoint(&self, id: usize) -> String {
        format!("http://{}", self.client_addrs[id - 1])
    }

    /// The member that leads now among those running (answers a `List`), waiting up to
    /// [`ELECTION_PATIENCE`] for one; `except` names members not to ask (killed or
    /// paused ones).
    pub async fn leader(&self, except: &[usize]) -> usize {
        match self.leader_within(except, ELECTION_PATIENCE).await {
            Some(id) => id,
            None => panic!("no member (except {except:?}) led within {ELECTION_PATIENCE:?}"),
        }
    }

    /// As [`TestCluster::leader`], waiting at most `within`: `None` if no member led by
    /// then.
    pub async fn leader_within(&self, except: &[usize], within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            for id in 1..=self.members.len() {
                if except.contains(&id) {
                    continue;
                }
                if let Ok(mut client) = connect(&self.endpoint(id)).await {
                    let listed = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.list(pb::ListRequest::default()),
                    )
                    .await;
                    if let Ok(Ok(_)) = listed {
                        return Some(id);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member whose client address is `addr`, if any.
    pub fn member_at(&self, addr: &str) -> Option<usize> {
        self.client_addrs
            .iter()
            .position(|a| a.to_string() == addr)
            .map(|index| index + 1)
    }
}

/// A lock service client on `endpoint`.
pub async fn connect(
    endpoint: &str,
) -> Result<LockServiceClient<Channel>, tonic::transport::Error> {
    connect_channel(endpoint).await.map(LockServiceClient::new)
}

/// A channel to `endpoint`, with short connect and call deadlines (a member that is down
/// or paused must not hold a test up).
pub async fn connect_channel(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Whether `status` is a member's not-leader refusal, and the leader's address if it named
/// one.
pub fn not_leader(status: &Status) -> Option<Option<String>> {
    let code = status.metadata().get(ERROR_CODE)?.to_str().ok()?;
    if status.code() != Code::Unavailable || code != NOT_LEADER_CODE {
        return None;
    }
    Some(
        status
            .metadata()
            .get(LEADER)
            .and_then(|leader| leader.to_str().ok())
            .map(str::to_string),
    )
}

/// Sends calls to whoever leads: follows a not-leader refusal's `fenced-leader`, and on a
/// refusal without one (an election) or a member that does not answer, tries the next
/// endpoint after a short pause, until the call's patience runs out.
pub struct Router {
    /// Every member's endpoint.
    endpoints: Vec<String>,
    /// The endpoint tried first.
    current: String,
    /// Connected channels, by endpoint.
    channels: HashMap<String, Channel>,
    /// How many calls were sent again elsewhere (redirects and retries).
    pub redirects: u64,
}

impl Router {
    /// A router over `endpoints`, starting with the first.
    pub fn new(endpoints: Vec<String>) -> Router {
        let current = endpoints.first().cloned().unwrap_or_default();
        Router {
            endpoints,
            current,
            channels: HashMap::new(),
            redirects: 0,
        }
    }

    /// The endpoint the next call goes to first.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Runs `op` with a lock service client on the leader: its answer, or the first
    /// refusal that is not a not-leader one, or (after `within`) the last refusal seen.
    pub async fn call<T, F, Fut>(&mut self, within: Duration, op: F) -> Result<T, Status>
    where
        F: Fn(LockServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_on(within, |channel| op(LockServiceClient::new(channel)))
            .await
    }

    /// `Acquire` on the leader, as [`Router::call`] sends it (again after a not-leader
    /// refusal: give the request a `new_lease_id` so that a resend finds its own grant).
    pub async fn acquire(
        &mut self,
        within: Duration,
        request: &pb::AcquireRequest,
    ) -> Result<pb::AcquireResponse, Status> {
        self.call(within, |mut client| {
            let request = request.clone();
            async move {
                client
                    .acquire(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// `Describe` of `lock` on the leader.
    pub async fn describe(&mut self, within: Duration, lock: &str) -> Result<pb::LockInfo, Status> {
        let request = pb::DescribeRequest {
            lock: lock.to_string(),
        };
        self.call(within, |mut client| {
            let request = request.clone();
            async move {
                client
                    .describe(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// As [`Router::call`], with the leader's channel, for any service on it (e.g. the
    /// `ClusterService`).
    pub async fn call_on<T, F, Fut>(&mut self, within: Duration, op: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + within;
        loop {
            let endpoint = self.current.clone();
            let outcome = match self.channel(&endpoint).await {
                Ok(channel) => op(channel).await,
                Err(error) => Err(Status::unavailable(format!(
                    "cannot connect to {endpoint}: {error}"
                ))),
            };
            let status = match outcome {
                Ok(answer) => return Ok(answer),
                Err(status) => status,
            };
            let next = match not_leader(&status) {
                Some(Some(leader)) => Some(format!("http://{leader}")),
                Some(None) => None,
                None if status.code() == Code::Unavailable
                    || status.code() == Code::Unknown
                    || status.code() == Code::Cancelled
                    || status.code() == Code::DeadlineExceeded =>
                {
                    self.channels.remove(&endpoint);
                    None
                }
                None => return Err(status),
            };
            if Instant::now() > deadline {
                return Err(status);
            }
            self.redirects += 1;
            self.current = match next {
                Some(leader) => leader,
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let index = self
                        .endpoints
                        .iter()
                        .position(|e| *e == endpoint)
                        .map_or(0, |i| i + 1);
                    self.endpoints[index % self.endpoints.len()].clone()
                }
            };
        }
    }

    async fn channel(&mut self, endpoint: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(channel) = self.channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = connect_channel(endpoint).await?;
        self.channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }
}
