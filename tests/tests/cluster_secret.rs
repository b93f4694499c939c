//! The cluster's secret on real members (`--cluster-secret-file`): members that share it
//! elect a leader, grant and fail over as before, while a raft message from anyone without
//! it is refused UNAUTHENTICATED at every member's raft port; a secret too short to be one
//! stops the member at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_proto::raft::v1::raft_service_client::RaftServiceClient;
use fenced_proto::raft::v1::RaftRequest;
use fenced_proto::v1 as pb;
use fenced_tests::cluster::{Router, TestCluster};
use fenced_tests::process::refused_start;
use tonic::Code;

/// How long one call may keep looking for the leader (an election included).
const PATIENCE: Duration = Duration::from_secs(60);

async fn grant(router: &mut Router, lock: &str) -> pb::AcquireResponse {
    let request = fenced_tests::cluster::new_lease_acquire(lock, "secret-test", 30_000);
    router.acquire(PATIENCE, &request).await.expect("a grant")
}

// checks: A1, C1, C2 (members with the secret replicate, elect and fail over; a stranger's
// raft messages are refused before any raft core sees them, so it cannot vote or append)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_the_secret_work_and_strangers_are_refused_at_the_raft_port() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster-secret");
    std::fs::write(&secret, "kX3v9Qe2Lr7TzB5mNp0Wy8Hc4Ud6Jf1As\n").unwrap();
    let mut cluster = TestCluster::start(&[
        "--no-fdatasync",
        "--cluster-secret-file",
        secret.to_str().unwrap(),
    ]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let first = grant(&mut router, "orders").await;

    // A stranger on every member's raft port: a vote, an append, a snapshot (payloads
    // that would not even decode: the refusal comes first).
    for id in 1..=3 {
        let mut raft = RaftServiceClient::connect(format!("http://{}", cluster.raft_addr(id)))
            .await
            .unwrap();
        let request = || RaftRequest {
            payload: vec![1, 2, 3],
        };
        for status in [
            raft.vote(request()).await.unwrap_err(),
            raft.append_entries(request()).await.unwrap_err(),
            raft.install_snapshot(request()).await.unwrap_err(),
        ] {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "member {id}: {status:?}"
            );
        }
    }

    // The members still talk: the leader's kill is followed by a new leader and grants
    // with higher tokens.
    cluster.member(leader).kill();
    cluster.leader(&[leader]).await;
    let second = grant(&mut router, "invoices").await;
    assert!(second.token > first.token, "{second:?} after {first:?}");
}

// checks: none (operations: a secret too short to be one is refused at start, naming it)
#[test]
fn a_short_cluster_secret_stops_the_member_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster-secret");
    std::fs::write(&secret, "hunter2").unwrap();
    let stderr = refused_start(
        "fenced",
        &[
            "--node-id",
            "1",
            "--raft-listen",
            "127.0.0.1:0",
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(
        stderr.contains("cluster secret") && stderr.contains("--cluster-secret-file"),
        "{stderr}"
    );
}
