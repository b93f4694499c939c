//! A call whose caller goes away while its answer is on the wire, against a real `fenced`
//! server: the server has granted the lock, the answer is still crossing the network (a
//! proxy delays it) when the caller drops the future. The SDK must hand that grant back at
//! once, as it promises, so another client gets the lock within moments, not after the
//! TTL. Run over each transport a try-once acquire can take: the unary call, the gRPC
//! `Session` stream (the default) and the framed session. Also here: a caller's durations
//! beyond any clock reach the server as a clear refusal, not a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fenced_client::{AcquireOptions, Client, Error, LockEventKind};
use fenced_tests::proxy::Proxy;
use fenced_tests::server::TestServer;

/// How a try-once acquire reaches the server.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// The unary `Acquire` call (`session(false)`).
    Unary,
    /// The gRPC `Session` stream.
    Session,
    /// The framed `Session` listener.
    Framed,
}

/// The TTL of the abandoned grant: long, so that waiting it out is unmistakable.
const TTL: Duration = Duration::from_secs(30);

/// How long the proxy holds each chunk, answers included.
const DELAY: Duration = Duration::from_secs(2);

// checks: L1 (the lock is free again at once, not after the abandoned grant's TTL)
#[tokio::test]
async fn a_try_once_acquire_dropped_while_its_grant_is_on_the_wire_hands_it_back_unary() {
    dropped_while_its_grant_is_on_the_wire(Transport::Unary).await;
}

// checks: L1
#[tokio::test]
async fn a_try_once_acquire_dropped_while_its_grant_is_on_the_wire_hands_it_back_session() {
    dropped_while_its_grant_is_on_the_wire(Transport::Session).await;
}

// checks: L1
#[tokio::test]
async fn a_try_once_acquire_dropped_while_its_grant_is_on_the_wire_hands_it_back_framed() {
    dropped_while_its_grant_is_on_the_wire(Transport::Framed).await;
}

async fn dropped_while_its_grant_is_on_the_wire(transport: Transport) {
    let server = TestServer::start_with_sessions(&[]);
    // The proxy sits on the path the acquire takes.
    let proxy = match transport {
        Transport::Unary | Transport::Session => Proxy::start(server.addr()).await,
        Transport::Framed => Proxy::start(server.session_addr().unwrap()).await,
    };
    let builder = match transport {
        Transport::Unary => Client::builder(proxy.endpoint()).session(false),
        Transport::Session => Client::builder(proxy.endpoint()),
        Transport::Framed => {
            Client::builder(server.endpoint()).framed_session(proxy.addr().to_string())
        }
    };
    let leaver = builder
        .holder("leaver")
        .pause_threshold(Duration::from_secs(2))
        // PINGs cross the delaying proxy too: give them time.
        .http2_keepalive(Duration::from_secs(1), Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    let other = Client::builder(server.endpoint())
        .holder("other")
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    // The connection (and the session, where there is one) is open before the delay.
    leaver
        .try_acquire("abandon/warm")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let mut events = other.watch("abandon/lock").await.unwrap();

    // Phase 1: the acquire crosses the slow proxy, and the server grants it.
    proxy.delay(DELAY);
    let attempt = tokio::spawn({
        let leaver = leaver.clone();
        async move {
            leaver
                .acquire("abandon/lock", AcquireOptions::try_once().ttl(TTL))
                .await
        }
    });
    let granted = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the server granted the acquire")
        .unwrap()
        .unwrap();
    assert_eq!(
        (granted.kind, granted.holder.as_str()),
        (LockEventKind::Acquired, "leaver")
    );

    // Phase 2: its answer is still in the proxy (for up to DELAY) when the caller drops
    // the call.
    attempt.abort();
    assert!(attempt.await.unwrap_err().is_cancelled());
    proxy.pass();

    // Phase 3: another client gets the lock within a third of the TTL: the SDK released
    // the grant nobody saw as soon as it arrived.
    let started = Instant::now();
    let lease = other
        .acquire("abandon/lock", AcquireOptions::wait(TTL / 3))
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{transport:?}: the abandoned grant still held the lock after {:?}: {error}",
                started.elapsed()
            )
        });
    assert!(lease.token() > granted.token);
    lease.release().await.unwrap();
}

// checks: the CONTRACT's "Bad input" rule: a wait no clock can hold gets the server's
// refusal naming it, not a panic in the SDK
#[tokio::test]
async fn an_endless_wait_gets_a_clear_refusal() {
    let server = TestServer::start();
    let client = Client::builder(server.endpoint())
        .pause_threshold(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let error = client
        .acquire("endless", AcquireOptions::wait(Duration::MAX))
        .await
        .unwrap_err();
    match error {
        Error::InvalidArgument { message } => {
            assert!(message.contains("wait_ms"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
