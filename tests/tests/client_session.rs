//! The SDK's `Session` stream against a real `fenced` server: many try-once acquires and
//! releases multiplexed on one client's stream, busy refusals as the unary call gives them,
//! a new stream after the server is killed with `kill -9` and restarted, and a burst past
//! the server's in-flight cap that waits in the client instead of being refused. Each test runs
//! twice: over the gRPC `Session` call and over the framed `Session` listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fenced_client::{AcquireOptions, Client, Error};
use fenced_tests::server::TestServer;

/// How a session client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// The gRPC `Session` call.
    Grpc,
    /// The framed `Session` listener (`--session-listen`).
    Framed,
}

/// A server that accepts short TTLs, with a framed session listener on a fixed free port
/// (so that a restart keeps it, as it keeps the gRPC port).
fn server() -> TestServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    TestServer::start_with(&["--min-ttl-ms", "50", "--session-listen", &port])
}

/// A client; `transport` matters only when `session` is on.
async fn client(server: &TestServer, holder: &str, session: bool, transport: Transport) -> Client {
    let mut builder = Client::builder(server.endpoint());
    if let (true, Transport::Framed) = (session, transport) {
        builder = builder.framed_session(server.session_addr().unwrap().to_string());
    }
    builder
        .holder(holder)
        .session(session)
        // A scheduling hiccup on a loaded machine must not count as a process pause here
        // (client_pause.rs tests those).
        .pause_threshold(Duration::from_secs(2))
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap()
}

/// One grant seen by a worker: the order it was seen in, the lock, the token.
type Grants = Arc<Mutex<Vec<(u64, String, u64)>>>;

// checks: S1, S3
#[tokio::test]
async fn many_leases_through_one_session_with_tokens_going_up_per_lock_grpc() {
    many_leases_through_one_session_with_tokens_going_up_per_lock(Transport::Grpc).await;
}

#[tokio::test]
async fn many_leases_through_one_session_with_tokens_going_up_per_lock_framed() {
    many_leases_through_one_session_with_tokens_going_up_per_lock(Transport::Framed).await;
}

async fn many_leases_through_one_session_with_tokens_going_up_per_lock(transport: Transport) {
    let server = server();
    let client = client(&server, "worker", true, transport).await;
    assert!(client.uses_session());
    const LOCKS: usize = 6;
    const WORKERS: usize = 24;
    const ROUNDS: usize = 15;

    // Phase 1: 24 workers race for 6 locks through one client, each taking and releasing
    // in turn. A grant is numbered once it is seen and before it is released, so the next
    // grant of the same lock (after that release) gets a higher number.
    let seen = Arc::new(AtomicU64::new(0));
    let grants: Grants = Arc::default();
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..LOCKS).map(|_| AtomicBool::new(false)).collect());
    let busy = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, seen, grants, held, busy) = (
            client.clone(),
            seen.clone(),
            grants.clone(),
            held.clone(),
            busy.clone(),
        );
        workers.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let index = (w + r) % LOCKS;
                let lock = format!("many/{index}");
                match client
                    .acquire(
                        &lock,
                        AcquireOptions::try_once().ttl(Duration::from_secs(10)),
                    )
                    .await
                {
                    Ok(lease) => {
                        // S3: nobody else holds this lock while we do.
                        assert!(
                            !held[index].swap(true, Ordering::SeqCst),
                            "two holders of {lock}"
                        );
                        let number = seen.fetch_add(1, Ordering::SeqCst);
                        grants
                            .lock()
                            .unwrap()
                            .push((number, lock.clone(), lease.token().get()));
                        tokio::task::yield_now().await;
                        held[index].store(false, Ordering::SeqCst);
                        lease.release().await.unwrap();
                    }
                    Err(Error::Busy {
                        lock: busy_lock,
                        holder,
                        token,
                        ..
                    }) => {
                        assert_eq!(busy_lock, lock);
                        assert_eq!(holder.as_deref(), Some("worker"));
                        assert!(token.is_some(), "busy without the holder's token");
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => panic!("unexpected error on {lock}: {other:?}"),
                }
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .unwrap()
            .unwrap();
    }

    // Phase 2: per lock, tokens strictly increase in grant order, and no token repeats
    // anywhere (S1).
    let mut grants = grants.lock().unwrap().clone();
    grants.sort();
    let total = grants.len();
    assert!(total >= LOCKS, "only {total} grants");
    let mut last: HashMap<String, u64> = HashMap::new();
    for (_, lock, token) in &grants {
        if let Some(previous) = last.insert(lock.clone(), *token) {
            assert!(*token > previous, "{lock}: token {token} after {previous}");
        }
    }
    let mut tokens: Vec<u64> = grants.iter().map(|g| g.2).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), total, "a token was issued twice");
    assert_eq!(
        total as u64 + busy.load(Ordering::SeqCst),
        (WORKERS * ROUNDS) as u64,
        "every attempt was granted or refused as busy"
    );
    assert!(
        client.uses_session(),
        "the server's Session was used throughout"
    );

    // Phase 3: every lock is free again (every release went through).
    for index in 0..LOCKS {
        let info = client.describe(&format!("many/{index}")).await.unwrap();
        assert_eq!(info.holder, None, "many/{index}");
    }
}

// checks: S1 (the busy refusal names the live holder's token)
#[tokio::test]
async fn busy_over_the_session_names_holder_and_token_as_unary_does_grpc() {
    busy_over_the_session_names_holder_and_token_as_unary_does(Transport::Grpc).await;
}

#[tokio::test]
async fn busy_over_the_session_names_holder_and_token_as_unary_does_framed() {
    busy_over_the_session_names_holder_and_token_as_unary_does(Transport::Framed).await;
}

