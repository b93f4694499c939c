//! A three-member cluster of real `fenced` processes across the loss of its leader: killed
//! with SIGKILL under load, paused with SIGSTOP past the election timeout, and all three
//! killed and restarted. Clients are raw gRPC callers that follow the not-leader refusal
//! ([`Router`]), so what is checked is the server's side of the contract.
//!
//! Timing: the members run with their default raft timing (heartbeats every 50 ms,
//! elections after 200 to 400 ms); every wait for the cluster is many seconds long, so a
//! loaded machine slows the tests down without failing them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fenced_proto::v1::{self as pb};
use fenced_tests::cluster::{connect, not_leader, Router, TestCluster};
use tonic::Code;

/// How long one call may keep looking for the leader.
const PATIENCE: Duration = Duration::from_secs(20);

/// A try-once acquire of `lock` with a `ttl_ms` lease.
/// The lease id is chosen here, as the SDK does, so that the router may send the acquire
/// again after a leader change without making a second lease ([`Router`] does so on any
/// refusal that says "not the leader", including "outcome unknown").
fn acquire_request(lock: &str, ttl_ms: u64) -> pb::AcquireRequest {
    fenced_tests::cluster::new_lease_acquire(lock, "cluster-test", ttl_ms)
}

async fn acquire(
    router: &mut Router,
    lock: &str,
    ttl_ms: u64,
) -> Result<pb::AcquireResponse, tonic::Status> {
    send_acquire(router, &acquire_request(lock, ttl_ms)).await
}

async fn send_acquire(
    router: &mut Router,
    request: &pb::AcquireRequest,
) -> Result<pb::AcquireResponse, tonic::Status> {
    router.acquire(PATIENCE, request).await
}

async fn describe(router: &mut Router, lock: &str) -> pb::LockInfo {
    router
        .describe(PATIENCE, lock)
        .await
        .expect("the cluster describes a lock")
}

async fn renew(router: &mut Router, lease_id: &str) -> Result<pb::RenewResponse, tonic::Status> {
    let request = pb::RenewRequest {
        lease_id: lease_id.to_string(),
    };
    router
        .call(PATIENCE, |mut client| {
            let request = request.clone();
            async move { client.renew(request).await.map(tonic::Response::into_inner) }
        })
        .await
}

/// One acknowledged grant: its token, and where it stands to the kill. An acquire sent
/// before the kill and answered after it (sent again with its lease id, it finds the grant
/// the old leader made) is neither: its token may be any of the old leader's.
#[derive(Debug, Clone, Copy)]
struct Acked {
    token: u64,
    /// Acknowledged before the kill.
    before_kill: bool,
    /// Sent after the kill: granted by the new leader.
    after_kill: bool,
    at: Instant,
}

