//! The framed `Session` protocol (`fenced --session-listen`, `fenced_proto::framed`) spoken
//! by hand over plain TCP against a real `fenced` process: the hello and its refusal,
//! acquire/renew/release answered by id and out of order, the 64 KiB frame limit, garbage
//! frames, a waiter that disconnects (L2), a waiter that falls silent and does not
//! answer the keepalive ping (L2), `kill -9` and restart (S1, S2), a graceful stop
//! with connections open, and TLS: a TLS server's framed listener takes no plaintext, and
//! an unusable key stops it at start. (A session over TLS is in `client_tls.rs`.) At its
//! cap of requests in flight a session refuses the excess and is still pinged, so a
//! client that vanishes then still leaves the queue (L2). (The listener's connection limit
//! and handshake timeout are in `server_limits.rs`.)
//!
//! Each test names the contract ids it checks. Real time is used only with wide margins;
//! tests synchronise on answers and on what Describe reports, never on short sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fenced_proto::framed::{codec, HELLO, MAX_FRAME_BYTES, PING, REFUSED};
use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::server::TestServer;
use futures::{SinkExt, StreamExt};
use pb::session_request::Op;
use pb::session_response::Result as Outcome;
use prost::bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tonic::transport::Channel;
use tonic::Code;

/// How long one answer, or the close of a connection, may take: wide, for a loaded
/// 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);

type Grpc = LockServiceClient<Channel>;
type Frames = Framed<TcpStream, LengthDelimitedCodec>;

/// A TCP connection to the framed listener, before any hello.
async fn connect_raw(addr: SocketAddr) -> Frames {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connects to the framed session listener");
    stream.set_nodelay(true).unwrap();
    Framed::new(stream, codec())
}

/// The next frame from the server (`None` at EOF), within [`PATIENCE`].
async fn next_frame(frames: &mut Frames) -> Option<std::io::Result<BytesMut>> {
    tokio::time::timeout(PATIENCE, frames.next())
        .await
        .expect("the server answers or closes within 20 s")
}

/// Waits for the server to close the connection (EOF or a reset), with no frame first.
async fn assert_closed(frames: &mut Frames, context: &str) {
    match next_frame(frames).await {
        None | Some(Err(_)) => {}
        Some(Ok(frame)) => panic!(
            "{context}: expected the connection closed, got a frame {:?}",
            String::from_utf8_lossy(&frame)
        ),
    }
}

/// One framed session: connected and past the hello.
struct Session {
    frames: Frames,
}

impl Session {
    /// Connects and says hello; the server must answer with the same hello.
    async fn open(addr: SocketAddr) -> Session {
        let mut frames = connect_raw(addr).await;
        frames.send(Bytes::from_static(HELLO)).await.unwrap();
        let answer = next_frame(&mut frames)
            .await
            .expect("the server answers the hello")
            .expect("the hello answer reads");
        assert_eq!(
            &answer[..],
            HELLO,
            "the hello is answered with the hello, got {:?}",
            String::from_utf8_lossy(&answer)
        );
        Session { frames }
    }

    /// Sends one request without waiting for its answer.
    async fn send(&mut self, id: u64, op: Op) {
        let request = pb::SessionRequest { id, op: Some(op) };
        self.frames
            .send(Bytes::from(request.encode_to_vec()))
            .await
            .unwrap();
    }

    /// Sends raw bytes as one frame.
    async fn send_frame(&mut self, frame: Vec<u8>) {
        self.frames.send(Bytes::from(frame)).await.unwrap();
    }

    /// The next answer, whichever request it is for.
    async fn next(&mut self) -> pb::SessionResponse {
        let frame = next_frame(&mut self.frames)
            .await
            .expect("the connection stays open")
            .expect("a frame reads");
        pb::SessionResponse::decode(frame.freeze()).expect("a SessionResponse")
    }

    /// Sends one request and returns its outcome; the next answer must be this one's.
    async fn call(&mut self, id: u64, op: Op) -> Outcome {
        self.send(id, op).await;
        let answer = self.next().await;
        assert_eq!(answer.id, id, "answered another request: {answer:?}");
        answer.result.expect("an answer carries an outcome")
    }
}

fn acquire(lock: &str, holder: &str, ttl_ms: u64, wait_ms: u64) -> Op {
    Op::Acquire(acquire_request(lock, holder, ttl_ms, wait_ms))
}

fn acquire_request(lock: &str, holder: &str, ttl_ms: u64, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: holder.to_string(),
        ttl_ms,
        wait_ms,
        ..pb::AcquireRequest::default()
    }
}

fn renew(lease_id: &str) -> Op {
    Op::Renew(pb::RenewRequest {
        lease_id: lease_id.to_string(),
    })
}

