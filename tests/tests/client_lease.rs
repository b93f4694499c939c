//! The SDK against a real `fenced` server: acquire, background renewal over one KeepAlive
//! stream, fencing, busy errors, queued acquires, release and drop, leader election.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_client::{
    AcquireOptions, Client, Election, Error, LeaseState, LockEventKind, LostReason,
};
use fenced_tests::proxy::Proxy;
use fenced_tests::server::TestServer;

/// A server that accepts short TTLs, so renewals happen many times within a test.
fn server() -> TestServer {
    TestServer::start_with(&["--min-ttl-ms", "50"])
}

async fn client(server: &TestServer, holder: &str) -> Client {
    Client::builder(server.endpoint())
        .holder(holder)
        // A scheduling hiccup on a loaded machine must not count as a process pause here
        // (client_pause.rs tests those).
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap()
}

// checks: S4, L3
#[tokio::test]
async fn background_renewal_keeps_many_leases_held_on_one_stream() {
    let server = server();
    // Through a proxy, to count the connections the client opens.
    let proxy = Proxy::start(server.addr()).await;
    let client = Client::builder(proxy.endpoint())
        .holder("renewer")
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);

    // Phase 1: twenty leases, each on its own lock.
    let mut leases = Vec::new();
    for i in 0..20 {
        let lease = client
            .acquire(&format!("renew/{i}"), AcquireOptions::try_once().ttl(ttl))
            .await
            .unwrap();
        assert!(lease.fence().is_ok());
        leases.push(lease);
    }

    // Phase 2: five TTLs later every lease is still held: only renewals can have done that.
    tokio::time::sleep(ttl * 5).await;
    for lease in &leases {
        let status = lease.status();
        assert_eq!(status.state, LeaseState::Held, "{status:?}");
        assert!(status.remaining > Duration::ZERO, "{status:?}");
        assert_eq!(lease.fence().unwrap(), lease.token());
        let suspect = lease
            .history()
            .iter()
            .filter(|c| !c.state.is_held())
            .count();
        assert_eq!(suspect, 0, "{:?}", lease.history());
        let info = client.describe(lease.lock().as_str()).await.unwrap();
        let holder = info.holder.expect("still held on the server");
        assert_eq!(holder.token, lease.token());
        assert_eq!(holder.name, "renewer");
    }
    // One connection for calls, one for the single KeepAlive stream: not one per lease.
    assert_eq!(proxy.accepted(), 2);
}