// checks: S1, S2, S3, C1, C3
// Writers take and release locks through whoever leads while the leader is killed with
// SIGKILL. Every acknowledged token is unique and every token granted after the kill (its
// acquire sent after it) is above every token acknowledged before it (S1); a lock held before the kill is held
// after it, by the same holding with the same token (S2, S3); the cluster grants again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_grant_and_issues_no_token_twice() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let kept = acquire(&mut router, "kept", 120_000)
        .await
        .expect("a first grant");

    let killed = Arc::new(Mutex::new(None::<Instant>));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let stop_at = Arc::new(Mutex::new(None::<Instant>));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (endpoints, killed, acked, stop_at) = (
            cluster.endpoints(),
            killed.clone(),
            acked.clone(),
            stop_at.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut router = Router::new(endpoints);
            let mut round = 0u64;
            loop {
                if stop_at
                    .lock()
                    .unwrap()
                    .is_some_and(|at| Instant::now() > at)
                {
                    return;
                }
                round += 1;
                // A fresh name each round: a grant whose answer was lost in the failover
                // keeps its lock until its lease ends, and must not stall the writer.
                let lock = format!("w{writer}/{round}");
                let sent_after_kill = killed.lock().unwrap().is_some();
                let Ok(grant) = acquire(&mut router, &lock, 5_000).await else {
                    continue;
                };
                let acked_before_kill = killed.lock().unwrap().is_none();
                acked.lock().unwrap().push(Acked {
                    token: grant.token,
                    before_kill: acked_before_kill,
                    after_kill: sent_after_kill,
                    at: Instant::now(),
                });
                let release = pb::ReleaseRequest {
                    lease_id: grant.lease_id,
                    lock: String::new(),
                };
                let _ = router
                    .call(PATIENCE, |mut client| {
                        let release = release.clone();
                        async move { client.release(release).await }
                    })
                    .await;
            }
        }));
    }
    // Let the load run, then kill the leader, then let it run on the new leader.
    wait_for_acks(&acked, 20).await;
    cluster.member(leader).kill();
    let kill_at = Instant::now();
    *killed.lock().unwrap() = Some(kill_at);
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.after_kill)
        .nth(20)
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "fewer than 20 grants within 30 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    *stop_at.lock().unwrap() = Some(Instant::now());
    for writer in writers {
        writer.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let mut tokens: Vec<u64> = acked.iter().map(|a| a.token).collect();
    tokens.sort_unstable();
    let before = tokens.len();
    tokens.dedup();
    assert_eq!(tokens.len(), before, "a token was acknowledged twice");
    let max_before = acked
        .iter()
        .filter(|a| a.before_kill)
        .map(|a| a.token)
        .max()
        .unwrap();
    let min_after = acked
        .iter()
        .filter(|a| a.after_kill)
        .map(|a| a.token)
        .min()
        .unwrap();
    assert!(
        min_after > max_before,
        "a token granted after the kill ({min_after}) is not above every token acknowledged before it ({max_before})"
    );
    assert!(kept.token < acked.iter().map(|a| a.token).min().unwrap());
    let first_after = acked
        .iter()
        .filter(|a| a.after_kill)
        .map(|a| a.at)
        .min()
        .unwrap();
    println!(
        "first grant {:?} after the kill of member {leader}; {} grants before, {} after",
        first_after - kill_at,
        acked.iter().filter(|a| a.before_kill).count(),
        acked.iter().filter(|a| a.after_kill).count()
    );

    let new_leader = cluster.leader(&[leader]).await;
    assert_ne!(new_leader, leader);
    let info = describe(&mut router, "kept").await;
    assert!(
        info.held,
        "the lock held before the kill is free after it: {info:?}"
    );
    assert_eq!(info.token, kept.token, "{info:?}");
    let busy = acquire(&mut router, "kept", 5_000).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
}

async fn wait_for_acks(acked: &Mutex<Vec<Acked>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} grants within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The members' longest election timeout (twice `--election-timeout-ms`, default 200).
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(400);

/// A generous bound on a promotion (the vote, the barrier's commit, reading the state
/// back) on a loaded machine, for the upper end of the lease extension.
const PROMOTION_BOUND: Duration = Duration::from_secs(5);

// checks: S3, S7, L3, C3
// A holder that renews through whoever leads keeps its lease across the leader's SIGKILL:
// the new leader restored the lease with a deadline never earlier than the holder's (its
// grant was sent at `sent`, TTL 4 s) and no later than CONTRACT C3's worst case, and then
// confirms its renewal (L3 on the server's side); nobody else can take the lock (S3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_renews_keeps_its_lease_across_the_leaders_kill() {
    const TTL: Duration = Duration::from_secs(4);
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let sent = Instant::now();
    let grant = acquire(&mut router, "held", 4_000).await.expect("a grant");
    let killed = Instant::now();
    cluster.member(leader).kill();
    // The new leader's deadline for the lease, as seen from here (between asked + remaining
    // and answered + remaining, so asked only once a leader answers: the bounds are then
    // milliseconds apart): it cannot be earlier than the holder's belief (sent + TTL), and
    // C3 bounds how much later it can be.
    let new_leader = cluster.leader(&[leader]).await;
    let mut on_new_leader = Router::new(vec![cluster.endpoint(new_leader)]);
    let asked = Instant::now();
    let restored = describe(&mut on_new_leader, "held").await;
    let answered = Instant::now();
    assert!(restored.held, "{restored:?}");
    let remaining = Duration::from_millis(restored.remaining_ms);
    assert!(
        asked + remaining >= sent + TTL,
        "the new leader ends the lease {:?} before the holder believes it ends",
        (sent + TTL) - (asked + remaining)
    );
    assert!(
        answered + remaining <= killed + 2 * ELECTION_TIMEOUT_MAX + PROMOTION_BOUND + TTL,
        "the lease lives {:?} past its TTL across the failover",
        (answered + remaining) - (sent + TTL)
    );
    let renewed = renew(&mut router, &grant.lease_id)
        .await
        .expect("a renewal through the new leader");
    assert_eq!(
        renewed.outcome,
        pb::renew_response::Outcome::Renewed as i32,
        "{renewed:?}"
    );
    let mut other = Router::new(cluster.endpoints());
    let busy = acquire(&mut other, "held", 4_000).await.unwrap_err();
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    let info = describe(&mut router, "held").await;
    assert_eq!(info.token, grant.token, "{info:?}");
}