/// Releases one lock of a lease, or (with `lock` empty) the whole lease.
fn release(lease_id: &str, lock: &str) -> Op {
    Op::Release(pb::ReleaseRequest {
        lease_id: lease_id.to_string(),
        lock: lock.to_string(),
    })
}

fn granted(outcome: Outcome) -> pb::AcquireResponse {
    match outcome {
        Outcome::Acquired(grant) => grant,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn refused(outcome: Outcome) -> pb::SessionError {
    match outcome {
        Outcome::Error(error) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A `SessionRequest` acquiring `lock`, padded with an unknown field (which protobuf
/// decoding skips) so that its encoding is exactly `total` bytes: the frame means the same
/// whatever its size, so only the frame limit decides whether it is served.
fn padded_acquire(id: u64, lock: &str, total: usize) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    const PAD_FIELD: u32 = 100;
    let mut frame = pb::SessionRequest {
        id,
        op: Some(acquire(lock, "padded", 30_000, 0)),
    }
    .encode_to_vec();
    let key_len = encoded_len_varint(u64::from(PAD_FIELD << 3));
    // The pad's length prefix is 3 bytes for any pad of 16 KiB to 2 MiB.
    let pad = total - frame.len() - key_len - 3;
    assert_eq!(encoded_len_varint(pad as u64), 3);
    encode_key(PAD_FIELD, WireType::LengthDelimited, &mut frame);
    encode_varint(pad as u64, &mut frame);
    frame.resize(total, b'x');
    assert_eq!(frame.len(), total);
    let decoded = pb::SessionRequest::decode(frame.as_slice()).expect("the padded frame decodes");
    assert!(
        matches!(decoded.op, Some(Op::Acquire(ref a)) if a.lock == lock),
        "the padding hides nothing: {decoded:?}"
    );
    frame
}

async fn describe(grpc: &mut Grpc, lock: &str) -> pb::LockInfo {
    grpc.describe(pb::DescribeRequest { lock: lock.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The names of every held or awaited lock.
async fn listed(grpc: &mut Grpc) -> Vec<String> {
    grpc.list(pb::ListRequest {
        prefix: String::new(),
        page_size: 0,
        cursor: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .locks
    .into_iter()
    .map(|info| info.lock)
    .collect()
}

/// Polls Describe until `lock` has `waiters` queued; `Err` with the last view if that does
/// not happen within `within`.
async fn waiters_reach(
    grpc: &mut Grpc,
    lock: &str,
    waiters: u32,
    within: Duration,
) -> Result<(), pb::LockInfo> {
    let deadline = Instant::now() + within;
    loop {
        let info = describe(grpc, lock).await;
        if info.waiters == waiters {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(info);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls Describe until `lock` is held, within [`PATIENCE`].
async fn held_within_patience(grpc: &mut Grpc, lock: &str) -> pb::LockInfo {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = describe(grpc, lock).await;
        if info.held {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{lock} was never granted: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn session_addr(server: &TestServer) -> SocketAddr {
    server
        .session_addr()
        .expect("the server announced `fenced sessions on <addr>`")
}

// checks: S1, S6, L1, L2 (the framed session serves acquire, renew and release, answered by
// id; a queued acquire holds up nothing and gets the lock when it is released)
#[tokio::test]
async fn hello_then_acquire_renew_release_answered_by_id_out_of_order() {
    let server = TestServer::start_with_sessions(&[]);
    let mut grpc = server.client().await;
    let mut session = Session::open(session_addr(&server)).await;

    // Phase 1: two acquires sent before either answer is read; each answer carries its
    // request's id (one of them too large for 32 bits).
    let (id_alpha, id_beta) = (1 << 40, 7);
    session
        .send(id_alpha, acquire("alpha", "holder-alpha", 30_000, 0))
        .await;
    session
        .send(id_beta, acquire("beta", "holder-beta", 30_000, 0))
        .await;
    let mut answers = [session.next().await, session.next().await];
    answers.sort_by_key(|answer| answer.id);
    assert_eq!([answers[0].id, answers[1].id], [id_beta, id_alpha]);
    let [beta, alpha] = answers.map(|answer| granted(answer.result.unwrap()));
    assert_ne!(alpha.token, beta.token);
    assert_ne!(alpha.lease_id, beta.lease_id);
    assert_eq!((alpha.ttl_ms, beta.ttl_ms), (30_000, 30_000));
    let info = describe(&mut grpc, "alpha").await;
    assert!(info.held);
    assert_eq!(
        (info.holder.as_str(), info.token),
        ("holder-alpha", alpha.token)
    );

    // Phase 2: renew, then release by lock name.
    let renewed = match session.call(1, renew(&alpha.lease_id)).await {
        Outcome::Renewed(renewed) => renewed,
        other => panic!("expected a renewal, got {other:?}"),
    };
    assert_eq!(
        (renewed.lease_id.as_str(), renewed.ttl_ms),
        (alpha.lease_id.as_str(), 30_000)
    );
    let outcome = session.call(2, release(&alpha.lease_id, "alpha")).await;
    assert!(matches!(outcome, Outcome::Released(_)), "{outcome:?}");
    assert!(!describe(&mut grpc, "alpha").await.held);

    // Phase 3: the same lock granted again gets a higher token than every earlier grant.
    let again = granted(
        session
            .call(3, acquire("alpha", "holder-again", 30_000, 0))
            .await,
    );
    assert!(
        again.token > alpha.token && again.token > beta.token,
        "tokens went {} / {} then {}",
        alpha.token,
        beta.token,
        again.token
    );

    // Phase 4: a queued acquire (id 10) does not hold up a later renew (id 11), whose answer
    // comes first; releasing the holder's lease (id 12) hands the lock to id 10 at once.
    session
        .send(10, acquire("alpha", "holder-queued", 30_000, 60_000))
        .await;
    waiters_reach(&mut grpc, "alpha", 1, PATIENCE)
        .await
        .expect("the acquire queued");
    let outcome = session.call(11, renew(&again.lease_id)).await;
    assert!(matches!(outcome, Outcome::Renewed(_)), "{outcome:?}");
    session.send(12, release(&again.lease_id, "")).await;
    let mut answers = [session.next().await, session.next().await];
    answers.sort_by_key(|answer| answer.id);
    assert_eq!([answers[0].id, answers[1].id], [10, 12]);
    let queued = granted(answers[0].result.clone().unwrap());
    assert!(queued.token > again.token, "{queued:?} after {again:?}");
    assert!(
        matches!(answers[1].result, Some(Outcome::Released(_))),
        "{answers:?}"
    );
    let info = describe(&mut grpc, "alpha").await;
    assert_eq!(
        (info.held, info.holder.as_str(), info.token, info.waiters),
        (true, "holder-queued", queued.token, 0)
    );

    // Phase 5: release the rest; nothing is left held.
    for (id, lease) in [(20, &queued.lease_id), (21, &beta.lease_id)] {
        let outcome = session.call(id, release(lease, "")).await;
        assert!(matches!(outcome, Outcome::Released(_)), "{outcome:?}");
    }
    assert_eq!(listed(&mut grpc).await, Vec::<String>::new());
}

// checks: S1, S3 (a busy lock's refusal names the holder and its token, exactly as the
// gRPC Session call carries it)
#[tokio::test]
async fn a_busy_try_once_acquire_is_refused_with_holder_and_token() {
    let server = TestServer::start_with_sessions(&[]);
    let mut grpc = server.client().await;
    let mut owner = Session::open(session_addr(&server)).await;
    let grant = granted(owner.call(1, acquire("busy", "owner", 30_000, 0)).await);

    let mut other = Session::open(session_addr(&server)).await;
    let error = refused(other.call(9, acquire("busy", "intruder", 30_000, 0)).await);
    assert_eq!(
        (error.code, error.error_code.as_str()),
        (Code::Aborted as i32, "busy"),
        "{error:?}"
    );
    assert_eq!(
        (error.holder.as_str(), error.token),
        ("owner", grant.token),
        "{error:?}"
    );
    assert!(error.message.contains("owner"), "{error:?}");

    // The gRPC Session refuses the same request with the same SessionError.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut responses = grpc
        .session(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    sender
        .send(pb::SessionRequest {
            id: 9,
            op: Some(acquire("busy", "intruder", 30_000, 0)),
        })
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, responses.next())
        .await
        .expect("the gRPC session answers")
        .unwrap()
        .unwrap();
    assert_eq!(answer.id, 9);
    assert_eq!(refused(answer.result.unwrap()), error);

    // The refusal changed nothing.
    let info = describe(&mut grpc, "busy").await;
    assert_eq!(
        (info.holder.as_str(), info.token, info.waiters),
        ("owner", grant.token, 0)
    );
}

// checks: bad input changes nothing (CONTRACT "Bad input"): a first frame that is not the
// hello is refused and the connection closed, without serving what it carried
#[tokio::test]
async fn a_wrong_first_frame_is_refused_then_closed() {
    let server = TestServer::start_with_sessions(&[]);
    let addr = session_addr(&server);
    let mut grpc = server.client().await;

    // A client that forgot the hello and sends a request straight away, and one that speaks
    // another version of the protocol.
    let request = pb::SessionRequest {
        id: 1,
        op: Some(acquire("never-created", "no-hello", 30_000, 0)),
    }
    .encode_to_vec();
    for first in [request, b"fenced.v2.Session".to_vec()] {
        let mut frames = connect_raw(addr).await;
        frames.send(Bytes::from(first.clone())).await.unwrap();
        let refusal = next_frame(&mut frames)
            .await
            .expect("a refusal before the close")
            .expect("the refusal reads");
        assert!(
            refusal.starts_with(REFUSED),
            "{:?}",
            String::from_utf8_lossy(&refusal)
        );
        assert!(
            String::from_utf8_lossy(&refusal).contains("fenced.v1.Session"),
            "the refusal names the expected hello: {:?}",
            String::from_utf8_lossy(&refusal)
        );
        assert_closed(&mut frames, "after the refusal").await;
    }

    // The server still serves a proper session, and the refused request created nothing.
    let mut session = Session::open(addr).await;
    granted(session.call(1, acquire("after", "proper", 30_000, 0)).await);
    assert_eq!(listed(&mut grpc).await, vec!["after".to_string()]);
}

// checks: bad input changes nothing (CONTRACT "Bad input"): a frame after the hello that is
// not a SessionRequest closes that connection only
#[tokio::test]
async fn an_undecodable_frame_closes_the_connection_and_changes_nothing() {
    let server = TestServer::start_with_sessions(&[]);
    let addr = session_addr(&server);
    let mut grpc = server.client().await;
    let mut bystander = Session::open(addr).await;

    // A request naming a lock, cut short so that it no longer decodes; and bytes that are
    // no protobuf at all (a varint that never ends).
    let mut truncated = pb::SessionRequest {
        id: 1,
        op: Some(acquire("garbage-lock", "garbage", 30_000, 0)),
    }
    .encode_to_vec();
    truncated.truncate(truncated.len() - 3);
    let endless_varint = vec![0xff; 16];
    for garbage in [truncated, endless_varint] {
        assert!(
            pb::SessionRequest::decode(garbage.as_slice()).is_err(),
            "the test's garbage must not decode"
        );
        let mut session = Session::open(addr).await;
        session.send_frame(garbage).await;
        assert_closed(&mut session.frames, "after an undecodable frame").await;
    }

    // Other connections, open before and opened after, are served as ever.
    granted(
        bystander
            .call(1, acquire("still-served", "bystander", 30_000, 0))
            .await,
    );
    let mut fresh = Session::open(addr).await;
    let error = refused(
        fresh
            .call(1, acquire("still-served", "fresh", 30_000, 0))
            .await,
    );
    assert_eq!(error.error_code, "busy", "{error:?}");
    assert_eq!(listed(&mut grpc).await, vec!["still-served".to_string()]);
}

// checks: bad input changes nothing (CONTRACT "Bad input"): a frame of exactly 64 KiB is
// served, one byte more closes the connection without serving it, before or after the hello
#[tokio::test]
async fn a_frame_over_64_kib_closes_the_connection() {
    let server = TestServer::start_with_sessions(&[]);
    let addr = session_addr(&server);
    let mut grpc = server.client().await;
    let mut session = Session::open(addr).await;

    // At the limit: served like any other request.
    let at_limit = padded_acquire(1, "at-limit", MAX_FRAME_BYTES);
    session.send_frame(at_limit).await;
    let answer = session.next().await;
    assert_eq!(answer.id, 1);
    granted(answer.result.unwrap());

    // One byte over, after the hello and as the first frame: written by hand, since the
    // codec refuses to encode it. Whether the server resets the connection while we still
    // write or after, the write's outcome does not matter; the close does.
    let mut over = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes().to_vec();
    over.extend(padded_acquire(2, "over-limit", MAX_FRAME_BYTES + 1));
    let _ = tokio::time::timeout(PATIENCE, session.frames.get_mut().write_all(&over))
        .await
        .expect("the write does not hang");
    assert_closed(&mut session.frames, "after a 64 KiB + 1 frame").await;
    let mut before_hello = connect_raw(addr).await;
    let _ = tokio::time::timeout(PATIENCE, before_hello.get_mut().write_all(&over))
        .await
        .expect("the write does not hang");
    assert_closed(&mut before_hello, "after a 64 KiB + 1 first frame").await;

    // The server is fine, and the oversized request was not served.
    let mut fresh = Session::open(addr).await;
    granted(
        fresh
            .call(1, acquire("afterwards", "fresh", 30_000, 0))
            .await,
    );
    assert_eq!(
        listed(&mut grpc).await,
        vec!["afterwards".to_string(), "at-limit".to_string()]
    );
}

// checks: L2 (a waiter whose connection closes leaves the queue and is never granted the
// lock), L1 (the lock goes to the next waiter still there)
#[tokio::test]
async fn a_waiter_that_disconnects_is_never_granted_the_lock() {
    let server = TestServer::start_with_sessions(&[]);
    let addr = session_addr(&server);
    let mut grpc = server.client().await;
    let mut holder = Session::open(addr).await;
    let held = granted(holder.call(1, acquire("l2", "holder", 30_000, 0)).await);

    // Two waiters queue in turn, on their own connections; the first then goes away. Their
    // waits (60 s) are far longer than the test, so no timeout can clear the queue.
    let mut gone = Session::open(addr).await;
    gone.send(1, acquire("l2", "gone-waiter", 30_000, 60_000))
        .await;
    waiters_reach(&mut grpc, "l2", 1, PATIENCE)
        .await
        .expect("the first waiter queued");
    let mut later = Session::open(addr).await;
    later
        .send(1, acquire("l2", "later-waiter", 30_000, 60_000))
        .await;
    waiters_reach(&mut grpc, "l2", 2, PATIENCE)
        .await
        .expect("the second waiter queued");
    drop(gone);
    let gone_left_queue = waiters_reach(&mut grpc, "l2", 1, Duration::from_secs(10)).await;

    // The holder releases: the lock must go to the waiter still connected, never to the one
    // that left (whatever the server noticed of its leaving by now).
    let outcome = holder.call(2, release(&held.lease_id, "")).await;
    assert!(matches!(outcome, Outcome::Released(_)), "{outcome:?}");
    let info = held_within_patience(&mut grpc, "l2").await;
    assert!(
        info.holder == "later-waiter" && gone_left_queue.is_ok(),
        "L2: the waiter whose connection closed must leave the queue and never be granted \
         the lock. Within 10 s of its close the queue was {gone_left_queue:?} (Err: still \
         2 waiters); after the release the lock is {info:?}"
    );
    let grant = granted(later.next().await.result.unwrap());
    assert_eq!(grant.token, info.token);
    assert!(grant.token > held.token);
    assert_eq!(info.waiters, 0);
}

// checks: L2 (a waiter whose client vanished without closing, so that no FIN ever comes,
// is pinged, leaves the queue when it does not answer, and is never granted the lock), L1
#[tokio::test]
async fn a_silent_waiter_is_pinged_and_leaves_the_queue_while_one_that_answers_stays() {
    let server = TestServer::start_with_sessions(&[
        "--keepalive-interval-ms",
        "300",
        "--keepalive-timeout-ms",
        "600",
    ]);
    let addr = session_addr(&server);
    let mut grpc = server.client().await;
    let held = grpc
        .acquire(acquire_request("quiet", "holder", 30_000, 0))
        .await
        .unwrap()
        .into_inner();

    // The first waiter sends its acquire and then never reads or writes again, as a client
    // behind a partition or on a dead host: its socket stays open.
    let mut silent = Session::open(addr).await;
    silent
        .send(1, acquire("quiet", "silent-waiter", 30_000, 60_000))
        .await;
    waiters_reach(&mut grpc, "quiet", 1, PATIENCE)
        .await
        .expect("the silent waiter queued");
    // The second answers every ping with an empty frame, and counts them.
    let mut answering = Session::open(addr).await;
    answering
        .send(1, acquire("quiet", "answering-waiter", 30_000, 60_000))
        .await;
    waiters_reach(&mut grpc, "quiet", 2, PATIENCE)
        .await
        .expect("the answering waiter queued");
    let answering = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            let frame = next_frame(&mut answering.frames)
                .await
                .expect("the answering waiter's connection stays open")
                .expect("a frame reads");
            if frame.as_ref() == PING {
                pings += 1;
                answering
                    .frames
                    .send(Bytes::from_static(PING))
                    .await
                    .unwrap();
            } else {
                let answer = pb::SessionResponse::decode(frame.freeze()).unwrap();
                return (pings, answer);
            }
        }
    });

    // The silent waiter is pinged, does not answer, and leaves (interval + timeout is
    // 0.9 s; 15 s is the margin for a loaded machine).
    waiters_reach(&mut grpc, "quiet", 1, Duration::from_secs(15))
        .await
        .expect("L2: the waiter that never answered a ping must leave the queue");
    let first = next_frame(&mut silent.frames)
        .await
        .expect("a ping came before the close")
        .expect("the ping reads");
    assert_eq!(first.as_ref(), PING, "the server's first frame is a ping");
    assert_closed(&mut silent.frames, "after the unanswered ping").await;
    // The one that answers keeps its place through several more rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    waiters_reach(&mut grpc, "quiet", 1, Duration::ZERO)
        .await
        .expect("the waiter that answers its pings keeps its place");

    // Released, the lock goes to the waiter still there, never to the silent one.
    grpc.release(pb::ReleaseRequest {
        lease_id: held.lease_id,
        lock: String::new(),
    })
    .await
    .unwrap();
    let (pings, answer) = tokio::time::timeout(PATIENCE, answering)
        .await
        .unwrap()
        .unwrap();
    let grant = granted(answer.result.unwrap());
    let info = describe(&mut grpc, "quiet").await;
    assert!(info.held && info.holder == "answering-waiter", "{info:?}");
    assert_eq!(grant.token, info.token);
    assert!(grant.token > held.token);
    // At least one ping per 300 ms interval of the 2 s it waited after the silent one left
    // would be about 6; 3 allows for a slow machine and still shows it was pinged and kept.
    assert!(pings >= 3, "only {pings} pings in over 2 s of waiting");
}

// checks: S1, S2 (grants acknowledged over a framed connection survive `kill -9` with their
// lease ids and tokens; the next grant's token is higher than all of them)
#[tokio::test]
async fn acknowledged_framed_grants_survive_kill_9() {
    let mut server = TestServer::start_with_sessions(&[]);
    let mut session = Session::open(session_addr(&server)).await;

    // Ten acquires in flight at once, each answered (so each durable) before the kill.
    for id in 0..10 {
        session
            .send(
                id,
                acquire(&format!("crash-{id}"), &format!("holder-{id}"), 60_000, 0),
            )
            .await;
    }
    let mut grants = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let answer = session.next().await;
        grants.insert(answer.id, granted(answer.result.unwrap()));
    }
    assert_eq!(grants.len(), 10, "one answer per id");

    server.restart(); // SIGKILL, then a new process on the same data directory
    assert_closed(&mut session.frames, "the killed server's connection").await;
    let mut grpc = server.client().await;
    for (id, grant) in &grants {
        let info = describe(&mut grpc, &format!("crash-{id}")).await;
        assert_eq!(
            (info.held, info.holder, info.token),
            (true, format!("holder-{id}"), grant.token),
            "crash-{id} after the restart"
        );
    }
    let highest = grants.values().map(|grant| grant.token).max().unwrap();

    // Over the restarted server's framed listener (maybe another port): the restored lease
    // is busy with its token, the next grant is higher, and the restored lease id still
    // releases its lock.
    let mut session = Session::open(session_addr(&server)).await;
    let error = refused(session.call(1, acquire("crash-0", "late", 60_000, 0)).await);
    assert_eq!(
        (error.error_code.as_str(), error.token),
        ("busy", grants[&0].token)
    );
    let fresh = granted(
        session
            .call(2, acquire("crash-new", "new", 60_000, 0))
            .await,
    );
    assert!(fresh.token > highest, "{} after {highest}", fresh.token);
    let outcome = session.call(3, release(&grants[&0].lease_id, "")).await;
    assert!(matches!(outcome, Outcome::Released(_)), "{outcome:?}");
    let again = granted(
        session
            .call(4, acquire("crash-0", "again", 60_000, 0))
            .await,
    );
    assert!(
        again.token > fresh.token,
        "{} after {}",
        again.token,
        fresh.token
    );
}

// checks: S2 (a clean stop keeps acknowledged grants), L2 (a waiter cut off by the stop is
// never granted the lock)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_framed_connections_and_exits_cleanly() {
    let mut server = TestServer::start_with_sessions(&[]);
    let addr = session_addr(&server);
    let mut holder = Session::open(addr).await;
    let held = granted(holder.call(1, acquire("drain", "holder", 60_000, 0)).await);
    // A connection with a request in flight (an acquire queued for 60 s), and an idle one.
    let mut waiting = Session::open(addr).await;
    waiting
        .send(1, acquire("drain", "waiter", 60_000, 60_000))
        .await;
    {
        // Dropped before the stop, so no gRPC connection takes part in the drain.
        let mut grpc = server.client().await;
        waiters_reach(&mut grpc, "drain", 1, PATIENCE)
            .await
            .expect("the acquire queued");
    }
    let mut idle = Session::open(addr).await;

    // SIGTERM; `stop` blocks, so it runs off the runtime's threads.
    let started = Instant::now();
    let (mut server, status) = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (server, status)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let status = status.expect("the server was running");
    assert!(status.success(), "the server exited with {status:?}");
    // The drain timeout is 5 s; a server that waited out the queued acquire (60 s) would
    // have been killed by the harness, which is no success.
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");

    assert_closed(&mut idle.frames, "the idle connection").await;
    assert_closed(&mut holder.frames, "the holder's connection").await;
    // The waiter may be told it was refused, but never granted.
    loop {
        match next_frame(&mut waiting.frames).await {
            None | Some(Err(_)) => break,
            Some(Ok(frame)) => {
                let answer = pb::SessionResponse::decode(frame.freeze()).unwrap();
                assert!(
                    matches!(answer.result, Some(Outcome::Error(_))),
                    "the queued acquire got {answer:?} from a stopping server"
                );
            }
        }
    }

    server.restart();
    let mut grpc = server.client().await;
    let info = describe(&mut grpc, "drain").await;
    assert_eq!(
        (info.held, info.holder.as_str(), info.token, info.waiters),
        (true, "holder", held.token, 0)
    );
}

// checks: bad configuration gets a clear error and serves nothing; on a TLS server the
// framed listener serves TLS only, so lease ids never cross it in the clear
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_serves_framed_sessions_over_tls_only_and_refuses_an_unusable_key() {
    let dir = tempfile::tempdir().unwrap();
    let fenced_tests::pki::TestPki {
        server_cert,
        server_key,
        ..
    } = fenced_tests::pki::TestPki::new();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, server_cert).unwrap();
    std::fs::write(&key, server_key).unwrap();
    let tls_flags = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];

    // A plaintext hello on the TLS listener is not a session: the server reads it as a
    // broken TLS handshake and closes the connection, and nothing was answered.
    let server = TestServer::start_with_sessions(&tls_flags);
    let mut plain = connect_raw(server.session_addr().unwrap()).await;
    plain.send(Bytes::from_static(HELLO)).await.unwrap();
    match tokio::time::timeout(PATIENCE, plain.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(frame))) => panic!("a plaintext client got a frame back: {frame:?}"),
        Err(_) => panic!("the TLS listener kept a plaintext connection open"),
    }
    drop(server);

    // A key that is not a key is refused at start, naming the file, before the server
    // announces anything (with the framed listener too, which uses the same files).
    std::fs::write(&key, "not a key").unwrap();
    let child = std::process::Command::new(fenced_tests::binaries::binary("fenced"))
        .args(["--listen", "127.0.0.1:0", "--session-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(tls_flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    let Ok(output) = receiver.recv_timeout(Duration::from_secs(60)) else {
        fenced_tests::server::signal(pid, "-KILL");
        panic!("fenced kept running with an unusable TLS key");
    };
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exited with {:?}; stderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains("TLS") && stderr.contains(key.to_str().unwrap()),
        "the error names the file: {stderr}"
    );
    // Scripts and harnesses take the "listening" line to mean the server serves.
    assert!(
        !stdout.contains("fenced listening on") && !stdout.contains("fenced sessions on"),
        "a server that refuses its configuration announced that it serves: {stdout:?}"
    );
}

/// The server's default cap on one session's requests in flight
/// (`--max-session-in-flight`).
const IN_FLIGHT_CAP: u64 = 1024;

/// Reads the session's frames, answering each keepalive ping, until an answer comes (then
/// returns it) or, with `until` given, until then (then returns `None`). Also returns how
/// many pings it answered.
async fn answering_pings(
    session: &mut Session,
    until: Option<Instant>,
) -> (u32, Option<pb::SessionResponse>) {
    let mut pings = 0;
    loop {
        let within = until.map_or(PATIENCE, |until| {
            until.saturating_duration_since(Instant::now())
        });
        let frame = match tokio::time::timeout(within, session.frames.next()).await {
            Err(_elapsed) if until.is_some() => return (pings, None),
            Err(_elapsed) => panic!("nothing from the server within {PATIENCE:?}"),
            Ok(frame) => frame
                .expect("the connection stays open")
                .expect("a frame reads"),
        };
        if frame.as_ref() == PING {
            pings += 1;
            session.frames.send(Bytes::from_static(PING)).await.unwrap();
        } else {
            let answer = pb::SessionResponse::decode(frame.freeze()).expect("a SessionResponse");
            return (pings, Some(answer));
        }
    }
}

// checks: L2 (a client that vanishes while its session has as many requests in flight as
// the server allows, all acquires waiting on a held lock, is still pinged, found silent,
// and its waits leave the queue), L1 (the lock then goes to the next waiter in line)
#[tokio::test]
async fn a_session_at_its_in_flight_cap_that_vanishes_is_pinged_and_its_waits_leave_the_queue() {
    let server = TestServer::start_with_sessions(&[
        "--keepalive-interval-ms",
        "300",
        "--keepalive-timeout-ms",
        "600",
    ]);
    let mut grpc = server.client().await;
    let held = grpc
        .acquire(acquire_request("full", "holder", 30_000, 0))
        .await
        .unwrap()
        .into_inner();

    // Phase 1: through a proxy (which later cuts it off without a FIN), a session fills its
    // cap with acquires that wait far longer than the test; one more client queues behind.
    let proxy = fenced_tests::proxy::Proxy::start(session_addr(&server)).await;
    let mut vanishing = Session::open(proxy.addr()).await;
    for id in 1..=IN_FLIGHT_CAP {
        vanishing
            .send(id, acquire("full", "vanishing", 30_000, 60_000))
            .await;
    }
    waiters_reach(&mut grpc, "full", IN_FLIGHT_CAP as u32, PATIENCE)
        .await
        .expect("every acquire of the full session queued");
    let mut behind = grpc.clone();
    let behind = tokio::spawn(async move {
        behind
            .acquire(acquire_request("full", "behind", 30_000, 60_000))
            .await
    });
    waiters_reach(&mut grpc, "full", IN_FLIGHT_CAP as u32 + 1, PATIENCE)
        .await
        .expect("the waiter behind queued");

    // Phase 2: the client vanishes. The server pings it, hears nothing, closes the
    // connection, and its waits leave the queue (interval + timeout is 0.9 s; 15 s is the
    // margin for a loaded machine).
    proxy.black_hole();
    waiters_reach(&mut grpc, "full", 1, Duration::from_secs(15))
        .await
        .expect("L2: the waits of a full session whose client vanished must leave the queue");

    // Phase 3: released, the lock goes to the waiter behind.
    grpc.release(pb::ReleaseRequest {
        lease_id: held.lease_id,
        lock: String::new(),
    })
    .await
    .unwrap();
    let grant = tokio::time::timeout(PATIENCE, behind)
        .await
        .expect("the waiter behind is answered")
        .unwrap()
        .expect("the waiter behind is granted the lock")
        .into_inner();
    let info = describe(&mut grpc, "full").await;
    assert_eq!(
        (info.held, info.holder.as_str(), info.token, info.waiters),
        (true, "behind", grant.token, 0)
    );
    assert!(grant.token > held.token);
}

// checks: L2 (a live session at its in-flight cap still answers the keepalive, so its
// queued acquires keep their places), bad input changes nothing (the request past the cap
// is refused at once with RESOURCE_EXHAUSTED naming the limit, and queues nothing)
#[tokio::test]
async fn a_session_at_its_in_flight_cap_refuses_the_excess_and_keeps_its_waits_by_answering_pings()
{
    let server = TestServer::start_with_sessions(&[
        "--keepalive-interval-ms",
        "300",
        "--keepalive-timeout-ms",
        "600",
    ]);
    let mut grpc = server.client().await;
    let held = grpc
        .acquire(acquire_request("capped", "holder", 30_000, 0))
        .await
        .unwrap()
        .into_inner();
    let mut session = Session::open(session_addr(&server)).await;
    for id in 1..=IN_FLIGHT_CAP {
        session
            .send(id, acquire("capped", "capped-waiter", 30_000, 60_000))
            .await;
    }
    waiters_reach(&mut grpc, "capped", IN_FLIGHT_CAP as u32, PATIENCE)
        .await
        .expect("every acquire of the session queued");

    // Phase 1: one request past the cap is answered at once with a refusal naming the cap.
    let excess = IN_FLIGHT_CAP + 1;
    session
        .send(excess, acquire("capped", "excess", 30_000, 60_000))
        .await;
    let (_, answer) = answering_pings(&mut session, None).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.id, excess, "{answer:?}");
    let refusal = refused(answer.result.unwrap());
    assert_eq!(
        (refusal.code, refusal.error_code.as_str()),
        (Code::ResourceExhausted as i32, "exhausted"),
        "{refusal:?}"
    );
    assert!(
        refusal.message.contains(&IN_FLIGHT_CAP.to_string()),
        "the refusal names the limit: {refusal:?}"
    );

    // Phase 2: for 2 s the session answers every ping; it stays, with all its waits queued
    // and nothing from the refused request.
    let (pings, answer) =
        answering_pings(&mut session, Some(Instant::now() + Duration::from_secs(2))).await;
    assert!(answer.is_none(), "no answer was due: {answer:?}");
    // About 6 rounds of 300 ms; 3 allows for a slow machine and still shows it was pinged.
    assert!(pings >= 3, "only {pings} pings in 2 s at the cap");
    waiters_reach(&mut grpc, "capped", IN_FLIGHT_CAP as u32, Duration::ZERO)
        .await
        .expect("the session that answers its pings keeps its waits");

    // Phase 3: released, the lock goes to the session's first waiter, and with a slot free
    // again a new request is served, not refused.
    grpc.release(pb::ReleaseRequest {
        lease_id: held.lease_id,
        lock: String::new(),
    })
    .await
    .unwrap();
    let (_, answer) = answering_pings(&mut session, None).await;
    let answer = answer.expect("an answer");
    assert_eq!(
        answer.id, 1,
        "the first waiter is granted first: {answer:?}"
    );
    let grant = granted(answer.result.unwrap());
    assert!(grant.token > held.token);
    session.send(excess + 1, renew(&grant.lease_id)).await;
    let (_, answer) = answering_pings(&mut session, None).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.id, excess + 1, "{answer:?}");
    assert!(
        matches!(answer.result, Some(Outcome::Renewed(_))),
        "{answer:?}"
    );
}
