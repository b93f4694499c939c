//! What one client may hold of what all clients share, against a real `fenced` process:
//! a connection that never finishes its handshake is closed after `--handshake-timeout-ms`
//! (TLS or not, on both listeners); one gRPC connection gets at most
//! `--max-concurrent-streams` streams and its further calls wait their turn; each listener
//! takes at most `--max-connections` connections, refuses the next at once, keeps serving
//! the open ones, and takes a new one when one closes. (A framed session's cap on requests
//! in flight, `--max-session-in-flight`, is in `server_framed.rs`.)
//!
//! Each test names the contract ids it checks. Real time is used only with wide margins,
//! and a timeout is only ever checked from below (nothing closed before it) and against a
//! generous ceiling.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fenced_proto::framed::{codec, HELLO};
use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::server::TestServer;
use futures::{SinkExt, StreamExt};
use prost::bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tonic::transport::Channel;

/// How long an answer, or the close of a connection, may take: wide, for a loaded 2-core
/// machine.
const PATIENCE: Duration = Duration::from_secs(20);

type Grpc = LockServiceClient<Channel>;

fn acquire(lock: &str, holder: &str, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: holder.to_string(),
        ttl_ms: 30_000,
        wait_ms,
        lock_delay_ms: 0,
        lease_id: String::new(),
        new_lease_id: String::new(),
    }
}

async fn describe(grpc: &mut Grpc, lock: &str) -> pb::LockInfo {
    grpc.describe(pb::DescribeRequest { lock: lock.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls Describe until `lock` has `waiters` queued, within [`PATIENCE`].
async fn waiters_reach(grpc: &mut Grpc, lock: &str, waiters: u32) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = describe(grpc, lock).await;
        if info.waiters == waiters {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{lock} never had {waiters} waiters: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until the peer closes the connection (EOF or a reset), within [`PATIENCE`];
/// panics if it sends anything or keeps the connection open.
async fn closed_by_server(mut stream: impl AsyncRead + Unpin, context: &str) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "{context}: expected the connection closed, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_elapsed) => panic!("{context}: the server kept the connection open for {PATIENCE:?}"),
    }
}

/// A TCP connection that says nothing is closed by the server, not before `timeout`.
async fn a_silent_connection_is_closed_after(addr: SocketAddr, timeout: Duration, what: &str) {
    let opened = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    closed_by_server(stream, what).await;
    let lasted = opened.elapsed();
    assert!(
        lasted >= timeout - Duration::from_millis(50),
        "{what}: closed after {lasted:?}, before the handshake timeout {timeout:?}"
    );
}

/// The server's certificate and key written to `dir`, and the flags that serve them, and
/// the CA a client trusts.
fn tls_files(dir: &std::path::Path) -> (Vec<String>, String) {
    let pki = fenced_tests::pki::TestPki::new();
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, pki.server_cert).unwrap();
    std::fs::write(&key, pki.server_key).unwrap();
    let flags = vec![
        "--tls-cert".to_string(),
        cert.to_str().unwrap().to_string(),
        "--tls-key".to_string(),
        key.to_str().unwrap().to_string(),
    ];
    (flags, pki.ca)
}

// checks: one client cannot exhaust what all share: a connection that never completes its
// handshake (TLS, then the HTTP/2 preface or the framed hello) is closed after
// --handshake-timeout-ms on both listeners, over TLS and plaintext, while a client that
// does its handshake is served
#[tokio::test]
async fn connections_that_never_finish_their_handshake_are_closed_after_the_timeout() {
    let timeout = Duration::from_millis(500);
    let timeout_flags = ["--handshake-timeout-ms", "500"];

    // Phase 1: a TLS server. A TCP connection that never says hello is closed, on the gRPC
    // listener and on the framed one.
    let dir = tempfile::tempdir().unwrap();
    let (tls_flags, ca) = tls_files(dir.path());
    let mut flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    flags.extend(timeout_flags);
    let server = TestServer::start_with_sessions(&flags);
    let sessions = server.session_addr().unwrap();
    a_silent_connection_is_closed_after(server.addr(), timeout, "gRPC over TLS").await;
    a_silent_connection_is_closed_after(sessions, timeout, "framed over TLS").await;

    // Phase 2: a TLS handshake that completes, then silence: no HTTP/2 preface on gRPC, no
    // hello on the framed listener. Closed too.
    let connector = fenced_proto::framed_tls::connector(ca.as_bytes()).unwrap();
    for (addr, what) in [(server.addr(), "gRPC"), (sessions, "framed")] {
        let opened = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("the TLS handshake completes");
        closed_by_server(tls, &format!("{what}: TLS done, then silence")).await;
        assert!(opened.elapsed() >= timeout - Duration::from_millis(50));
    }

    // Phase 3: a client that does its handshake is served, and stays connected past the
    // handshake timeout.
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "https://localhost:{}",
        server.addr().port()
    ))
    .unwrap()
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
            .domain_name("localhost"),
    )
    .unwrap()
    .connect()
    .await
    .expect("a TLS client connects");
    let mut grpc = LockServiceClient::new(channel);
    assert!(!describe(&mut grpc, "nothing").await.held);
    tokio::time::sleep(timeout * 3).await;
    assert!(!describe(&mut grpc, "nothing").await.held);
    drop(server);

    // Phase 4: a plaintext server. A connection that sends no HTTP/2 preface, or no hello,
    // is closed as well.
    let server = TestServer::start_with_sessions(&timeout_flags);
    a_silent_connection_is_closed_after(server.addr(), timeout, "gRPC in plaintext").await;
    let sessions = server.session_addr().unwrap();
    a_silent_connection_is_closed_after(sessions, timeout, "framed in plaintext").await;
    let mut grpc = server.client().await;
    tokio::time::sleep(timeout * 3).await;
    assert!(!describe(&mut grpc, "nothing").await.held);
}

