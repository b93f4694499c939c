//! [`Network`]: how a node sends raft messages to its peers, openraft's
//! `RaftNetworkFactory`, and [`PeerClient`], its `RaftNetwork` to one peer: the service of
//! `fenced/raft/v1/raft.proto` over a tonic channel to the peer's `raft_addr`.
//!
//! Each request is openraft's own message serialized with postcard; the
//! response carries the peer's raft core's result, so a refusal by the peer's core (a
//! fatal error, a snapshot mismatch) comes back as openraft's `RemoteError`, apart from
//! transport failures.
//!
//! How failures map to openraft's `RPCError`, and why it matters: openraft pauses
//! replication to a peer only on `Unreachable` (for [`PeerClient::backoff`], constant
//! [`UNREACHABLE_BACKOFF`]); after a `Timeout` or a `NetworkError` it resends at once. A
//! peer whose address takes connections and closes them gets thousands of attempts a
//! second that way (`the_leader_backs_off_from_a_member_that_is_down` measures it), so
//! every failure that can last is `Unreachable`:
//! - `Unreachable`: the peer cannot be connected to, the connection broke or was closed
//!   (tonic's `UNAVAILABLE`, `CANCELLED` other than a deadline, or any status caused by a
//!   transport error), its
//!   address does not parse, [`Links`] cut the link, or the peer answers with something
//!   this node cannot use: another error status (a peer of another version, say), a
//!   response that does not decode, a single entry above [`MAX_RAFT_MESSAGE_BYTES`].
//! - `Timeout`: no answer within the `hard_ttl` openraft gives the call (also the request's
//!   gRPC deadline, so the peer drops work nobody waits for), or the peer said
//!   `DEADLINE_EXCEEDED`, or tonic's own "deadline passed" (`CANCELLED`, "Timeout
//!   expired"). It lasts the whole deadline, so it cannot spin; and it must not pause
//!   replication, or a follower merely slower than a heartbeat's deadline would hear
//!   nothing for the backoff and depose a healthy leader.
//! - `PayloadTooLarge`: an `AppendEntries` of more than one entry that encodes above
//!   [`MAX_RAFT_MESSAGE_BYTES`]; openraft retries it at once with fewer entries.
//! - `RemoteError`: the peer's raft core refused the request (it is stopping, say).
//!
//! A peer that lost log it acknowledged to this leader is `Unreachable` too
//! ([`PeerError::LostLog`]). A follower never loses an entry that matches its leader's
//! log, so a peer that says its log does not reach an index it already acknowledged under
//! the same vote (term and leader) lost its disk or was restored from an old copy.
//! openraft's leader takes that as a broken invariant (a debug assertion that stops its
//! core; a release build goes on believing the peer holds what it lost), so the client
//! remembers what each peer acknowledged under the current vote and answers
//! `Unreachable` instead: the leader carries on with the others, and the peer stays out
//! until the leader's log is purged past what it lost (then it is sent a snapshot, as any
//! node that fell behind) or it is removed from the membership and added again as a new
//! learner.
//!
//! Channels connect lazily (the first call connects, a broken connection reconnects on the
//! next call), one per peer, made by `new_client` when openraft starts replicating to or
//! asking a vote of that peer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::peer_auth::PeerSecret;
use tonic::Code;

use fenced_proto::raft::v1::raft_service_client::RaftServiceClient;
use fenced_proto::raft::v1::RaftRequest;

use crate::cluster::types::{ClusterNode, LogId, NodeId, TypeConfig};

/// The largest raft request or response, encoded: the decoding limit of both ends.
///
/// 16 MiB holds a snapshot chunk (openraft's `snapshot_max_chunk_size`, 3 MiB by default,
/// must stay below it) and an `AppendEntries` of many commit batches; a larger batch of
/// entries is split by openraft on [`PayloadTooLarge`]. A single entry must encode below
/// it, so whatever proposes entries must bound a commit batch's size.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 16 << 20;

