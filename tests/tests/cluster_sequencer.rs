//! Sequencers from a cluster: every member is given the same signing key, so whichever
//! member leads signs each grant with it, and a verifier's one line for that key verifies
//! grants from before and after the leader's kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_tests::cluster::{Router, TestCluster};
use fenced_types::sequencer::{generate_key, PublicKeys};
use fenced_types::{KeyId, LockName};

/// How long one call may keep looking for the leader (an election included).
const PATIENCE: Duration = Duration::from_secs(60);

async fn grant(router: &mut Router, lock: &str) -> pb::AcquireResponse {
    let request = fenced_tests::cluster::new_lease_acquire(lock, "sequencer-test", 30_000);
    router.acquire(PATIENCE, &request).await.expect("a grant")
}

// checks: S8, C1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_signs_and_its_successor_signs_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_id = KeyId::new("cluster").unwrap();
    let generated = generate_key(&key_id).unwrap();
    let key = dir.path().join("cluster.pk8");
    std::fs::write(&key, &generated.pkcs8).unwrap();
    let keys = PublicKeys::parse(&generated.public_line).unwrap();
    let mut cluster = TestCluster::start(&[
        "--no-fdatasync",
        "--signing-key",
        key.to_str().unwrap(),
        "--signing-key-id",
        "cluster",
    ]);

    phase("the first leader signs");
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let first = grant(&mut router, "orders").await;
    let orders = LockName::new("orders").unwrap();
    assert_eq!(
        keys.verify_for(&orders, &first.sequencer).unwrap().get(),
        first.token
    );

    phase("after the leader's kill, the new leader signs with the same key");
    cluster.member(leader).kill();
    cluster.leader(&[leader]).await;
    let second = grant(&mut router, "invoices").await;
    let invoices = LockName::new("invoices").unwrap();
    assert_eq!(
        keys.verify_for(&invoices, &second.sequencer).unwrap().get(),
        second.token
    );
    assert!(second.token > first.token);
    // Each is refused for the other's lock.
    assert!(keys.verify_for(&orders, &second.sequencer).is_err());
}

/// Marks a phase of the story in the test's output.
fn phase(what: &str) {
    eprintln!("== {what}");
}