// checks: S3, S7, C2
// A leader paused with SIGSTOP until the others elected a new one confirms nothing once
// it runs again: a renewal and an acquire sent to it are refused (not-leader), never
// answered from its stale table, and the new leader still holds the lock for its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_the_election_timeout_confirms_nothing_once_deposed() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let grant = acquire(&mut router, "held", 10_000).await.expect("a grant");
    let mut old = connect(&cluster.endpoint(leader)).await.unwrap();

    cluster.member(leader).pause();
    let new_leader = cluster.leader(&[leader]).await;
    assert_ne!(new_leader, leader);
    cluster.member(leader).resume();

    // Straight to the deposed leader, no redirect followed.
    let renewal = old
        .renew(pb::RenewRequest {
            lease_id: grant.lease_id.clone(),
        })
        .await;
    let refused = renewal.expect_err("the deposed leader confirmed a renewal");
    assert!(
        not_leader(&refused).is_some(),
        "not a not-leader refusal: {refused:?}"
    );
    let acquired = old.acquire(acquire_request("fresh", 4_000)).await;
    let refused = acquired.expect_err("the deposed leader granted a lock");
    assert!(
        not_leader(&refused).is_some(),
        "not a not-leader refusal: {refused:?}"
    );
    let info = describe(&mut router, "held").await;
    assert!(info.held && info.token == grant.token, "{info:?}");
}

// checks: S1, S2, C1
// All three members killed with SIGKILL and started again on their data directories: the
// held lock is back with its token, and the next grant's token is above every token
// issued before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_grants_and_tokens_go_on_up() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let held = acquire(&mut router, "held", 60_000).await.expect("a grant");
    let mut last = held.token;
    for round in 0..10 {
        last = acquire(&mut router, &format!("other/{round}"), 60_000)
            .await
            .expect("a grant")
            .token;
    }
    for id in 1..=3 {
        cluster.member(id).kill();
    }
    for id in 1..=3 {
        cluster.member(id).restart();
    }
    cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let info = describe(&mut router, "held").await;
    assert!(info.held && info.token == held.token, "{info:?}");
    let next = acquire(&mut router, "after-restart", 60_000)
        .await
        .expect("a grant");
    assert!(
        next.token > last,
        "token {} after the restart, {last} before",
        next.token
    );
}