/// How long replication to an unreachable peer pauses before the next try (openraft's
/// default): a down peer costs one connection attempt per pause, not one per heartbeat.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(500);

/// The message of tonic's status for a request whose `grpc-timeout` ran out.
const TIMEOUT_EXPIRED: &str = "Timeout expired";

/// How long a connection attempt to a peer may take before the call fails; the call's own
/// deadline (`hard_ttl`) cuts it shorter when that is shorter.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one raft rpc as openraft's network traits return it.
type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, ClusterNode, E>>;

/// The links this node refuses to use, or uses only in part: fault injection for tests (a
/// partition without a proxy). Cheap to clone; every clone shares the same state. No link
/// is touched unless a test touches it.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// What is cut or held, per peer.
    faults: Arc<Mutex<Faults>>,
}

/// The faults [`Links`] injects.
#[derive(Debug, Default)]
struct Faults {
    /// The peers this node does not reach at all.
    cut: BTreeSet<NodeId>,
    /// The peers this node sends no `AppendEntries` to (votes still pass).
    appends_cut: BTreeSet<NodeId>,
    /// Per peer, the newest commit this node tells it of: entries still reach it, but it
    /// learns of no commit past this (as if every later commit notice were lost).
    commit_held: BTreeMap<NodeId, Option<LogId>>,
    /// The peers whose answers this node loses: its rpcs reach them and are acted on,
    /// but each call ends as a `Timeout` at its deadline.
    answers_lost: BTreeSet<NodeId>,
}

impl Links {
    /// Stops sending to `target`: every rpc to it fails as `Unreachable` until healed.
    pub fn cut(&self, target: NodeId) {
        self.faults().cut.insert(target);
    }

    /// Sends to `target` again (undoes every fault on the link).
    pub fn heal(&self, target: NodeId) {
        let mut faults = self.faults();
        faults.cut.remove(&target);
        faults.appends_cut.remove(&target);
        faults.commit_held.remove(&target);
        faults.answers_lost.remove(&target);
    }

    /// Loses `target`'s answers: every rpc to it still reaches it (and it acts on it), but
    /// the call waits out its deadline and fails as a `Timeout`, as if the answer were
    /// dropped on the way back.
    pub fn lose_answers(&self, target: NodeId) {
        self.faults().answers_lost.insert(target);
    }

    /// What happens to an rpc to `target`, read once per call: whether the link is cut,
    /// and whether the answer is lost.
    fn rpc_faults(&self, target: NodeId) -> RpcFaults {
        let faults = self.faults();
        RpcFaults {
            cut: faults.cut.contains(&target),
            answer_lost: faults.answers_lost.contains(&target),
        }
    }

    /// Stops sending `AppendEntries` to `target` (as `Unreachable`); votes still pass, so
    /// an election can end with a leader that cannot replicate.
    pub fn cut_appends(&self, target: NodeId) {
        self.faults().appends_cut.insert(target);
    }

    /// Tells `target` of no commit past `at`: it still receives and acknowledges entries,
    /// but does not learn they are committed, so it does not apply them.
    pub fn hold_commit(&self, target: NodeId, at: Option<LogId>) {
        self.faults().commit_held.insert(target, at);
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // The faults are valid whatever a panicking holder left half done (each insert or
        // remove either happened or not).
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The faults [`Links`] puts on one rpc to a peer.
struct RpcFaults {
    /// The link is cut: the rpc fails as `Unreachable` without being sent.
    cut: bool,
    /// The answer is lost: the rpc is sent, then fails as `Timeout` at its deadline.
    answer_lost: bool,
}

/// A node's raft network: makes a [`PeerClient`] for each peer openraft talks to.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node's id (the sender, in timeout errors).
    me: NodeId,
    /// The links this node refuses to use.
    links: Links,
    /// What each peer acknowledged to this node as leader.
    acks: Acks,
    /// How long replication to an unreachable peer pauses before the next try.
    unreachable_backoff: Duration,
    /// The cluster's secret, sent with every rpc, if the cluster has one.
    secret: Option<PeerSecret>,
}

impl Network {
    /// The network of node `me`, every link up, backing off [`UNREACHABLE_BACKOFF`] from
    /// an unreachable peer.
    pub fn new(me: NodeId) -> Network {
        Network {
            me,
            links: Links::default(),
            acks: Acks::default(),
            unreachable_backoff: UNREACHABLE_BACKOFF,
            secret: None,
        }
    }

