//! Tests of the raft network's edges: how transport failures reach openraft (a peer that
//! is down is `Unreachable`, so openraft backs off), and how the raft service refuses a
//! payload that does not decode or is too large.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::{Config, Raft, RaftNetwork, RaftNetworkFactory, Vote};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use fenced_proto::raft::v1::raft_service_client::RaftServiceClient;
use fenced_proto::raft::v1::RaftRequest;

use super::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use super::network::{Network, MAX_RAFT_MESSAGE_BYTES};
use super::raft_service::spawn_raft_server;
use super::state_machine::StateMachine;
use super::types::{ClusterNode, TypeConfig};

fn node(raft_addr: String) -> ClusterNode {
    ClusterNode {
        raft_addr,
        client_addr: "127.0.0.1:1".to_string(),
    }
}

fn vote_request() -> VoteRequest<u64> {
    VoteRequest {
        vote: Vote::new(1, 1),
        last_log_id: None,
    }
}

/// Node 1's raft core over a log and a state machine in `dir`, in no cluster yet.
async fn lone_raft(dir: &std::path::Path) -> Raft<TypeConfig> {
    let (log, _) = LogStore::open(&dir.join("raft"), false, DEFAULT_SEGMENT_BYTES).unwrap();
    let sm = StateMachine::open(&dir.join("raft-sm"), false).unwrap();
    let config = Arc::new(Config::default().validate().unwrap());
    Raft::new(1, config, Network::new(1), log, sm)
        .await
        .unwrap()
}

/// A port that was just bound and closed: nothing listens on it.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

// checks: S3 (a peer that is down makes openraft back off rather than retry at once)
#[tokio::test]
async fn a_peer_nobody_listens_for_is_unreachable_not_a_timeout() {
    let mut network = Network::new(1);
    let mut peer = network.new_client(2, &node(closed_port().await)).await;
    let ttl = Duration::from_secs(5);
    let started = Instant::now();
    let error = peer
        .vote(vote_request(), RPCOption::new(ttl))
        .await
        .unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    assert!(started.elapsed() < ttl, "refused connections fail fast");
    assert!(error.to_string().contains("Vote to node 2"), "{error}");
}

