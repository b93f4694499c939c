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

/// Waits up to `within` until `lock` has `count` waiters; whether it did.
async fn until_waiters(router: &mut Router, lock: &str, count: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while waiters(router, lock).await != count {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Releases the lease `lease_id` through whoever leads.
async fn release(router: &mut Router, lease_id: &str) {
    let request = pb::ReleaseRequest {
        lease_id: lease_id.to_string(),
        ..pb::ReleaseRequest::default()
    };
    router
        .call(PATIENCE, |mut client| {
            let request = request.clone();
            async move { client.release(request).await }
        })
        .await
        .unwrap();
}

/// A lock service client on `endpoint` with no call deadline (a waiting acquire waits).
async fn client_of(endpoint: String) -> LockServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    LockServiceClient::new(channel)
}

/// Two waiters, A then B, queued on the leader and committed there, behind a holder.
struct Queued {
    lock: String,
    leader: usize,
    holder: pb::AcquireResponse,
    a_lease: String,
    b_lease: String,
    a_cut: tokio::task::JoinHandle<Result<tonic::Response<pb::AcquireResponse>, tonic::Status>>,
    b_cut: tokio::task::JoinHandle<Result<tonic::Response<pb::AcquireResponse>, tonic::Status>>,
}

/// Queues A, then B, on `lock` directly on the leader (no router: their calls end with
/// it), behind a holder; `None` if the leader changed on its own meanwhile (an election
/// under load), so the story cannot be told on this lock.
async fn queue_two(cluster: &TestCluster, router: &mut Router, lock: &str) -> Option<Queued> {
    let leader = cluster.leader(&[]).await;
    let holder = router
        .acquire(PATIENCE, &new_lease_acquire(lock, "holder", 60_000))
        .await
        .unwrap();
    let a_lease = fenced_types::LeaseId::random().to_string();
    let b_lease = fenced_types::LeaseId::random().to_string();
    let mut a_first = client_of(cluster.endpoint(leader)).await;
    let a_request = waiting(lock, "a", &a_lease);
    let a_cut = tokio::spawn(async move { a_first.acquire(a_request).await });
    if !until_waiters(router, lock, 1, Duration::from_secs(10)).await {
        return None;
    }
    let mut b_first = client_of(cluster.endpoint(leader)).await;
    let b_request = waiting(lock, "b", &b_lease);
    let b_cut = tokio::spawn(async move { b_first.acquire(b_request).await });
    if !until_waiters(router, lock, 2, Duration::from_secs(10)).await {
        return None;
    }
    // One more grant, acknowledged: the raft log commits in order, so both places are
    // committed on a quorum by the time it is.
    router
        .acquire(
            PATIENCE,
            &new_lease_acquire(&format!("{lock}-barrier"), "barrier", 60_000),
        )
        .await
        .unwrap();
    // Both still wait on the leader they queued on.
    if a_cut.is_finished() || b_cut.is_finished() || cluster.leader(&[]).await != leader {
        return None;
    }
    Some(Queued {
        lock: lock.to_string(),
        leader,
        holder,
        a_lease,
        b_lease,
        a_cut,
        b_cut,
    })
}

// checks: L2, C1, C3 (FIFO across a failover: A queued before B; the leader is killed;
// B's client sends its acquire again first, then A's; the lock still goes to A first)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_acquirers_keep_their_order_across_the_leaders_kill() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let mut router = Router::new(cluster.endpoints());
    let mut queued = None;
    for attempt in 1..=5 {
        queued = queue_two(&cluster, &mut router, &format!("fifo-{attempt}")).await;
        if queued.is_some() {
            break;
        }
    }
    let Queued {
        lock,
        leader,
        holder,
        a_lease,
        b_lease,
        a_cut,
        b_cut,
    } = queued.expect("in 5 tries, two waiters queued on one leader that stayed the leader");

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
        waiters(&mut router, &lock).await,
        2,
        "the new leader has both places"
    );

    // B comes back first, then A.
    let b = {
        let mut router = Router::new(cluster.endpoints());
        let request = waiting(&lock, "b", &b_lease);
        tokio::spawn(async move { router.acquire(PATIENCE * 2, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = {
        let mut router = Router::new(cluster.endpoints());
        let request = waiting(&lock, "a", &a_lease);
        tokio::spawn(async move { router.acquire(PATIENCE * 2, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiters(&mut router, &lock).await, 2, "no third place");

    // The holder releases: A, who queued first, gets the lock; B still waits.
    release(&mut router, &holder.lease_id).await;
    let a_grant = a.await.unwrap().expect("A gets the lock");
    assert_eq!(a_grant.lease_id, a_lease);
    assert!(a_grant.token > holder.token);
    assert!(!b.is_finished(), "B was granted before A released");
    release(&mut router, &a_grant.lease_id).await;
    let b_grant = b.await.unwrap().expect("B gets the lock after A");
    assert_eq!(b_grant.lease_id, b_lease);
    assert!(b_grant.token > a_grant.token);
}