    /// The same network, sending `secret` with every rpc ([`crate::cluster::peer_auth`]).
    pub fn with_secret(mut self, secret: Option<PeerSecret>) -> Network {
        self.secret = secret;
        self
    }

    /// The same network, backing off `backoff` from an unreachable peer. A member keeps
    /// it below its shortest election timeout: a peer that comes back (a restart) must
    /// hear from the leader before its own election timer runs out, or it starts an
    /// election and deposes a healthy leader.
    pub fn with_unreachable_backoff(mut self, backoff: Duration) -> Network {
        self.unreachable_backoff = backoff;
        self
    }

    /// The handle that cuts and heals this node's links (tests).
    pub fn links(&self) -> Links {
        self.links.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> PeerClient {
        PeerClient::new(
            self.me,
            target,
            node.clone(),
            self.links.clone(),
            self.acks.clone(),
        )
        .backing_off(self.unreachable_backoff)
        .with_secret(self.secret.clone())
    }
}

/// The newest log id each peer acknowledged holding, to this node as leader under one
/// vote, kept across the per-peer clients openraft makes and drops: what tells a peer
/// that lost its log (see the module documentation).
#[derive(Debug, Clone, Default)]
struct Acks {
    /// Per peer: the vote it acknowledged under, and the newest log id it acknowledged.
    acked: Arc<Mutex<AckedLogs>>,
}

/// Per peer: the vote it acknowledged under, and the newest log id it acknowledged.
type AckedLogs = BTreeMap<NodeId, (Vote<NodeId>, LogId)>;

impl Acks {
    fn map(&self) -> std::sync::MutexGuard<'_, AckedLogs> {
        // Each update is one insert: valid whatever a panicking holder left.
        self.acked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `target` holds the log up to `log_id` under `vote`.
    fn record(&self, target: NodeId, vote: &Vote<NodeId>, log_id: Option<LogId>) {
        let Some(log_id) = log_id else { return };
        let mut acked = self.map();
        match acked.get_mut(&target) {
            Some((seen, newest)) if seen == vote => {
                if log_id > *newest {
                    *newest = log_id;
                }
            }
            _ => {
                acked.insert(target, (*vote, log_id));
            }
        }
    }

    /// What `target` acknowledged under `vote`, if anything.
    fn acked(&self, target: NodeId, vote: &Vote<NodeId>) -> Option<LogId> {
        self.map()
            .get(&target)
            .filter(|(seen, _)| seen == vote)
            .map(|(_, newest)| *newest)
    }
}

/// Why a raft rpc to a peer failed on the way (the evidence inside openraft's
/// `Unreachable`).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer's raft address is not a usable URI.
    #[error("node {target}'s raft address {addr:?} is not usable: {problem}")]
    BadAddress {
        /// The peer.
        target: NodeId,
        /// Its configured `raft_addr`.
        addr: String,
        /// Why it does not parse.
        problem: String,
    },
    /// The link to the peer is cut ([`Links`]).
    #[error("the link from node {from} to node {target} is cut")]
    Cut {
        /// This node.
        from: NodeId,
        /// The peer.
        target: NodeId,
    },
    /// The peer answered the rpc with an error status, or the transport failed.
    #[error("{rpc} to node {target} at {addr} failed: {code:?}: {message}")]
    Status {
        /// Which rpc.
        rpc: RPCTypes,
        /// The peer.
        target: NodeId,
        /// Its raft address.
        addr: String,
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// A request or response that postcard cannot encode or decode.
    #[error("{rpc} to node {target}: cannot {doing}: {problem}")]
    Codec {
        /// Which rpc.
        rpc: RPCTypes,
        /// The peer.
        target: NodeId,
        /// "encode the request" or "decode the response".
        doing: &'static str,
        /// postcard's error.
        problem: String,
    },
    /// The peer no longer holds log it acknowledged to this leader.
    #[error(
        "node {target} lost its log: it acknowledged {acked} to this leader and now lacks \
         {asked}; remove it from the membership and add it again as a new learner"
    )]
    LostLog {
        /// The peer.
        target: NodeId,
        /// The newest log id it acknowledged.
        acked: LogId,
        /// The log id it now says it lacks.
        asked: LogId,
    },
    /// A request above [`MAX_RAFT_MESSAGE_BYTES`] that cannot be split.
    #[error("{rpc} to node {target} encodes to {bytes} bytes, above the {max}-byte bound")]
    TooLarge {
        /// Which rpc.
        rpc: RPCTypes,
        /// The peer.
        target: NodeId,
        /// The encoded size.
        bytes: usize,
        /// [`MAX_RAFT_MESSAGE_BYTES`].
        max: usize,
    },
}