// checks: L1 (calls past the stream limit wait their turn and are served), one client
// cannot exhaust what all share: one gRPC connection has at most --max-concurrent-streams
// streams open, as the server's HTTP/2 SETTINGS say
#[tokio::test]
async fn one_connection_has_at_most_max_concurrent_streams_and_its_other_calls_wait() {
    let server = TestServer::start_with(&["--max-concurrent-streams", "4"]);
    let mut observer = server.client().await;
    let held = observer
        .acquire(acquire("streams", "holder", 0))
        .await
        .unwrap()
        .into_inner();

    // Phase 1: six waiting acquires on one connection, one after the other. Four streams
    // open and queue; the other two wait in the client for a stream.
    let crowded = server.client().await;
    let mut waiting = Vec::new();
    for n in 1..=6u32 {
        let mut client = crowded.clone();
        waiting.push(tokio::spawn(async move {
            client
                .acquire(acquire("streams", &format!("waiter-{n}"), 60_000))
                .await
                .map(tonic::Response::into_inner)
        }));
        if n <= 4 {
            waiters_reach(&mut observer, "streams", n).await;
        } else {
            // Let this call reach the client's queue before the next one.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Long enough for the other two to queue if the server let them open streams.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = describe(&mut observer, "streams").await;
    assert_eq!(
        info.waiters, 4,
        "one connection opened more streams than --max-concurrent-streams 4: {info:?}"
    );

    // Phase 2: each grant ends a stream, which lets a waiting call open one. Every waiter
    // gets the lock in turn, and the queue never holds more than four of them.
    let mut lease = held.lease_id;
    let mut holders = Vec::new();
    for waiter in waiting {
        observer
            .release(pb::ReleaseRequest {
                lease_id: lease,
                lock: String::new(),
            })
            .await
            .unwrap();
        // The granted call is one of the four queued: the first still waiting in order.
        let grant = tokio::time::timeout(PATIENCE, waiter)
            .await
            .expect("the waiter is granted in turn")
            .unwrap()
            .expect("a grant");
        let info = describe(&mut observer, "streams").await;
        assert!(info.waiters <= 4, "{info:?}");
        holders.push(info.holder);
        lease = grant.lease_id;
    }
    let expected: Vec<String> = (1..=6).map(|n| format!("waiter-{n}")).collect();
    assert_eq!(holders, expected, "every waiter got the lock, in order");
}

// checks: one client cannot exhaust what all share: the gRPC listener takes at most
// --max-connections connections; the next is closed at once, the open ones keep working,
// and a closed one frees its slot
#[tokio::test]
async fn at_the_connection_cap_a_new_grpc_connection_is_refused_and_the_open_ones_keep_working() {
    // The handshake timeout is far longer than the test's patience: only the cap can close
    // a connection in time.
    let server =
        TestServer::start_with(&["--max-connections", "2", "--handshake-timeout-ms", "600000"]);
    let mut first = server.client().await;
    let mut second = server.client().await;
    assert!(!describe(&mut first, "slots").await.held);
    assert!(!describe(&mut second, "slots").await.held);

    // Phase 1: a third connection is closed at once, and a gRPC client gets an error, not a
    // hang.
    closed_by_server(
        TcpStream::connect(server.addr()).await.unwrap(),
        "a third connection",
    )
    .await;
    let third = tokio::time::timeout(PATIENCE, async {
        let mut client = LockServiceClient::connect(server.endpoint())
            .await
            .map_err(|error| error.to_string())?;
        client
            .describe(pb::DescribeRequest {
                lock: "slots".into(),
            })
            .await
            .map(|_| ())
            .map_err(|status| status.to_string())
    })
    .await
    .expect("a refused client fails fast");
    assert!(third.is_err(), "a third client was served: {third:?}");

    // Phase 2: the two open connections keep working.
    let grant = first
        .acquire(acquire("slots", "first", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(describe(&mut second, "slots").await.token, grant.token);

    // Phase 3: one closes; its slot is free again (once the server has seen the close).
    drop(second);
    let deadline = Instant::now() + PATIENCE;
    let mut again = loop {
        if let Ok(mut client) = LockServiceClient::connect(server.endpoint()).await {
            let served = client
                .describe(pb::DescribeRequest {
                    lock: "slots".into(),
                })
                .await;
            if served.is_ok() {
                break client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(describe(&mut again, "slots").await.holder, "first");
    assert!(describe(&mut first, "slots").await.held);
}

// checks: one client cannot exhaust what all share: the framed session listener takes at
// most --max-connections connections (apart from the gRPC listener's); the next is closed
// at once, the open sessions keep working, and a closed one frees its slot
#[tokio::test]
async fn at_the_connection_cap_a_new_framed_session_is_refused_and_the_open_ones_keep_working() {
    let server = TestServer::start_with_sessions(&[
        "--max-connections",
        "2",
        "--handshake-timeout-ms",
        "600000",
    ]);
    let addr = server.session_addr().unwrap();
    let mut grpc = server.client().await;
    let mut first = fenced_proto::framed::connect(&addr.to_string())
        .await
        .expect("the first session opens");
    let mut second = fenced_proto::framed::connect(&addr.to_string())
        .await
        .expect("the second session opens");

    // Phase 1: a third connection is closed at once: its hello gets no answer.
    let mut third = Framed::new(TcpStream::connect(addr).await.unwrap(), codec());
    let _ = third.send(Bytes::from_static(HELLO)).await;
    match tokio::time::timeout(PATIENCE, third.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(frame))) => panic!("a third session was answered: {frame:?}"),
        Err(_elapsed) => panic!("the server kept a third session open for {PATIENCE:?}"),
    }

    // Phase 2: both sessions keep working, and so does the gRPC listener (its own cap).
    for (session, holder) in [(&mut first, "first"), (&mut second, "second")] {
        let request = pb::SessionRequest {
            id: 1,
            op: Some(pb::session_request::Op::Acquire(acquire(holder, holder, 0))),
        };
        session
            .send(Bytes::from(prost::Message::encode_to_vec(&request)))
            .await
            .unwrap();
        let frame = tokio::time::timeout(PATIENCE, session.next())
            .await
            .expect("answered")
            .expect("open")
            .expect("reads");
        let answer: pb::SessionResponse = prost::Message::decode(frame.freeze()).unwrap();
        assert!(
            matches!(
                answer.result,
                Some(pb::session_response::Result::Acquired(_))
            ),
            "{answer:?}"
        );
        assert_eq!(describe(&mut grpc, holder).await.holder, holder);
    }

    // Phase 3: one closes; its slot is free again (once the server has seen the close).
    drop(second);
    let deadline = Instant::now() + PATIENCE;
    while fenced_proto::framed::connect(&addr.to_string())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the closed session's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
