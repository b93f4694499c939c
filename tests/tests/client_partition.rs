//! The SDK through a TCP proxy that partitions, delays and resets its connections: renewals
//! fail visibly during a partition and recover after it; a partition that outlasts the TTL
//! makes the lease suspect, then lost, for good; the local deadline counts from the send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_client::{AcquireOptions, Client, Lease, LeaseState, LostReason, SuspectReason};
use fenced_tests::proxy::Proxy;
use fenced_tests::server::TestServer;

/// A client tuned to notice a dead connection quickly, connected through `proxy`.
async fn client_via(proxy: &Proxy, holder: &str) -> Client {
    Client::builder(proxy.endpoint())
        .holder(holder)
        .timeouts(Duration::from_millis(500), Duration::from_millis(500))
        .http2_keepalive(Duration::from_millis(300), Duration::from_millis(600))
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        // These tests are about the network: a scheduling hiccup on a loaded machine must
        // not count as a process pause (client_pause.rs tests those).
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it holds, failing after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states(lease: &Lease) -> Vec<LeaseState> {
    lease.history().into_iter().map(|c| c.state).collect()
}

// checks: S4, L3
#[tokio::test]
async fn renewals_fail_during_a_short_partition_and_recover_after_it() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);
    let proxy = Proxy::start(server.addr()).await;
    let client = client_via(&proxy, "alpha").await;
    let ttl = Duration::from_secs(4);

    // Phase 1: held and renewed through the proxy.
    let lease = client
        .acquire("partition/short", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(lease.fence().is_ok());

    // Phase 2: a partition shorter than the usable TTL. The failures show in the status,
    // and the lease stays usable while its deadline, counted from the last confirmed send,
    // has not passed (renewals every 1.33 s leave >= 2.5 s of it).
    proxy.black_hole();
    let partitioned = std::time::Instant::now();
    eventually(
        Duration::from_secs(3),
        "a renewal failure is reported",
        || lease.status().consecutive_failures > 0,
    )
    .await;
    let status = lease.status();
    assert!(status.last_error.is_some(), "{status:?}");
    let left = Duration::from_millis(1_500).saturating_sub(partitioned.elapsed());
    tokio::time::sleep(left).await;
    assert!(lease.fence().is_ok(), "{:?}", lease.status());

    // Phase 3: heal. A fresh connection renews the lease; failures reset.
    proxy.pass();
    eventually(Duration::from_secs(10), "renewed after healing", || {
        let s = lease.status();
        s.consecutive_failures == 0 && s.state.is_held() && s.remaining > Duration::from_secs(3)
    })
    .await;
    let info = client.describe("partition/short").await.unwrap();
    assert_eq!(info.holder.unwrap().token, lease.token());
    assert!(lease.fence().is_ok());
}

// checks: S4, S7
#[tokio::test]
async fn a_partition_longer_than_the_ttl_makes_the_lease_suspect_then_lost_for_good() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);
    let proxy = Proxy::start(server.addr()).await;
    let client = client_via(&proxy, "alpha").await;
    let other = Client::builder(server.endpoint())
        .holder("beta")
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_millis(1_000);

    // Phase 1: alpha holds the lock through the proxy.
    let lease = client
        .acquire("partition/long", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    assert!(lease.fence().is_ok());

    // Phase 2: partition. Beta, who reaches the server directly, queues for the lock.
    proxy.black_hole();
    let beta = tokio::spawn(async move {
        other
            .acquire(
                "partition/long",
                AcquireOptions::wait(Duration::from_secs(20)),
            )
            .await
    });

    // Alpha's SDK gives up by itself: suspect at the local deadline, then lost.
    let reason = tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .unwrap();
    assert!(
        matches!(reason, LostReason::ExpiredLocally { .. }),
        "{reason:?}"
    );
    let history = states(&lease);
    let suspect_at = history
        .iter()
        .position(|s| {
            *s == LeaseState::Suspect {
                reason: SuspectReason::DeadlinePassed,
            }
        })
        .unwrap_or_else(|| panic!("never suspect: {history:?}"));
    let lost_at = history.iter().position(|s| s.is_lost()).unwrap();
    assert!(suspect_at < lost_at, "{history:?}");
    assert!(lease.fence().is_err());

    // The server expired alpha's lease and handed the lock to beta with a higher token.
    let beta_lease = tokio::time::timeout(Duration::from_secs(10), beta)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(beta_lease.token() > lease.token());

    // Phase 3: heal. Alpha's lease stays lost: nothing revives it.
    proxy.pass();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(lease.state().is_lost());
    assert!(lease.fence().is_err());
    assert!(beta_lease.fence().is_ok());
}

// checks: L3
#[tokio::test]
async fn reset_connections_are_replaced_and_the_lease_stays_held() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);
    let proxy = Proxy::start(server.addr()).await;
    let client = client_via(&proxy, "alpha").await;
    let ttl = Duration::from_millis(1_500);
    let lease = client
        .acquire("partition/reset", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();

    // Phase 1: every connection is reset, ten times, over two TTLs.
    let before = proxy.accepted();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.reset();
    }
    assert!(proxy.accepted() > before, "the SDK reconnected");

    // Phase 2: the lease recovered (a reset just before the deadline may have made it
    // suspect for a moment; the server must never have expired it).
    eventually(Duration::from_secs(5), "held after the resets", || {
        lease.status().state.is_held()
    })
    .await;
    assert!(lease.fence().is_ok());
    let info = client.describe("partition/reset").await.unwrap();
    assert_eq!(info.holder.unwrap().token, lease.token());
}

// checks: S4
#[tokio::test]
async fn the_deadline_counts_from_the_send_not_the_answer() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);
    let proxy = Proxy::start(server.addr()).await;
    let client = Client::builder(proxy.endpoint())
        .holder("slow")
        .timeouts(Duration::from_secs(5), Duration::from_secs(5))
        .http2_keepalive(Duration::from_secs(1), Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let usable = client.config().policy().usable(ttl).unwrap();

    // Every chunk now waits 200 ms each way: a round trip takes at least 400 ms.
    proxy.delay(Duration::from_millis(200));
    let lease = client
        .acquire("slow", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    // The deadline was set from the send, so the round trip is already gone from it.
    let remaining = lease.remaining();
    assert!(
        remaining <= usable - Duration::from_millis(400),
        "remaining {remaining:?} of usable {usable:?}"
    );

    // Renewals over the slow path keep the lease held, and never leave more than the
    // usable TTL minus the round trip.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = lease.status();
        assert!(status.state.is_held(), "{status:?}");
        assert!(
            status.remaining <= usable - Duration::from_millis(400),
            "{status:?}"
        );
    }
}