// checks: S1, L1
#[tokio::test]
async fn busy_lock_names_holder_and_token_and_release_hands_over() {
    let server = server();
    let alpha = client(&server, "alpha").await;
    let beta = client(&server, "beta").await;

    // Phase 1: alpha holds the lock; beta's try fails with the holder and its token.
    let lease = alpha.try_acquire("jobs").await.unwrap();
    match beta.try_acquire("jobs").await {
        Err(Error::Busy {
            lock,
            holder,
            token,
            ..
        }) => {
            assert_eq!(lock, "jobs");
            assert_eq!(holder.as_deref(), Some("alpha"));
            assert_eq!(token, Some(lease.token()));
        }
        other => panic!("expected Busy, got {other:?}"),
    }

    // Phase 2: beta queues; alpha releases; beta gets a higher token at once.
    let waiting = tokio::spawn({
        let beta = beta.clone();
        async move {
            beta.acquire("jobs", AcquireOptions::wait(Duration::from_secs(20)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alpha_token = lease.token();
    let mut alpha_changes = lease.watch();
    lease.release().await.unwrap();
    assert!(matches!(
        &*alpha_changes.borrow_and_update(),
        LeaseState::Lost {
            reason: LostReason::ReleasedByHolder
        }
    ));
    let beta_lease = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(beta_lease.token() > alpha_token);
    assert!(beta_lease.fence().is_ok());

    // Phase 3: dropping the lease releases it in the background.
    drop(beta_lease);
    let again = alpha
        .acquire("jobs", AcquireOptions::wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(again.token() > alpha_token);
}

// checks: S4
#[tokio::test]
async fn a_grant_after_a_long_wait_is_confirmed_before_use() {
    let server = server();
    let alpha = client(&server, "alpha").await;
    let beta = client(&server, "beta").await;
    let ttl = Duration::from_millis(900);

    // Alpha holds; beta queues; alpha releases after more than a third of beta's TTL, so
    // beta's grant arrives after its first renewal would have been due.
    let lease = alpha.try_acquire("late").await.unwrap();
    let waiting = tokio::spawn({
        let beta = beta.clone();
        async move {
            beta.acquire(
                "late",
                AcquireOptions::wait(Duration::from_secs(20)).ttl(ttl),
            )
            .await
        }
    });
    tokio::time::sleep(ttl / 2).await;
    lease.release().await.unwrap();
    let late = waiting.await.unwrap().unwrap();
    let first = late.history().first().cloned().unwrap();
    assert!(
        matches!(first.state, LeaseState::Suspect { .. }),
        "a late grant starts suspect: {first:?}"
    );
    // The confirming renewal goes out at once and the lease becomes held.
    let mut changes = late.watch();
    tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|s| s.is_held()))
        .await
        .unwrap()
        .unwrap();
    assert!(late.fence().is_ok());
}

// checks: S1, L1
#[tokio::test]
async fn election_campaign_leader_observe_resign() {
    let server = server();
    let one = client(&server, "one").await;
    let two = client(&server, "two").await;
    let e1 = Election::new(&one, "leader").unwrap();
    let e2 = Election::new(&two, "leader")
        .unwrap()
        .attempt_wait(Duration::from_millis(300));

    // Phase 1: nobody leads; one campaigns and wins.
    assert_eq!(e1.leader().await.unwrap(), None);
    let mut changes = e2.observe().await.unwrap();
    let lead1 = e1.campaign().await.unwrap();
    let leader = e2.leader().await.unwrap().unwrap();
    assert_eq!(leader.name, "one");
    assert_eq!(leader.token, lead1.token());

    // Phase 2: two campaigns (retrying its short attempts) until one resigns.
    let campaign = tokio::spawn(async move {
        let lease = e2.campaign().await;
        (e2, lease)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!campaign.is_finished(), "two cannot lead while one does");
    e1.resign(lead1).await.unwrap();
    let (e2, lead2) = tokio::time::timeout(Duration::from_secs(10), campaign)
        .await
        .unwrap()
        .unwrap();
    let lead2 = lead2.unwrap();
    assert_eq!(e2.leader().await.unwrap().unwrap().name, "two");

    // Phase 3: the observer saw one elected, one resign, two elected, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((event.kind, event.holder, event.token));
    }
    assert_eq!(seen[0].0, LockEventKind::Acquired);
    assert_eq!(seen[0].1, "one");
    assert_eq!(seen[1].0, LockEventKind::Released);
    assert_eq!(seen[2].0, LockEventKind::Acquired);
    assert_eq!(seen[2].1, "two");
    assert!(seen[2].2 > seen[0].2);
    assert_eq!(seen[2].2, lead2.token());
}

// checks: the CONTRACT "Bad input" rules (refused with a clear error, locally or by the server)
#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let server = server();
    let client = client(&server, "x").await;
    assert!(matches!(
        client.try_acquire("").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        client
            .acquire(
                "a",
                AcquireOptions::try_once().ttl(Duration::from_millis(10))
            )
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    // A TTL the server refuses comes back as InvalidArgument too.
    assert!(matches!(
        client
            .acquire(
                "a",
                AcquireOptions::try_once().ttl(Duration::from_secs(100 * 3600))
            )
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Client::connect("not a url").await,
        Err(Error::InvalidEndpoint { .. })
    ));
}

// checks: S2, L3
#[tokio::test]
async fn renewals_reconnect_after_a_server_restart() {
    let mut server = server();
    let client = Client::builder(server.endpoint())
        .holder("survivor")
        .pause_threshold(Duration::from_secs(2))
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let lease = client
        .acquire("restart", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    let port = server.addr();

    // Phase 1: kill -9 and restart the server on the same data directory and port.
    server.restart();
    assert_eq!(server.addr(), port, "the port was taken meanwhile");

    // Phase 2: the renewal stream reconnects; the restored lease (S2) is renewed, never
    // lost, and the server still names its token.
    let mut renewed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = lease.status();
        assert!(!status.state.is_lost(), "{status:?}");
        if status.state.is_held() && status.remaining > Duration::from_millis(2_500) {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "{:?}", lease.status());
    let info = client.describe("restart").await.unwrap();
    assert_eq!(info.holder.unwrap().token, lease.token());
}

// checks: L2 (dropping a waiting acquire leaves the queue)
#[tokio::test]
async fn dropping_a_waiting_acquire_leaves_the_queue() {
    let server = server();
    let alpha = client(&server, "alpha").await;
    let beta = client(&server, "beta").await;
    let lease = alpha.try_acquire("queue").await.unwrap();

    // Phase 1: beta waits in the queue.
    let waiting = tokio::spawn({
        let beta = beta.clone();
        async move {
            beta.acquire("queue", AcquireOptions::wait(Duration::from_secs(30)))
                .await
        }
    });
    let mut queued = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if alpha.describe("queue").await.unwrap().waiters == 1 {
            queued = true;
            break;
        }
    }
    assert!(queued, "beta never showed up in the queue");

    // Phase 2: beta gives up by dropping the future; the server forgets the waiter.
    waiting.abort();
    let _ = waiting.await;
    let mut left = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if alpha.describe("queue").await.unwrap().waiters == 0 {
            left = true;
            break;
        }
    }
    assert!(left, "the cancelled waiter stayed queued");

    // Phase 3: a release now leaves the lock free rather than granting it to beta.
    lease.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alpha.describe("queue").await.unwrap().holder, None);
}