/// The raft network to one peer: a lazily connected tonic channel to its `raft_addr`.
pub struct PeerClient {
    /// This node.
    me: NodeId,
    /// The peer.
    target: NodeId,
    /// The peer's addresses (for openraft's `RemoteError`).
    node: ClusterNode,
    /// The client over the peer's channel, or why the address is unusable.
    client: Result<RaftServiceClient<Channel>, PeerError>,
    /// The links this node refuses to use.
    links: Links,
    /// What each peer acknowledged to this node as leader.
    acks: Acks,
    /// How long replication to this peer pauses after it was unreachable.
    unreachable_backoff: Duration,
    /// The cluster's secret, sent with every rpc, if the cluster has one.
    secret: Option<PeerSecret>,
}

impl PeerClient {
    /// A client of `target` at `node.raft_addr`; connects on its first rpc.
    fn new(me: NodeId, target: NodeId, node: ClusterNode, links: Links, acks: Acks) -> PeerClient {
        let client = Endpoint::from_shared(format!("http://{}", node.raft_addr))
            .map(|endpoint| {
                let channel = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            })
            .map_err(|error| PeerError::BadAddress {
                target,
                addr: node.raft_addr.clone(),
                problem: error.to_string(),
            });
        PeerClient {
            me,
            target,
            node,
            client,
            links,
            acks,
            unreachable_backoff: UNREACHABLE_BACKOFF,
            secret: None,
        }
    }

    /// The same client, sending `secret` with every rpc.
    fn with_secret(mut self, secret: Option<PeerSecret>) -> PeerClient {
        self.secret = secret;
        self
    }

    /// The same client, pausing `backoff` after the peer was unreachable.
    fn backing_off(mut self, backoff: Duration) -> PeerClient {
        self.unreachable_backoff = backoff;
        self
    }

