//! Queued acquirers across the loss of the leader, on a real three-member cluster: every
//! queued acquirer is replicated, so the new leader rebuilds each queue in the order it had,
//! and a cut-off waiting acquire sent again (the same lock, the same lease id, as the SDK
//! sends it) takes back its own place, whatever order the clients come back in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::{self as pb};
use fenced_tests::cluster::{new_lease_acquire, Router, TestCluster};

/// How long one call may keep looking for the leader.
const PATIENCE: Duration = Duration::from_secs(30);

/// A waiting acquire of `lock` for the lease `lease_id`, waiting up to a minute.
fn waiting(lock: &str, holder: &str, lease_id: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        new_lease_id: lease_id.to_string(),
        wait_ms: 60_000,
        ..new_lease_acquire(lock, holder, 60_000)
    }
}

/// How many acquirers wait for `lock`, as the leader says.
async fn waiters(router: &mut Router, lock: &str) -> u32 {
    router.describe(PATIENCE, lock).await.unwrap().waiters
}

/// Waits until `lock` has `count` waiters.
async fn until_waiters(router: &mut Router, lock: &str, count: u32) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while waiters(router, lock).await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{lock} never had {count} waiters"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// checks: L2, C1, C3 (FIFO across a failover: A queued before B; the leader is killed;
// B's client sends its acquire again first, then A's; the lock still goes to A first)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_acquirers_keep_their_order_across_the_leaders_kill() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let holder = router
        .acquire(PATIENCE, &new_lease_acquire("fifo", "holder", 60_000))
        .await
        .unwrap();

    // A, then B, queue on the leader itself (no router: their calls end with it).
    let a_lease = fenced_types::LeaseId::random().to_string();
    let b_lease = fenced_types::LeaseId::random().to_string();
    let on_leader = || {
        let endpoint = cluster.endpoint(leader);
        async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .unwrap()
                .connect()
                .await
                .unwrap();
            LockServiceClient::new(channel)
        }
    };
    let mut a_first = on_leader().await;
    let a_request = waiting("fifo", "a", &a_lease);
    let a_cut = tokio::spawn(async move { a_first.acquire(a_request).await });
    until_waiters(&mut router, "fifo", 1).await;
    let mut b_first = on_leader().await;
    let b_request = waiting("fifo", "b", &b_lease);
    let b_cut = tokio::spawn(async move { b_first.acquire(b_request).await });
    until_waiters(&mut router, "fifo", 2).await;
    // One more grant, acknowledged: the raft log commits in order, so both places are
    // committed on a quorum by the time it is.
    router
        .acquire(PATIENCE, &new_lease_acquire("barrier", "barrier", 60_000))
        .await
        .unwrap();

    cluster.member(leader).kill();
    assert!(
        a_cut.await.unwrap().is_err(),
        "A's call ended with its leader"
    );
    assert!(
        b_cut.await.unwrap().is_err(),
        "B's call ended with its leader"
    );
    cluster.leader(&[leader]).await;
    assert_eq!(
        waiters(&mut router, "fifo").await,
        2,
        "the new leader has both places"
    );

    // B comes back first, then A.
    let b = {
        let mut router = Router::new(cluster.endpoints());
        let request = waiting("fifo", "b", &b_lease);
        tokio::spawn(async move { router.acquire(PATIENCE * 2, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = {
        let mut router = Router::new(cluster.endpoints());
        let request = waiting("fifo", "a", &a_lease);
        tokio::spawn(async move { router.acquire(PATIENCE * 2, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiters(&mut router, "fifo").await, 2, "no third place");

    // The holder releases: A, who queued first, gets the lock; B still waits.
    router
        .call(PATIENCE, |mut client| {
            let request = pb::ReleaseRequest {
                lease_id: holder.lease_id.clone(),
                ..pb::ReleaseRequest::default()
            };
            async move { client.release(request).await }
        })
        .await
        .unwrap();
    let a_grant = a.await.unwrap().expect("A gets the lock");
    assert_eq!(a_grant.lease_id, a_lease);
    assert!(a_grant.token > holder.token);
    assert!(!b.is_finished(), "B was granted before A released");
    router
        .call(PATIENCE, |mut client| {
            let request = pb::ReleaseRequest {
                lease_id: a_grant.lease_id.clone(),
                ..pb::ReleaseRequest::default()
            };
            async move { client.release(request).await }
        })
        .await
        .unwrap();
    let b_grant = b.await.unwrap().expect("B gets the lock after A");
    assert_eq!(b_grant.lease_id, b_lease);
    assert!(b_grant.token > a_grant.token);
}
