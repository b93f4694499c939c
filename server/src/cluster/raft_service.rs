//! [`RaftServer`]: the receiving end of `fenced/raft/v1/raft.proto`, the thin edge between
//! a peer's [`PeerClient`](super::network::PeerClient) and this node's raft core: it
//! decodes the postcard payload into openraft's request, hands it to the core
//! (`Raft::append_entries`, `vote`, `install_snapshot`), and encodes the core's result,
//! refusal or not, as the response payload. [`serve_raft`] serves it on the node's raft
//! listener.
//!
//! A payload that does not decode is refused with `INVALID_ARGUMENT`, naming the rpc and
//! postcard's complaint; nothing a peer sends can panic the server. Requests and responses
//! are bounded by [`MAX_RAFT_MESSAGE_BYTES`] (tonic refuses a larger request with
//! `OUT_OF_RANGE` before it is decoded).

use std::future::Future;
use std::time::Duration;

use openraft::network::RPCTypes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::Raft;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use fenced_proto::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
use fenced_proto::raft::v1::{RaftRequest, RaftResponse};

use crate::admission::ConnectionLimit;
use crate::cluster::network::MAX_RAFT_MESSAGE_BYTES;
use crate::cluster::peer_auth::{PeerCheck, PeerSecret};
use crate::cluster::types::TypeConfig;
use crate::grpc_incoming;

/// How the raft listener accepts connections, and whom.
#[derive(Debug, Clone)]
pub struct RaftListenerConfig {
    /// The cluster's secret every rpc must carry; `None`: every rpc is taken.
    pub secret: Option<PeerSecret>,
    /// The most connections open at once (each peer keeps one; the rest is headroom for
    /// reconnects).
    pub max_connections: usize,
    /// How long a connection has, from its accept, to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
}

impl Default for RaftListenerConfig {
    fn default() -> Self {
        RaftListenerConfig {
            secret: None,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Hands raft rpcs from peers to this node's raft core.
#[derive(Clone)]
pub struct RaftServer {
    /// This node's raft.
    raft: Raft<TypeConfig>,
}

impl RaftServer {
    /// The server of `raft`.
    pub fn new(raft: Raft<TypeConfig>) -> RaftServer {
        RaftServer { raft }
    }

    /// The tonic service, with both directions bounded by [`MAX_RAFT_MESSAGE_BYTES`], behind
    /// the cluster secret's check (none without a secret).
    pub fn into_service(
        self,
        secret: Option<PeerSecret>,
    ) -> InterceptedService<RaftServiceServer<RaftServer>, PeerCheck> {
        let service = RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        InterceptedService::new(service, PeerCheck(secret))
    }
}

/// Decodes a request payload as the `T` that `rpc` carries.
fn decode<T: DeserializeOwned>(rpc: RPCTypes, request: &Request<RaftRequest>) -> Result<T, Status> {
    postcard::from_bytes(&request.get_ref().payload).map_err(|error| {
        Status::invalid_argument(format!(
            "{rpc}: the payload ({} bytes) is not a postcard-encoded openraft {rpc} request: \
             {error}",
            request.get_ref().payload.len()
        ))
    })
}

/// Encodes the raft core's result for `rpc` as the response payload.
fn encode<T: Serialize>(rpc: RPCTypes, result: &T) -> Result<Response<RaftResponse>, Status> {
    postcard::to_stdvec(result)
        .map(|payload| Response::new(RaftResponse { payload }))
        .map_err(|error| Status::internal(format!("{rpc}: cannot encode the result: {error}")))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(RPCTypes::AppendEntries, &request)?;
        let result = self.raft.append_entries(rpc).await;
        encode(RPCTypes::AppendEntries, &result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let rpc: VoteRequest<u64> = decode(RPCTypes::Vote, &request)?;
        let result = self.raft.vote(rpc).await;
        encode(RPCTypes::Vote, &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(RPCTypes::InstallSnapshot, &request)?;
        let result = self.raft.install_snapshot(rpc).await;
        encode(RPCTypes::InstallSnapshot, &result)
    }
}

/// Serves `raft`'s [`RaftService`] on `listener` until `shutdown` completes, then closes
/// every connection once its rpcs in flight are answered (so peers reconnect to whatever
/// listens on the address next).
pub async fn serve_raft(
    raft: Raft<TypeConfig>,
    listener: TcpListener,
    config: &RaftListenerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = grpc_incoming::incoming(
        listener,
        None,
        ConnectionLimit::new("raft", config.max_connections),
        config.handshake_timeout,
    );
    tonic::transport::Server::builder()
        .add_service(RaftServer::new(raft).into_service(config.secret.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Serves `raft`'s [`RaftService`] on `listener` on a task of its own, with the default
/// listener settings and `secret`, until `stop` is cancelled.
pub fn spawn_raft_server(
    raft: &Raft<TypeConfig>,
    listener: TcpListener,
    secret: Option<PeerSecret>,
    stop: &CancellationToken,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let raft = raft.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let config = RaftListenerConfig {
            secret,
            ..RaftListenerConfig::default()
        };
        serve_raft(raft, listener, &config, stop.cancelled_owned()).await
    })
}