    /// Sends `request` as `rpc` and decodes the peer's raft core's result, mapping every
    /// failure as the module documentation says.
    async fn call<Req, Resp, E>(
        &self,
        rpc: RPCTypes,
        request: &Req,
        entries: usize,
        option: &RPCOption,
    ) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let faults = self.links.rpc_faults(self.target);
        if faults.cut {
            return Err(RPCError::Unreachable(Unreachable::new(&PeerError::Cut {
                from: self.me,
                target: self.target,
            })));
        }
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return Err(RPCError::Unreachable(Unreachable::new(error))),
        };
        let payload = postcard::to_stdvec(request).map_err(|error| {
            unreachable(PeerError::Codec {
                rpc,
                target: self.target,
                doing: "encode the request",
                problem: error.to_string(),
            })
        })?;
        if payload.len() > MAX_RAFT_MESSAGE_BYTES {
            if entries > 1 {
                let hint = u64::try_from(entries / 2).unwrap_or(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            return Err(unreachable(PeerError::TooLarge {
                rpc,
                target: self.target,
                bytes: payload.len(),
                max: MAX_RAFT_MESSAGE_BYTES,
            }));
        }
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftRequest { payload });
        request.set_timeout(ttl);
        if let Some(secret) = &self.secret {
            secret.attach(&mut request);
        }
        let sending = async {
            match rpc {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action: rpc,
                id: self.me,
                target: self.target,
                timeout: ttl,
            })
        };
        let started = tokio::time::Instant::now();
        let answered = tokio::time::timeout(ttl, sending).await;
        if faults.answer_lost {
            tokio::time::sleep_until(started + ttl).await;
            return Err(timeout());
        }
        let response = match answered {
            Err(_elapsed) => return Err(timeout()),
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let error = PeerError::Status {
                    rpc,
                    target: self.target,
                    addr: self.node.raft_addr.clone(),
                    code: status.code(),
                    message: status.message().to_string(),
                };
                let transport = std::error::Error::source(&status)
                    .is_some_and(|source| source.is::<tonic::transport::Error>());
                // tonic answers a request whose `grpc-timeout` ran out with CANCELLED
                // "Timeout expired" (at either end), not DEADLINE_EXCEEDED.
                let deadline_passed = std::error::Error::source(&status)
                    .is_some_and(|source| source.is::<tonic::TimeoutExpired>())
                    || (status.code() == Code::Cancelled && status.message() == TIMEOUT_EXPIRED);
                return Err(match status.code() {
                    Code::DeadlineExceeded if !transport => timeout(),
                    _ if deadline_passed && !transport => timeout(),
                    _ => unreachable(error),
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&response.payload)
            .map_err(|error| {
                unreachable(PeerError::Codec {
                    rpc,
                    target: self.target,
                    doing: "decode the response",
                    problem: error.to_string(),
                })
            })?;
        result.map_err(|refusal| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                refusal,
            ))
        })
    }
}

/// `error` as openraft's `Unreachable`: replication to the peer pauses before the next try.
fn unreachable<E: std::error::Error>(error: PeerError) -> RPCError<NodeId, ClusterNode, E> {
    RPCError::Unreachable(Unreachable::new(&error))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        {
            let faults = self.links.faults();
            if faults.appends_cut.contains(&self.target) {
                return Err(unreachable(PeerError::Cut {
                    from: self.me,
                    target: self.target,
                }));
            }
            if let Some(held) = faults.commit_held.get(&self.target) {
                rpc.leader_commit = rpc.leader_commit.min(*held);
            }
        }
        let entries = rpc.entries.len();
        let vote = rpc.vote;
        let prev = rpc.prev_log_id;
        let last = rpc.entries.last().map(|entry| entry.log_id).or(prev);
        let response = self
            .call(RPCTypes::AppendEntries, &rpc, entries, &option)
            .await?;
        match &response {
            AppendEntriesResponse::Success => self.acks.record(self.target, &vote, last),
            AppendEntriesResponse::PartialSuccess(matching) => {
                self.acks.record(self.target, &vote, *matching);
            }
            AppendEntriesResponse::Conflict => {
                let acked = self.acks.acked(self.target, &vote);
                if let (Some(acked), Some(asked)) = (acked, prev) {
                    if asked.index <= acked.index {
                        return Err(unreachable(PeerError::LostLog {
                            target: self.target,
                            acked,
                            asked,
                        }));
                    }
                }
            }
            AppendEntriesResponse::HigherVote(_) => {}
        }
        Ok(response)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let (vote, done, last) = (rpc.vote, rpc.done, rpc.meta.last_log_id);
        let response: InstallSnapshotResponse<NodeId> = self
            .call(RPCTypes::InstallSnapshot, &rpc, 0, &option)
            .await?;
        // The last chunk, accepted under this leader's vote: the peer holds the snapshot.
        if done && response.vote <= vote {
            self.acks.record(self.target, &vote, last);
        }
        Ok(response)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(RPCTypes::Vote, &rpc, 0, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.unreachable_backoff))
    }
}
