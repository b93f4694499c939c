//! The framed session against a fake framed listener whose connections the test tells
//! apart: some answer nothing (a connection that died silently), the others answer at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fenced_proto::framed;
use futures::SinkExt;
use prost::Message;
use tokio_util::codec::Framed;

use super::*;

/// A fake framed `Session` listener.
struct FramedFake {
    /// Where it listens (`host:port`).
    addr: String,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// Every request received: the connection's number (from 1) and the lock it names.
    received: Arc<Mutex<Vec<(usize, String)>>>,
}

impl FramedFake {
    /// Starts a fake on a free loopback port whose first `silent` connections read every
    /// request and answer none.
    async fn start(silent: usize) -> FramedFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let (connections, received) = (connections.clone(), received.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::spawn(serve(stream, number, number > silent, received.clone()));
                }
            }
        });
        FramedFake {
            addr,
            connections,
            received,
        }
    }

    /// How many connections were accepted.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Whether a request for `lock` arrived on connection `number`.
    fn received(&self, number: usize, lock: &str) -> bool {
        self.received
            .lock()
            .unwrap()
            .iter()
            .any(|(n, l)| *n == number && l == lock)
    }
}

/// One connection: hello, then every request recorded and (if `answers`) granted or
/// released at once.
async fn serve(
    stream: tokio::net::TcpStream,
    number: usize,
    answers: bool,
    received: Arc<Mutex<Vec<(usize, String)>>>,
) {
    let mut frames = Framed::new(stream, framed::codec());
    match frames.next().await {
        Some(Ok(hello)) if hello.as_ref() == framed::HELLO => {}
        _ => return,
    }
    if frames
        .send(Bytes::from_static(framed::HELLO))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(frame)) = frames.next().await {
        if frame.as_ref() == framed::PING {
            continue;
        }
        let Ok(request) = SessionRequest::decode(frame) else {
            return;
        };
        let (lock, result) = match request.op {
            Some(Op::Acquire(acquire)) => (
                acquire.lock,
                Reply::Acquired(AcquireResponse {
                    lease_id: fenced_types::LeaseId::random().to_string(),
                    token: 7,
                    ttl_ms: acquire.ttl_ms,
                    sequencer: Vec::new(),
                }),
            ),
            Some(Op::Release(_)) => (String::new(), Reply::Released(ReleaseResponse {})),
            _ => return,
        };
        received.lock().unwrap().push((number, lock));
        if !answers {
            continue;
        }
        let answer = SessionResponse {
            id: request.id,
            result: Some(result),
        };
        if frames
            .send(Bytes::from(answer.encode_to_vec()))
            .await
            .is_err()
        {
            return;
        }
    }
}

// checks: no CONTRACT id directly: a framed request that times out retires the connection
// it was sent on, never a newer, healthy one that later requests use
#[tokio::test]
async fn a_timed_out_framed_request_retires_its_own_connection_not_the_current_one() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    // The first connection answers nothing; the later ones answer at once.
    let fake = FramedFake::start(1).await;
    let timeout = Duration::from_secs(4);
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .framed_session(fake.addr.clone())
        .timeouts(Duration::from_secs(3), timeout)
        .connect()
        .await
        .unwrap();
    let spawn_acquire = |lock: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.try_acquire(lock).await })
    };

    // Phase 1: two requests on connection 1, which answers neither; the second is sent
    // half a timeout after the first (wide margins both ways).
    let first = spawn_acquire("first");
    until("the first request is on connection 1", || {
        fake.received(1, "first")
    })
    .await;
    tokio::time::sleep(timeout / 2).await;
    let second = spawn_acquire("second");
    until("the second request is on connection 1", || {
        fake.received(1, "second")
    })
    .await;

    // Phase 2: the first times out and retires connection 1; the next request opens
    // connection 2, which answers.
    assert!(matches!(
        first.await.unwrap(),
        Err(Error::Timeout {
            what: "acquire",
            ..
        })
    ));
    let third = client.try_acquire("third").await.unwrap();
    assert!(fake.received(2, "third"));
    assert_eq!(fake.connections(), 2);

    // Phase 3: the second times out too, half a timeout later. It was sent on connection
    // 1, so connection 2 stays: the next request goes there, no third connection.
    assert!(matches!(
        second.await.unwrap(),
        Err(Error::Timeout {
            what: "acquire",
            ..
        })
    ));
    let fourth = client.try_acquire("fourth").await.unwrap();
    assert_eq!(
        fake.connections(),
        2,
        "the healthy connection was retired by a request it never carried"
    );
    assert!(fake.received(2, "fourth"));
    drop((third, fourth));
}

// checks: no CONTRACT id directly: past its cap of requests in flight a request waits in
// the client, never reaching the connection; when that connection is retired (a request
// on it timed out), the waiting request goes to a new connection instead of waiting out
// its own timeout
#[tokio::test]
async fn a_request_past_the_cap_waits_in_the_client_and_moves_to_a_new_connection() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    // The first connection answers nothing; the later ones answer at once.
    let fake = FramedFake::start(1).await;
    let timeout = Duration::from_secs(4);
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .framed_session(fake.addr.clone())
        .max_session_in_flight(1)
        .timeouts(Duration::from_secs(3), timeout)
        .connect()
        .await
        .unwrap();
    let spawn_acquire = |lock: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.try_acquire(lock).await })
    };

    // Phase 1: the first request fills connection 1's one room; the second, half a timeout
    // later, waits for room in the client (wide margins both ways).
    let first = spawn_acquire("first");
    until("the first request is on connection 1", || {
        fake.received(1, "first")
    })
    .await;
    tokio::time::sleep(timeout / 2).await;
    let second = spawn_acquire("second");

    // Phase 2: the first times out and retires connection 1; the second, never sent
    // there, goes to connection 2 and is granted well within its own timeout.
    assert!(matches!(
        first.await.unwrap(),
        Err(Error::Timeout {
            what: "acquire",
            ..
        })
    ));
    let second = second.await.unwrap().unwrap();
    assert!(
        !fake.received(1, "second"),
        "a request past the cap reached the connection"
    );
    assert!(fake.received(2, "second"));
    assert_eq!(fake.connections(), 2);
    drop(second);
}