// checks: S3 (an unusable address and a cut link are unreachable too)
#[tokio::test]
async fn a_bad_address_or_a_cut_link_is_unreachable() {
    let mut network = Network::new(1);
    let mut bad = network
        .new_client(2, &node("not an address/\u{7f}".to_string()))
        .await;
    let error = bad
        .vote(vote_request(), RPCOption::new(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

    network.links().cut(3);
    let mut cut = network.new_client(3, &node(closed_port().await)).await;
    let error = cut
        .vote(vote_request(), RPCOption::new(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    assert!(error.to_string().contains("is cut"), "{error}");
}

// checks: S2 (nothing a peer sends can crash a node: a malformed payload is a clean
// INVALID_ARGUMENT, an oversized one is refused before it is decoded)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_service_refuses_garbage_and_oversized_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let raft = lone_raft(dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = spawn_raft_server(&raft, listener, None, &stop);
    let mut client = RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);

    tracing::info!("--- a payload that is not a request: INVALID_ARGUMENT, for every rpc");
    let garbage = || RaftRequest {
        payload: vec![0xff; 7],
    };
    let statuses = [
        client.append_entries(garbage()).await.unwrap_err(),
        client.vote(garbage()).await.unwrap_err(),
        client.install_snapshot(garbage()).await.unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .contains("is not a postcard-encoded openraft"),
            "{status:?}"
        );
    }

    tracing::info!("--- a well-formed vote is answered");
    let payload = postcard::to_stdvec(&vote_request()).unwrap();
    let response = client.vote(RaftRequest { payload }).await.unwrap();
    let answered: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        postcard::from_bytes(&response.into_inner().payload).unwrap();
    answered.unwrap();

    tracing::info!("--- a payload above the bound: OUT_OF_RANGE, and the server lives on");
    let status = client
        .append_entries(RaftRequest {
            payload: vec![0; MAX_RAFT_MESSAGE_BYTES + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = client.vote(garbage()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    stop.cancel();
    server.await.unwrap().unwrap();
    raft.shutdown().await.unwrap();
}

// checks: S3 (a peer whose address takes connections and closes them, as a half-dead
// machine or a proxy to a dead one does, is unreachable, not a timeout: openraft resends
// at once after a timeout and would spin on it)
#[tokio::test]
async fn a_peer_that_closes_every_connection_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let mut network = Network::new(1);
    let mut peer = network.new_client(2, &node(addr.to_string())).await;
    for _ in 0..3 {
        let error = peer
            .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    }
}

/// A raft peer whose every answer is tonic's "deadline passed" status: what a peer sends
/// when the request's `grpc-timeout` ran out before it answered (`CANCELLED`, "Timeout
/// expired").
struct DeadlinePassed;

#[tonic::async_trait]
impl fenced_proto::raft::v1::raft_service_server::RaftService for DeadlinePassed {
    async fn append_entries(
        &self,
        _request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<fenced_proto::raft::v1::RaftResponse>, tonic::Status> {
        Err(tonic::Status::cancelled("Timeout expired"))
    }

    async fn vote(
        &self,
        _request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<fenced_proto::raft::v1::RaftResponse>, tonic::Status> {
        Err(tonic::Status::cancelled("Timeout expired"))
    }

    async fn install_snapshot(
        &self,
        _request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<fenced_proto::raft::v1::RaftResponse>, tonic::Status> {
        Err(tonic::Status::cancelled("Timeout expired"))
    }
}

// checks: S3 (a follower slower than the heartbeat's deadline is a timeout, resent at once:
// taking it for an unreachable peer would pause replication to it for the backoff, long
// enough for it to start an election and depose a healthy leader)
#[tokio::test]
async fn a_peer_whose_deadline_passed_is_a_timeout_not_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                fenced_proto::raft::v1::raft_service_server::RaftServiceServer::new(DeadlinePassed),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut network = Network::new(1);
    let mut peer = network.new_client(2, &node(addr)).await;
    let error = peer
        .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(error, RPCError::Timeout(_)), "{error:?}");
    server.abort();
}

// checks: S3 (the backoff from an unreachable peer stays below the election timeout a
// member is given, so a member that comes back hears from the leader before it would
// start an election of its own)
#[tokio::test]
async fn the_backoff_from_an_unreachable_peer_is_the_one_the_network_was_given() {
    let mut network = Network::new(1).with_unreachable_backoff(Duration::from_millis(80));
    let client = network
        .new_client(2, &node("127.0.0.1:1".to_string()))
        .await;
    let mut backoff = client.backoff();
    assert_eq!(backoff.next(), Some(Duration::from_millis(80)));
}

// checks: A1, C1, C2 (with a cluster secret, a raft listener takes rpcs only from peers that
// carry it: anyone else who reaches the port can neither vote nor append, so cannot take
// the cluster over; members with the secret talk as before)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_secret_only_peers_that_carry_it_are_heard() {
    use super::peer_auth::PeerSecret;
    let secret = PeerSecret::new("correct-horse-battery-staple-0123456789").unwrap();
    let other = PeerSecret::new("another-cluster-entirely-0123456789abcdef").unwrap();
    assert!(PeerSecret::new("too-short").is_err(), "a short secret");
    assert!(
        PeerSecret::new("a secret with spaces in it, long enough to pass").is_err(),
        "a secret with spaces"
    );

    let dir = tempfile::tempdir().unwrap();
    let raft = lone_raft(dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = spawn_raft_server(&raft, listener, Some(secret.clone()), &stop);

    tracing::info!("--- raw rpcs without the secret, or with another: UNAUTHENTICATED");
    let mut client = RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let vote = || RaftRequest {
        payload: postcard::to_stdvec(&vote_request()).unwrap(),
    };
    let statuses = [
        client.append_entries(vote()).await.unwrap_err(),
        client.vote(vote()).await.unwrap_err(),
        client.install_snapshot(vote()).await.unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let mut wrong = tonic::Request::new(vote());
    other.attach(&mut wrong);
    let status = client.vote(wrong).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    tracing::info!("--- a peer's network without the secret is refused; with it, answered");
    let ttl = Duration::from_secs(10);
    let mut stranger = Network::new(2).new_client(1, &node(addr.to_string())).await;
    let refused = stranger
        .vote(vote_request(), RPCOption::new(ttl))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("Unauthenticated"),
        "{refused:?}"
    );
    let mut peer = Network::new(2)
        .with_secret(Some(secret))
        .new_client(1, &node(addr.to_string()))
        .await;
    peer.vote(vote_request(), RPCOption::new(ttl))
        .await
        .expect("a peer with the secret is heard");

    stop.cancel();
    server.await.unwrap().unwrap();
    raft.shutdown().await.unwrap();
}