async fn busy_over_the_session_names_holder_and_token_as_unary_does(transport: Transport) {
    let server = server();
    let alpha = client(&server, "alpha", true, transport).await;
    let beta = client(&server, "beta", true, transport).await;
    let gamma = client(&server, "gamma", false, transport).await;

    let lease = alpha.try_acquire("jobs").await.unwrap();
    let over_session = beta.try_acquire("jobs").await;
    match &over_session {
        Err(Error::Busy {
            lock,
            holder,
            token,
            ..
        }) => {
            assert_eq!(lock, "jobs");
            assert_eq!(holder.as_deref(), Some("alpha"));
            assert_eq!(*token, Some(lease.token()));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let unary = gamma.try_acquire("jobs").await;
    assert_eq!(format!("{over_session:?}"), format!("{unary:?}"));

    // The release over the session frees the lock at once, for a higher token.
    let first = lease.token();
    lease.release().await.unwrap();
    let next = beta.try_acquire("jobs").await.unwrap();
    assert!(next.token() > first);
}

// checks: S1, S2
#[tokio::test]
async fn the_session_is_reopened_after_kill_9_and_restart_grpc() {
    the_session_is_reopened_after_kill_9_and_restart(Transport::Grpc).await;
}

#[tokio::test]
async fn the_session_is_reopened_after_kill_9_and_restart_framed() {
    the_session_is_reopened_after_kill_9_and_restart(Transport::Framed).await;
}

async fn the_session_is_reopened_after_kill_9_and_restart(transport: Transport) {
    let mut server = server();
    let client = client(&server, "survivor", true, transport).await;
    let ttl = Duration::from_secs(5);

    // Phase 1: a lease taken over the session.
    let kept = client
        .acquire("kept", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    let (port, session_port) = (server.addr(), server.session_addr());

    // Phase 2: kill -9 and restart on the same data directory and ports.
    server.restart();
    assert_eq!(server.addr(), port, "the port was taken meanwhile");
    assert_eq!(
        server.session_addr(),
        session_port,
        "the session port was taken"
    );

    // Phase 3: the next acquires work on a new stream. The first may still have gone out on
    // the dead one before its reader saw the break: that fails with a transient error,
    // never silently retried; any other error fails the test.
    let mut after = None;
    let mut transient = 0;
    for _ in 0..100 {
        match client
            .acquire("after", AcquireOptions::try_once().ttl(ttl))
            .await
        {
            Ok(lease) => {
                after = Some(lease);
                break;
            }
            Err(error) if error.is_transient() => {
                transient += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("unexpected error after the restart: {other:?}"),
        }
    }
    let after = after.expect("an acquire succeeded after the restart");
    assert!(transient <= 2, "{transient} transient failures");
    assert!(after.token() > kept.token(), "S1 across the restart");
    assert!(client.uses_session());

    // Phase 4: the restored lease (S2) still holds its lock: busy, with its token, over
    // the new session; released over it, the lock goes to the next acquirer.
    match client.try_acquire("kept").await {
        Err(Error::Busy { token, .. }) => assert_eq!(token, Some(kept.token())),
        other => panic!("expected Busy, got {other:?}"),
    }
    let kept_token = kept.token();
    kept.release().await.unwrap();
    let again = client.try_acquire("kept").await.unwrap();
    assert!(again.token() > after.token());
    assert!(again.token() > kept_token);
}

// checks: L1 (a burst past the server's in-flight cap waits in the client instead of being
// refused, so no release in it is lost and every lock is free at once afterwards)
#[tokio::test]
async fn a_burst_past_the_servers_in_flight_cap_waits_in_the_client_grpc() {
    a_burst_past_the_servers_in_flight_cap_waits_in_the_client(Transport::Grpc).await;
}

#[tokio::test]
async fn a_burst_past_the_servers_in_flight_cap_waits_in_the_client_framed() {
    a_burst_past_the_servers_in_flight_cap_waits_in_the_client(Transport::Framed).await;
}

async fn a_burst_past_the_servers_in_flight_cap_waits_in_the_client(transport: Transport) {
    // The server takes 4 requests of a session at once; the client is told so.
    const CAP: usize = 4;
    const BURST: usize = 64;
    let server = TestServer::start_with_sessions(&["--max-session-in-flight", "4"]);
    let mut builder = Client::builder(server.endpoint());
    if let Transport::Framed = transport {
        builder = builder.framed_session(server.session_addr().unwrap().to_string());
    }
    let client = builder
        .holder("burst")
        .max_session_in_flight(CAP)
        .pause_threshold(Duration::from_secs(2))
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        // Generous: the burst queues in the client on a loaded machine.
        .timeouts(Duration::from_secs(3), Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.config().max_session_in_flight, CAP);

    // Phase 1: 64 try-once acquires of distinct locks at once, all over the session.
    let acquires = (0..BURST).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.try_acquire(&format!("burst/{i}")).await })
    });
    let mut leases = Vec::new();
    for (i, acquire) in futures::future::join_all(acquires)
        .await
        .into_iter()
        .enumerate()
    {
        match acquire.unwrap() {
            Ok(lease) => leases.push(lease),
            Err(error) => panic!("acquire of burst/{i} failed: {error:?}"),
        }
    }
    assert!(client.uses_session());

    // Phase 2: the 64 releases at once, all confirmed.
    let releases = leases
        .into_iter()
        .map(|lease| tokio::spawn(lease.release()));
    for (i, release) in futures::future::join_all(releases)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(error) = release.unwrap() {
            panic!("release {i} failed: {error:?}");
        }
    }
    // Every lock is free at once (read with unary calls).
    for i in 0..BURST {
        let lock = format!("burst/{i}");
        assert_eq!(client.describe(&lock).await.unwrap().holder, None, "{lock}");
    }
}
