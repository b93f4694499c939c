//! Moving from a single node to a cluster: a stopped single node's data directory seeds a
//! new three-member cluster (`--seed-from`), which serves the single node's held locks with
//! their tokens and issues tokens above every token the single node issued.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_proto::v1::{self as pb};
use fenced_tests::cluster::{Router, TestCluster};
use fenced_tests::server::TestServer;
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(20);

async fn acquire(router: &mut Router, lock: &str) -> Result<pb::AcquireResponse, tonic::Status> {
    let request = fenced_tests::cluster::new_lease_acquire(lock, "seed-test", 600_000);
    router.acquire(PATIENCE, &request).await
}

// checks: S1, S2, C1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_nodes_directory_seeds_a_cluster_and_tokens_continue_above_it() {
    let mut single = TestServer::start();
    let mut router = Router::new(vec![single.endpoint()]);
    let held = acquire(&mut router, "held").await.expect("a grant");
    let mut last = held.token;
    for round in 0..5 {
        let grant = acquire(&mut router, &format!("freed/{round}"))
            .await
            .unwrap();
        last = grant.token;
        let release = pb::ReleaseRequest {
            lease_id: grant.lease_id,
            lock: String::new(),
        };
        router
            .call(PATIENCE, |mut client| {
                let release = release.clone();
                async move { client.release(release).await }
            })
            .await
            .unwrap();
    }
    single.stop();
    let seed = single.data_dir().display().to_string();

    let mut cluster = TestCluster::start_with(&["--no-fdatasync"], &["--seed-from", &seed]);
    cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let info = router.describe(PATIENCE, "held").await.unwrap();
    assert!(info.held && info.token == held.token, "{info:?}");
    let busy = acquire(&mut router, "held").await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    let next = acquire(&mut router, "after-seed").await.unwrap();
    assert!(
        next.token > last,
        "token {} in the cluster, {last} issued by the single node",
        next.token
    );

    // Every member holds the seed: with member 1 (the seeder) killed, the others still
    // serve the single node's lock.
    cluster.member(1).kill();
    let mut router = Router::new(cluster.endpoints());
    let busy = acquire(&mut router, "held").await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
}
