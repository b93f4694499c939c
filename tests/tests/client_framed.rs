//! The SDK's framed session (`ClientBuilder::framed_session`) where it differs from the
//! gRPC `Session` stream: its traffic goes to the framed listener, an unreachable listener
//! is a transient error that changes nothing, settings that would leave TLS unverified or
//! cannot work are refused before connecting, and a connection that dies silently (a partition: no
//! FIN, no RST) is retired after one request times out instead of swallowing every later
//! request, and an idle session answers the server's keepalive pings. (The behaviour both transports share is in `client_session.rs`, which runs
//! every test over each.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_client::{Client, Error, FramedTls};
use fenced_tests::proxy::Proxy;
use fenced_tests::server::TestServer;

fn builder(server: &TestServer, framed: impl Into<String>) -> fenced_client::ClientBuilder {
    Client::builder(server.endpoint())
        .holder("framed")
        .framed_session(framed)
        // A scheduling hiccup on a loaded machine must not count as a process pause here.
        .pause_threshold(Duration::from_secs(2))
        .retry(Duration::from_millis(20), Duration::from_millis(200))
}

// checks: S1
#[tokio::test]
async fn try_once_acquires_and_releases_travel_over_the_framed_listener() {
    let server = TestServer::start_with_sessions(&[]);
    let proxy = Proxy::start(server.session_addr().unwrap()).await;
    let client = builder(&server, proxy.addr().to_string())
        .connect()
        .await
        .unwrap();
    assert_eq!(proxy.accepted(), 0, "the session opens on first use");

    let first = client.try_acquire("framed/route").await.unwrap();
    assert_eq!(
        proxy.accepted(),
        1,
        "the acquire went to the framed listener"
    );
    let first_token = first.token();
    first.release().await.unwrap();
    let second = client.try_acquire("framed/route").await.unwrap();
    assert!(second.token() > first_token);
    second.release().await.unwrap();
    assert_eq!(
        proxy.accepted(),
        1,
        "one connection carried the whole session"
    );
    assert!(client.uses_session());
    // The releases went through: the lock is free (read over gRPC, not the proxy).
    assert_eq!(client.describe("framed/route").await.unwrap().holder, None);
}

#[tokio::test]
async fn an_unreachable_framed_listener_is_a_transient_error_that_takes_nothing() {
    // The server has no framed listener; a port that was free a moment ago stands in for
    // one that is down.
    let server = TestServer::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = builder(&server, closed.to_string())
        .timeouts(Duration::from_secs(3), Duration::from_secs(3))
        .connect()
        .await
        .unwrap();

    let error = client.try_acquire("framed/down").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        error.to_string().contains(&closed.to_string()),
        "the error names the framed address: {error}"
    );
    assert_eq!(client.describe("framed/down").await.unwrap().holder, None);
}

#[tokio::test]
async fn framed_settings_that_cannot_work_are_refused_before_connecting() {
    let server = TestServer::start_with_sessions(&[]);
    let framed = server.session_addr().unwrap().to_string();

    let off = builder(&server, framed.clone())
        .session(false)
        .connect()
        .await;
    match off {
        Err(Error::Config { field, why }) => {
            assert_eq!(field, "framed_session");
            assert!(why.contains("session is off"), "{why}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    let url = builder(&server, format!("http://{framed}")).connect().await;
    match url {
        Err(Error::Config { field, why }) => {
            assert_eq!(field, "framed_session");
            assert!(why.contains("host:port"), "{why}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    // TLS on the gRPC endpoint means a TLS framed session, which needs its CA: without
    // one the session's lease ids (bearer secrets) would have no verified server.
    // Refused before any connection is made.
    let tls = Client::builder("https://127.0.0.1:1")
        .framed_session(framed.clone())
        .connect()
        .await;
    match tls {
        Err(Error::Config { field, why }) => {
            assert_eq!(field, "framed_tls");
            assert!(why.contains("TLS"), "{why}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    // And the other way round: a framed TLS setting next to plaintext gRPC is a mistake
    // (the framed listener serves TLS only when gRPC does).
    let ca = fenced_tests::pki::TestPki::new().ca;
    let mismatched = builder(&server, framed)
        .framed_tls(FramedTls::new(ca))
        .connect()
        .await;
    match mismatched {
        Err(Error::Config { field, why }) => {
            assert_eq!(field, "framed_tls");
            assert!(why.contains("plaintext"), "{why}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

// checks: L2 (a grant whose caller gave up is released, not left held for its TTL)
#[tokio::test]
async fn a_silently_dead_connection_is_retired_after_a_timeout() {
    let server = TestServer::start_with_sessions(&[]);
    let proxy = Proxy::start(server.session_addr().unwrap()).await;
    let request_timeout = Duration::from_secs(1);
    let client = builder(&server, proxy.addr().to_string())
        .timeouts(Duration::from_secs(3), request_timeout)
        .connect()
        .await
        .unwrap();
    let warm = client.try_acquire("framed/warm").await.unwrap();
    warm.release().await.unwrap();
    assert_eq!(proxy.accepted(), 1);

    // A partition: the connection stays open, nothing moves.
    proxy.black_hole();
    let error = client.try_acquire("framed/cut").await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout { .. }),
        "expected a timeout, got {error:?}"
    );
    // The next request does not queue behind the dead connection: it opens a new one
    // (which the partition swallows too).
    let error = client.try_acquire("framed/cut").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(
        proxy.accepted(),
        2,
        "the timed-out connection was retired and a new one opened"
    );

    // Healed: the held-back acquire reaches the server and is granted to nobody waiting;
    // the SDK releases that orphan grant, and new requests work.
    proxy.pass();
    let mut after = None;
    for _ in 0..100 {
        match client.try_acquire("framed/after").await {
            Ok(lease) => {
                after = Some(lease);
                break;
            }
            Err(error) if error.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("unexpected error after healing: {other:?}"),
        }
    }
    let after = after.expect("an acquire succeeded once the partition healed");
    after.release().await.unwrap();
    // The orphan grant of "framed/cut" (if the held-back request was applied) is released
    // by the SDK, not left for its 10 s TTL. Wide margin: 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = client.describe("framed/cut").await.unwrap();
        if info.holder.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan grant of framed/cut is still held: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// checks: S1 (an idle framed session answers the server's keepalive pings, so the server
// does not take it for a vanished client and close it: its requests keep one connection)
#[tokio::test]
async fn an_idle_framed_session_answers_the_keepalive_and_keeps_its_connection() {
    let server = TestServer::start_with_sessions(&[
        "--keepalive-interval-ms",
        "300",
        "--keepalive-timeout-ms",
        "600",
    ]);
    let proxy = Proxy::start(server.session_addr().unwrap()).await;
    let client = builder(&server, proxy.addr().to_string())
        .connect()
        .await
        .unwrap();
    let held = client.try_acquire("framed/idle").await.unwrap();
    assert_eq!(proxy.accepted(), 1);

    // Ten keepalive intervals with nothing to say (renewals travel on the KeepAlive
    // stream, not this connection): the server pings, the SDK answers. Unanswered, the
    // server would close the connection after 0.9 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_token = held.token();
    held.release().await.unwrap();
    let next = client.try_acquire("framed/idle").await.unwrap();
    assert!(next.token() > held_token);
    next.release().await.unwrap();
    assert_eq!(
        proxy.accepted(),
        1,
        "one connection throughout: the server never closed it as silent"
    );
}