// checks: S1, S3, C4
// An acquire whose answer was lost in a failover is sent again with the lease id its
// client chose: the new leader answers with the grant the first one made (the same lease
// and token), not a second lease that would wait for the first one's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_sent_again_after_a_failover_finds_its_own_grant() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let request = pb::AcquireRequest {
        new_lease_id: "6f1e1c55-55b0-4a8e-9d3c-0a4f7b2f9e10".to_string(),
        ..acquire_request("retried", 10_000)
    };
    let first = send_acquire(&mut router, &request).await.expect("a grant");
    cluster.member(leader).kill();
    let again = send_acquire(&mut router, &request)
        .await
        .expect("the same grant");
    assert_eq!(again.lease_id, first.lease_id);
    assert_eq!(again.token, first.token);
    let both = pb::AcquireRequest {
        lease_id: first.lease_id.clone(),
        ..request.clone()
    };
    let refused = router
        .call(PATIENCE, |mut client| {
            let both = both.clone();
            async move { client.acquire(both).await }
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

// checks: L3, S4, C3, C4
// The SDK, given every member, holds a lease (TTL 3 s, renewed at a third of it) while the
// leader is killed with SIGKILL: its renewals find the new leader before the local
// deadline, so the lease is never lost and its token still fences after the failover, and
// the new leader still names it the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_holder_keeps_its_lease_through_the_leaders_kill() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    cluster.leader(&[]).await;
    let client = fenced_client::Client::builder_for_cluster(cluster.endpoints())
        .holder("sdk-holder")
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    // The cluster serves before the SDK's acquire: a grant through the raw router (which
    // sends it again with its lease id across a leader change right after the start).
    let mut router = Router::new(cluster.endpoints());
    acquire(&mut router, "sdk/probe", 3_000)
        .await
        .expect("the cluster grants");
    let leader = cluster.leader(&[]).await;
    // As an application does: a transient refusal is tried again.
    let deadline = Instant::now() + PATIENCE;
    let lease = loop {
        let options = fenced_client::AcquireOptions::try_once().ttl(Duration::from_secs(3));
        match client.acquire("sdk/held", options).await {
            Ok(lease) => break lease,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no grant: {error}"),
        }
    };
    let token = lease.fence().unwrap();
    cluster.member(leader).kill();
    // Three TTLs after the kill, checked every 50 ms: never lost.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        let status = lease.status();
        assert!(
            !status.state.is_lost(),
            "lost across the failover: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = lease.status();
    assert!(status.state.is_held(), "{status:?}");
    assert_eq!(lease.fence().unwrap(), token);
    let view = client.describe("sdk/held").await.unwrap();
    assert_eq!(
        view.holder.as_ref().map(|holder| holder.token),
        Some(token),
        "{view:?}"
    );
    lease.release().await.unwrap();
}

// checks: L2, L3, S1, S3, C4
// An SDK acquire waits (60 s) on a lock held through the raw router when the leader is
// killed with SIGKILL: the SDK sends it again with its lease id and what is left of its
// wait to the new leader, where it queues again; the holder then releases, and the waiter
// gets the lock exactly once (one lease, the only waiter, a token above the holder's),
// long before its wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_waiter_cut_off_by_the_leaders_kill_waits_on_and_gets_the_lock_once() {
    const LOCK: &str = "sdk/queued";
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let held = acquire(&mut router, LOCK, 120_000)
        .await
        .expect("the holder's grant");
    let leader = cluster.leader(&[]).await;
    let client = fenced_client::Client::builder_for_cluster(cluster.endpoints())
        .holder("sdk-waiter")
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let wait = Duration::from_secs(60);
    let asked = Instant::now();
    let waiting = tokio::spawn(async move {
        let outcome = client
            .acquire(LOCK, fenced_client::AcquireOptions::wait(wait))
            .await;
        (outcome, client)
    });
    let until = Instant::now() + PATIENCE;
    while describe(&mut router, LOCK).await.waiters != 1 {
        assert!(Instant::now() < until, "the SDK's acquire never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.member(leader).kill();
    let new_leader = cluster.leader(&[leader]).await;
    // Queued again on the new leader (the old leader's queue died with it).
    let mut on_new_leader = Router::new(vec![cluster.endpoint(new_leader)]);
    let until = Instant::now() + PATIENCE;
    loop {
        let info = describe(&mut on_new_leader, LOCK).await;
        assert!(info.held && info.token == held.token, "{info:?}");
        if info.waiters == 1 {
            break;
        }
        assert!(
            !waiting.is_finished(),
            "the SDK's acquire returned instead of waiting on: {:?}",
            waiting.await.unwrap().0
        );
        assert!(
            Instant::now() < until,
            "the SDK's acquire never queued on the new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let release = pb::ReleaseRequest {
        lease_id: held.lease_id.clone(),
        lock: String::new(),
    };
    router
        .call(PATIENCE, |mut client| {
            let release = release.clone();
            async move { client.release(release).await }
        })
        .await
        .expect("the holder releases through the new leader");
    let (outcome, client) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiter is granted once the holder lets go")
        .unwrap();
    let lease = outcome.expect("the lock, after the failover");
    assert!(asked.elapsed() < wait, "granted only after its wait");
    let token = lease.fence().unwrap();
    assert!(token.get() > held.token, "{token} after {}", held.token);
    let info = describe(&mut router, LOCK).await;
    assert!(info.held && info.token == token.get(), "{info:?}");
    assert_eq!(info.waiters, 0, "{info:?}");
    lease.release().await.unwrap();
    let info = describe(&mut router, LOCK).await;
    assert!(!info.held, "a second lease holds the lock: {info:?}");
    drop(client);
}
