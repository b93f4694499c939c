//! The lock service over real gRPC: a real `fenced` process on a loopback port.
//! Each test is a short story; the ids it checks are named at the top of each.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::server::TestServer;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

type Client = LockServiceClient<Channel>;

fn acquire(lock: &str, ttl_ms: u64, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: format!("test-{lock}"),
        ttl_ms,
        wait_ms,
        lock_delay_ms: 0,
        lease_id: String::new(),
        new_lease_id: String::new(),
    }
}

async fn describe(client: &mut Client, lock: &str) -> pb::LockInfo {
    client
        .describe(pb::DescribeRequest { lock: lock.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Releases a whole lease, which must succeed.
async fn release_lease(client: &mut Client, lease_id: String) {
    client
        .release(pb::ReleaseRequest {
            lease_id,
            lock: String::new(),
        })
        .await
        .unwrap();
}

// checks: S1, S3, S6
#[tokio::test]
async fn acquire_contend_release_and_acquire_again() {
    let server = TestServer::start();
    let mut client = server.client().await;

    // Phase 1: a grant.
    let first = client
        .acquire(acquire("orders", 10_000, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(first.token >= 1);
    assert_eq!(first.ttl_ms, 10_000);
    let info = describe(&mut client, "orders").await;
    assert!(info.held);
    assert_eq!(
        (info.token, info.holder.as_str()),
        (first.token, "test-orders")
    );
    assert!(info.remaining_ms > 9_000 && info.remaining_ms <= 10_000);

    // Phase 2: a second acquirer is told who holds it.
    let busy = client
        .acquire(acquire("orders", 10_000, 0))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::Aborted);
    assert!(busy.message().contains("test-orders"), "{}", busy.message());
    assert!(
        busy.message().contains(&first.token.to_string()),
        "{}",
        busy.message()
    );

    // Phase 3: only the lease id releases it (S6).
    let wrong = client
        .release(pb::ReleaseRequest {
            lease_id: "5f0c4c36-1d52-4bb0-9f4c-4a8a7c59f0aa".into(),
            lock: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::NotFound);
    assert!(describe(&mut client, "orders").await.held);
    release_lease(&mut client, first.lease_id.clone()).await;
    assert!(!describe(&mut client, "orders").await.held);

    // Phase 4: the next grant has a higher token (S1), and the old lease stays released.
    let second = client
        .acquire(acquire("orders", 10_000, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(second.token > first.token);
    let late = client
        .renew(pb::RenewRequest {
            lease_id: first.lease_id,
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("released"), "{}", late.message());
}

// checks: L1, L2
#[tokio::test]
async fn waiters_are_served_in_arrival_order_at_once_on_release() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let holder = client
        .acquire(acquire("fifo", 30_000, 0))
        .await
        .unwrap()
        .into_inner();

    // Phase 1: three waiters queue, one after the other (each seen queued before the next).
    let mut waiters = Vec::new();
    for index in 0..3u32 {
        let mut waiter_client = server.client().await;
        waiters.push(tokio::spawn(async move {
            let grant = waiter_client.acquire(acquire("fifo", 30_000, 20_000)).await;
            (index, grant.map(|g| g.into_inner()), Instant::now())
        }));
        while describe(&mut client, "fifo").await.waiters != index + 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Phase 2: each release hands the lock to the next waiter, in order, with rising tokens.
    let mut lease_to_release = holder.lease_id;
    let mut last_token = holder.token;
    for (expected_index, waiter) in waiters.into_iter().enumerate() {
        let released_at = Instant::now();
        release_lease(&mut client, lease_to_release).await;
        let (index, grant, granted_at) = waiter.await.unwrap();
        let grant = grant.unwrap();
        assert_eq!(index as usize, expected_index, "L2: FIFO order");
        assert!(grant.token > last_token, "S1");
        // L1: at once (a generous bound: this is a loaded 2-core machine).
        assert!(granted_at.duration_since(released_at) < Duration::from_secs(2));
        last_token = grant.token;
        lease_to_release = grant.lease_id;
    }
}

// checks: L1, S3, S7
#[tokio::test]
async fn an_expired_lease_is_reaped_and_its_lock_handed_on() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let mut waiter_client = server.client().await;
    // The first lease's TTL starts when the server grants it, which is after this instant:
    // the second grant cannot come sooner than a full TTL from here.
    let started = Instant::now();
    let first = client
        .acquire(acquire("expiring", 300, 0))
        .await
        .unwrap()
        .into_inner();
    let second = waiter_client
        .acquire(acquire("expiring", 10_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    // Not before the first lease's TTL (S3)...
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(second.token > first.token);
    // ...and the first lease is lost for good (S7).
    let renew = client
        .renew(pb::RenewRequest {
            lease_id: first.lease_id,
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::FailedPrecondition);
    assert!(renew.message().contains("expired"), "{}", renew.message());
}

// checks: L2
#[tokio::test]
async fn a_waiter_that_times_out_or_disconnects_leaves_the_queue() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let holder = client
        .acquire(acquire("q", 30_000, 0))
        .await
        .unwrap()
        .into_inner();

    // Phase 1: a waiter times out with ABORTED naming the holder.
    let timed_out = client.acquire(acquire("q", 30_000, 200)).await.unwrap_err();
    assert_eq!(timed_out.code(), Code::Aborted);
    assert!(
        timed_out.message().contains("timed out"),
        "{}",
        timed_out.message()
    );
    assert_eq!(describe(&mut client, "q").await.waiters, 0);

    // Phase 2: a waiter whose request is dropped (client gone) leaves the queue.
    let mut leaving = server.client().await;
    let pending = tokio::spawn(async move { leaving.acquire(acquire("q", 30_000, 20_000)).await });
    while describe(&mut client, "q").await.waiters != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pending.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&mut client, "q").await.waiters != 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled waiter stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Phase 3: released, the lock is free, never granted to the departed waiter.
    release_lease(&mut client, holder.lease_id).await;
    assert!(!describe(&mut client, "q").await.held);
    client.acquire(acquire("q", 30_000, 0)).await.unwrap();
}

// checks: L3, S7
#[tokio::test]
async fn keep_alive_renews_many_leases_on_one_stream() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let a = client
        .acquire(acquire("ka/a", 400, 0))
        .await
        .unwrap()
        .into_inner();
    let b = client
        .acquire(acquire("ka/b", 400, 0))
        .await
        .unwrap()
        .into_inner();

    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let mut responses = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    // Renew both well past their TTL: they stay held (L3).
    for _ in 0..8 {
        for lease in [&a.lease_id, &b.lease_id] {
            sender
                .send(pb::RenewRequest {
                    lease_id: lease.clone(),
                })
                .await
                .unwrap();
            let response = responses.next().await.unwrap().unwrap();
            assert_eq!(response.outcome(), pb::renew_response::Outcome::Renewed);
            assert_eq!(response.ttl_ms, 400);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(describe(&mut client, "ka/a").await.held);
    assert!(describe(&mut client, "ka/b").await.held);

    // Released and malformed ids get outcomes, and the stream stays open.
    release_lease(&mut client, a.lease_id.clone()).await;
    sender
        .send(pb::RenewRequest {
            lease_id: a.lease_id.clone(),
        })
        .await
        .unwrap();
    let released = responses.next().await.unwrap().unwrap();
    assert_eq!(released.outcome(), pb::renew_response::Outcome::Released);
    sender
        .send(pb::RenewRequest {
            lease_id: "nope".into(),
        })
        .await
        .unwrap();
    let invalid = responses.next().await.unwrap().unwrap();
    assert_eq!(invalid.outcome(), pb::renew_response::Outcome::Invalid);
    sender
        .send(pb::RenewRequest {
            lease_id: b.lease_id.clone(),
        })
        .await
        .unwrap();
    let renewed = responses.next().await.unwrap().unwrap();
    assert_eq!(renewed.outcome(), pb::renew_response::Outcome::Renewed);
}

// checks: S1
#[tokio::test]
async fn one_lease_holds_many_locks_each_with_its_own_token() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let first = client
        .acquire(acquire("many/1", 5_000, 0))
        .await
        .unwrap()
        .into_inner();
    let mut join = acquire("many/2", 999, 0);
    join.lease_id = first.lease_id.clone();
    let second = client.acquire(join).await.unwrap().into_inner();
    assert_eq!(second.lease_id, first.lease_id);
    assert_eq!(
        second.ttl_ms, 5_000,
        "a lease keeps the TTL it was created with"
    );
    assert!(second.token > first.token);

    let listed = client
        .list(pb::ListRequest {
            prefix: "many/".into(),
            page_size: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.locks.iter().map(|l| l.lock.as_str()).collect();
    assert_eq!(names, ["many/1", "many/2"]);

    // Release one lock; the lease and the other lock stay.
    client
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id.clone(),
            lock: "many/1".into(),
        })
        .await
        .unwrap();
    assert!(!describe(&mut client, "many/1").await.held);
    assert!(describe(&mut client, "many/2").await.held);
    let not_held = client
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id.clone(),
            lock: "many/1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_held.code(), Code::FailedPrecondition);
}

// checks: S5 (the server side of the strict check)
#[tokio::test]
async fn check_token_tells_the_live_holders_token() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let check = |token: u64| pb::CheckTokenRequest {
        lock: "ct".into(),
        token,
    };
    let free = client.check_token(check(1)).await.unwrap().into_inner();
    assert_eq!((free.current, free.current_token), (false, 0));
    let grant = client
        .acquire(acquire("ct", 5_000, 0))
        .await
        .unwrap()
        .into_inner();
    let live = client
        .check_token(check(grant.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((live.current, live.current_token), (true, grant.token));
    let stale = client
        .check_token(check(grant.token - 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stale.current, stale.current_token), (false, grant.token));
}

#[tokio::test]
async fn watch_sees_acquire_release_and_expiry() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let mut events = client
        .watch(pb::WatchRequest {
            lock: String::new(),
            prefix: "w/".into(),
            start_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Another lock outside the prefix must not show up.
    client.acquire(acquire("other", 5_000, 0)).await.unwrap();
    let a = client
        .acquire(acquire("w/a", 5_000, 0))
        .await
        .unwrap()
        .into_inner();
    release_lease(&mut client, a.lease_id).await;
    let b = client
        .acquire(acquire("w/b", 200, 0))
        .await
        .unwrap()
        .into_inner();

    let mut seen = Vec::new();
    let mut revisions = Vec::new();
    for _ in 0..4 {
        let event = next_change(&mut events).await;
        revisions.push(event.revision);
        seen.push((event.kind(), event.lock, event.token));
    }
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "revisions go up: {revisions:?}"
    );
    use pb::watch_event::Kind;
    assert_eq!(
        seen,
        [
            (Kind::Acquired, "w/a".to_string(), a.token),
            (Kind::Released, "w/a".to_string(), a.token),
            (Kind::Acquired, "w/b".to_string(), b.token),
            (Kind::Expired, "w/b".to_string(), b.token),
        ]
    );
}

// checks: S6 (bad input changes nothing and names the problem)
#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let cases: Vec<(pb::AcquireRequest, Code, &str)> = vec![
        (acquire("", 1_000, 0), Code::InvalidArgument, "empty"),
        (
            acquire(&"x".repeat(257), 1_000, 0),
            Code::InvalidArgument,
            "257 bytes",
        ),
        (
            acquire("bad\u{7}name", 1_000, 0),
            Code::InvalidArgument,
            "control character",
        ),
        (acquire("ttl", 99, 0), Code::InvalidArgument, "ttl"),
        (acquire("ttl", 3_600_001, 0), Code::InvalidArgument, "ttl"),
        (
            pb::AcquireRequest {
                lease_id: "not-a-uuid".into(),
                ..acquire("lid", 1_000, 0)
            },
            Code::InvalidArgument,
            "lease_id",
        ),
        (
            pb::AcquireRequest {
                lease_id: "5f0c4c36-1d52-4bb0-9f4c-4a8a7c59f0aa".into(),
                ..acquire("lid", 1_000, 0)
            },
            Code::NotFound,
            "unknown",
        ),
        (
            pb::AcquireRequest {
                wait_ms: 10_000_000,
                ..acquire("w", 1_000, 0)
            },
            Code::InvalidArgument,
            "wait_ms",
        ),
        (
            pb::AcquireRequest {
                holder: "h".repeat(300),
                ..acquire("h", 1_000, 0)
            },
            Code::InvalidArgument,
            "holder",
        ),
    ];
    for (request, code, needle) in cases {
        let status = client.acquire(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{:?} lacks {needle:?}",
            status.message()
        );
    }
    let renew = client
        .renew(pb::RenewRequest {
            lease_id: "zzz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::InvalidArgument);
    let watch = client
        .watch(pb::WatchRequest {
            lock: "a".into(),
            prefix: "b".into(),
            start_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::InvalidArgument);

    // Nothing changed: no lock is held, and the server still serves.
    let listed = client
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.locks.is_empty(), "{listed:?}");
    client.acquire(acquire("fine", 1_000, 0)).await.unwrap();
}

// checks: S2
#[tokio::test]
async fn health_says_serving_and_sigterm_shuts_down_cleanly_keeping_leases() {
    let mut server = TestServer::start();
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "fenced.v1.LockService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let mut client = server.client().await;
    let grant = client
        .acquire(acquire("graceful", 60_000, 0))
        .await
        .unwrap()
        .into_inner();
    drop(client);
    drop(health);
    assert!(
        server.stop().is_some_and(|status| status.success()),
        "SIGTERM: a clean exit"
    );
    server.restart();
    let mut client = server.client().await;
    let info = describe(&mut client, "graceful").await;
    assert!(info.held && info.token == grant.token);
    client
        .renew(pb::RenewRequest {
            lease_id: grant.lease_id,
        })
        .await
        .unwrap();
}

// checks: S1, S6, L1, L2
#[tokio::test]
async fn a_session_stream_carries_acquire_renew_and_release_out_of_order() {
    use pb::session_request::Op;
    use pb::session_response::Result as Outcome;
    let server = TestServer::start();
    let mut client = server.client().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let mut responses = client
        .session(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();

    // Phase 1: a grant, then a busy refusal that names the holder and token.
    sender
        .send(pb::SessionRequest {
            id: 1,
            op: Some(Op::Acquire(acquire("s", 30_000, 0))),
        })
        .await
        .unwrap();
    let Some(Outcome::Acquired(first)) = next(&mut responses).await.result else {
        panic!("not granted")
    };
    sender
        .send(pb::SessionRequest {
            id: 2,
            op: Some(Op::Acquire(acquire("s", 30_000, 0))),
        })
        .await
        .unwrap();
    let busy = next(&mut responses).await;
    let Some(Outcome::Error(error)) = busy.result else {
        panic!("not refused")
    };
    assert_eq!(
        (busy.id, error.code, error.error_code.as_str()),
        (2, Code::Aborted as i32, "busy")
    );
    assert_eq!(
        (error.holder.as_str(), error.token),
        ("test-s", first.token)
    );

    // Phase 2: a queued acquire (id 3) does not hold up a renew (id 4) and a release (id 5),
    // which hands the lock to it at once.
    sender
        .send(pb::SessionRequest {
            id: 3,
            op: Some(Op::Acquire(acquire("s", 30_000, 20_000))),
        })
        .await
        .unwrap();
    while describe(&mut client, "s").await.waiters != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender
        .send(pb::SessionRequest {
            id: 4,
            op: Some(Op::Renew(pb::RenewRequest {
                lease_id: first.lease_id.clone(),
            })),
        })
        .await
        .unwrap();
    let renewed = next(&mut responses).await;
    assert_eq!(renewed.id, 4);
    assert!(matches!(renewed.result, Some(Outcome::Renewed(_))));
    let release = pb::ReleaseRequest {
        lease_id: first.lease_id.clone(),
        lock: String::new(),
    };
    sender
        .send(pb::SessionRequest {
            id: 5,
            op: Some(Op::Release(release)),
        })
        .await
        .unwrap();
    let mut answers = [next(&mut responses).await, next(&mut responses).await];
    answers.sort_by_key(|a| a.id);
    assert!(matches!(answers[0].result, Some(Outcome::Acquired(ref g)) if g.token > first.token));
    assert!(matches!(answers[1].result, Some(Outcome::Released(_))));

    // Phase 3: the client goes away with an acquire queued: it leaves the queue (L2).
    sender
        .send(pb::SessionRequest {
            id: 6,
            op: Some(Op::Acquire(acquire("s", 30_000, 20_000))),
        })
        .await
        .unwrap();
    while describe(&mut client, "s").await.waiters != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sender);
    drop(responses);
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&mut client, "s").await.waiters != 0 {
        assert!(
            Instant::now() < deadline,
            "the departed session's waiter stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next(responses: &mut tonic::Streaming<pb::SessionResponse>) -> pb::SessionResponse {
    tokio::time::timeout(Duration::from_secs(20), responses.next())
        .await
        .expect("an answer within 20 s")
        .unwrap()
        .unwrap()
}

/// A SIGTERM sent the moment the server says it is ready shuts it down in order (exit 0),
/// for the server and for the gated store: the handlers are installed before the
/// "listening" line, not when the shutdown future is first polled (until then the default
/// action would kill the process).
#[test]
fn a_sigterm_right_after_the_ready_line_shuts_down_in_order() {
    for round in 0..3 {
        let mut server = TestServer::start_with_sessions(&[]);
        let status = server.stop().expect("it was running");
        assert!(status.success(), "fenced, round {round}: {status:?}");
        let mut kv = fenced_tests::kv_server::TestKv::start();
        let status = kv.stop().expect("it was running");
        assert!(status.success(), "fenced-kv, round {round}: {status:?}");
    }
}

// checks: L2 (a waiter whose client vanished without closing leaves the queue), L1
#[tokio::test]
async fn a_waiter_cut_off_by_a_partition_leaves_the_queue_after_the_keepalive() {
    let server = TestServer::start_with(&[
        "--keepalive-interval-ms",
        "300",
        "--keepalive-timeout-ms",
        "600",
    ]);
    let proxy = fenced_tests::proxy::Proxy::start(server.addr()).await;
    let mut client = server.client().await;
    let holder = client
        .acquire(acquire("cut", 30_000, 0))
        .await
        .unwrap()
        .into_inner();
    let waiters_are = |count: u32, within: Duration| {
        let mut client = client.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                let waiters = describe(&mut client, "cut").await.waiters;
                if waiters == count {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{waiters} waiters, expected {count}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Two waiters with long waits: the first through the proxy, the second direct.
    let mut cut_off = LockServiceClient::connect(proxy.endpoint()).await.unwrap();
    let first = tokio::spawn(async move { cut_off.acquire(acquire("cut", 30_000, 60_000)).await });
    waiters_are(1, Duration::from_secs(20)).await;
    let mut direct = server.client().await;
    let second = tokio::spawn(async move { direct.acquire(acquire("cut", 30_000, 60_000)).await });
    waiters_are(2, Duration::from_secs(20)).await;

    // A partition: the first waiter's connection stays open but nothing moves. The
    // server's PING goes unanswered, it closes the connection, and the waiter leaves.
    proxy.black_hole();
    waiters_are(1, Duration::from_secs(15)).await;
    // The healthy connection answers its PINGs and keeps its place through several rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    waiters_are(1, Duration::ZERO).await;

    // Released, the lock goes to the waiter still there, never to the one cut off.
    release_lease(&mut client, holder.lease_id).await;
    let granted = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner();
    let info = describe(&mut client, "cut").await;
    assert!(info.held && info.token == granted.token, "{info:?}");
    assert!(granted.token > holder.token);
    first.abort();
}

// checks: S6 (a refused acquire changes nothing and names the problem)
#[tokio::test]
async fn a_lease_at_its_lock_cap_is_refused_one_more_and_keeps_what_it_holds() {
    let server = TestServer::start_with(&["--max-locks-per-lease", "2"]);
    let mut client = server.client().await;
    let join = |lock: &str, lease_id: &str| pb::AcquireRequest {
        lease_id: lease_id.to_string(),
        ..acquire(lock, 30_000, 0)
    };

    // Phase 1: a lease takes as many locks as it may.
    let first = client
        .acquire(acquire("cap/1", 30_000, 0))
        .await
        .unwrap()
        .into_inner();
    client
        .acquire(join("cap/2", &first.lease_id))
        .await
        .unwrap();

    // Phase 2: one more is refused, naming the limit and the lease.
    let short = &first.lease_id[..8];
    for wait_ms in [0, 5_000] {
        let refused = client
            .acquire(pb::AcquireRequest {
                wait_ms,
                ..join("cap/3", &first.lease_id)
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains(short) && refused.message().contains(" 2 "),
            "{:?} names neither the lease {short} nor the limit 2",
            refused.message()
        );
        assert_eq!(
            refused
                .metadata()
                .get(fenced_proto::metadata::ERROR_CODE)
                .and_then(|code| code.to_str().ok()),
            Some("lease-full")
        );
        let info = describe(&mut client, "cap/3").await;
        assert!(!info.held && info.waiters == 0, "{info:?}");
    }
    assert!(describe(&mut client, "cap/1").await.held);
    assert!(describe(&mut client, "cap/2").await.held);

    // Phase 3: a lock released makes room again.
    client
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id.clone(),
            lock: "cap/2".into(),
        })
        .await
        .unwrap();
    let third = client
        .acquire(join("cap/3", &first.lease_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.lease_id, first.lease_id);
}

// checks: S6 (a refused watch names the limit; the server keeps serving everyone else)
#[tokio::test]
async fn watch_streams_are_capped_and_a_closed_one_frees_its_place() {
    let server = TestServer::start_with(&["--max-watchers", "2"]);
    let mut client = server.client().await;
    let everything = || pb::WatchRequest {
        lock: String::new(),
        prefix: String::new(),
        start_revision: 0,
    };

    // Phase 1: two watchers fill the server's places; a third is refused.
    let mut first = client.watch(everything()).await.unwrap().into_inner();
    let mut second = client.watch(everything()).await.unwrap().into_inner();
    let refused = client.watch(everything()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("watchers") && refused.message().contains(" 2 "),
        "{:?} does not name the limit of 2 watchers",
        refused.message()
    );

    // Phase 2: both watchers still see every change.
    let grant = client
        .acquire(acquire("watched", 30_000, 0))
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut first, &mut second] {
        let event = next_change(stream).await;
        assert_eq!((event.lock.as_str(), event.token), ("watched", grant.token));
    }

    // Phase 3: a watcher that closes frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut third = loop {
        match client.watch(everything()).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "the closed watcher's place was not freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    release_lease(&mut client, grant.lease_id).await;
    for stream in [&mut second, &mut third] {
        let event = next_change(stream).await;
        assert_eq!(event.kind(), pb::watch_event::Kind::Released);
    }
}

/// The next event of a watch stream that is a change (the progress mark skipped), within
/// 10 s.
async fn next_change(stream: &mut tonic::Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if event.kind() != pb::watch_event::Kind::Progress {
            return event;
        }
    }
}

/// Pages through List with `page_size`, checking each page's size; returns every lock.
async fn list_all(
    client: &mut Client,
    prefix: &str,
    page_size: u32,
    max_page: usize,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1_000 {
        let page = client
            .list(pb::ListRequest {
                prefix: prefix.to_string(),
                page_size,
                cursor,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.locks.len() <= max_page,
            "a page of {} locks, over {max_page}",
            page.locks.len()
        );
        names.extend(page.locks.into_iter().map(|info| info.lock));
        if page.next_cursor.is_empty() {
            return names;
        }
        cursor = page.next_cursor;
    }
    panic!("paging did not end after 1,000 pages");
}

// checks: S6 (bad cursors get INVALID_ARGUMENT and change nothing)
#[tokio::test]
async fn list_pages_through_every_held_lock_once_in_name_order() {
    let server = TestServer::start_with(&["--max-list-page", "50"]);
    let mut client = server.client().await;

    // Phase 1: 120 locks under a prefix, taken out of order on 4 leases, and a few around it.
    let mut wanted: Vec<String> = (0..120).map(|i| format!("page/{i:03}")).collect();
    let mut leases: Vec<String> = Vec::new();
    for step in 0..120 {
        let name = &wanted[(step * 37) % 120];
        let lease_id = leases.get(step % 4).cloned().unwrap_or_default();
        let grant = client
            .acquire(pb::AcquireRequest {
                lease_id,
                ..acquire(name, 60_000, 0)
            })
            .await
            .unwrap()
            .into_inner();
        if leases.len() < 4 {
            leases.push(grant.lease_id);
        }
    }
    for outside in ["page", "pagd/1", "pagf/1", "other"] {
        client.acquire(acquire(outside, 60_000, 0)).await.unwrap();
    }
    wanted.sort();

    // Phase 2: small pages return every lock exactly once, in name order.
    for page_size in [1, 7, 40, 120, 121] {
        assert_eq!(
            list_all(&mut client, "page/", page_size, page_size as usize).await,
            wanted,
            "page size {page_size}"
        );
    }
    let mut everything = wanted.clone();
    everything.extend(["page", "pagd/1", "pagf/1", "other"].map(String::from));
    everything.sort();
    assert_eq!(list_all(&mut client, "", 9, 9).await, everything);

    // Phase 3: a huge page size is clamped to the server's maximum of 50.
    for page_size in [0, 51, u32::MAX] {
        let page = client
            .list(pb::ListRequest {
                prefix: "page/".into(),
                page_size,
                cursor: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.locks.len(), 50, "page size {page_size}");
        assert!(!page.next_cursor.is_empty());
        assert_eq!(list_all(&mut client, "page/", page_size, 50).await, wanted);
    }

    // Phase 4: bad cursors are refused, a cursor past the end ends the listing.
    let bad = [
        ("pagf/1", "not under the prefix"),
        ("other", "not under the prefix"),
        ("page/\u{7}", "control character"),
        (&*"page/x".repeat(50), "bytes"),
    ];
    for (cursor, needle) in bad {
        let refused = client
            .list(pb::ListRequest {
                prefix: "page/".into(),
                page_size: 10,
                cursor: cursor.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{cursor:?}: {refused:?}"
        );
        assert!(
            refused.message().contains("cursor") && refused.message().contains(needle),
            "{:?} lacks {needle:?}",
            refused.message()
        );
    }
    let past = client
        .list(pb::ListRequest {
            prefix: "page/".into(),
            page_size: 10,
            cursor: "page/999".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        past.locks.is_empty() && past.next_cursor.is_empty(),
        "{past:?}"
    );
    assert_eq!(list_all(&mut client, "page/", 0, 50).await, wanted);
}
