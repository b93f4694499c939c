//! [`Session`]: one `Session` stream per client, multiplexing its try-once acquires and
//! releases.
//!
//! The server answers each message of the stream by the id the client chose, possibly out
//! of order. So the multiplexer is a map of pending ids to oneshot senders, filled by the
//! callers and emptied by one reader task per stream:
//! - The stream is opened on first use, on the client's shared channel (the unary calls'
//!   connection), and shared by every caller. Concurrent first callers wait for one open.
//! - A caller registers its id, reads the clock (the send instant of CONTRACT S4: taken
//!   *before* the message is handed to the stream), sends, and waits for its answer. A
//!   caller that stops waiting (the per-request timeout, or a dropped future) removes its
//!   slot on the way out.
//! - When the stream breaks (server restart, network failure) or ends, the reader fails
//!   every pending request with the stream's status, mapped as the unary call's status
//!   would be, and marks the stream broken: the next request opens a new one. Nothing is
//!   sent again on a stream once sent: an acquire may or may not have been applied, which
//!   the caller hears as [`SessionOutcome::Unknown`] (the client then sends that acquire
//!   once more as a unary call with the lease id it chose, which finds the grant if there
//!   was one). A request that never reached the stream (it broke first) is sent on a new
//!   one.
//! - A grant whose caller gave up is released at once over the same stream, or with a
//!   unary call when the stream takes no more requests: nobody else knows its lease id,
//!   so otherwise it would keep the lock for a TTL. That holds whenever the grant comes:
//!   after the caller's slot is gone (the reader finds no slot), or into the slot just
//!   before the caller went away without looking (the slot's receiver, dropped with the
//!   caller, takes it back and releases it).
//! - A server without `Session` answers UNIMPLEMENTED: the client then uses unary calls
//!   for good.
//! - In a cluster the stream follows the leader ([`Route`]): opening it changes nothing, so
//!   a member that refuses to open it as not the leader is left for the leader it names
//!   (or the next endpoint), and the stream is opened there. A message refused as not the
//!   leader (a `SessionError` carries no leader's address) retires its stream and moves
//!   the route to the next endpoint, and the caller sends the request again
//!   ([`SessionOutcome::NotLeader`]); the new stream's own refusal names the leader. A
//!   stream that breaks moves the route as its final status says. The framed session
//!   names one server and follows nothing.
//! - With [`Config::framed_session`] the stream is a TCP connection to the server's framed
//!   `Session` listener instead ([`fenced_proto::framed`]: the same messages without
//!   HTTP/2, at less CPU per message; TLS when the endpoint is, [`Config::framed_tls`]),
//!   with a writer task in place of tonic's. It has no
//!   HTTP/2 PING to notice a connection that died silently, so a request that gets no
//!   answer in time also retires the connection it was sent on (never a newer one that
//!   replaced it meanwhile): the next request opens a new one.
//! - At most [`Config::max_session_in_flight`] requests are in flight on a stream (sent,
//!   not yet answered; orphan releases included): the rest wait in the client
//!   ([`InFlight`]), because the server refuses a framed session's requests past its own
//!   cap. A request that times out while waiting for room was never sent, so it does not
//!   retire the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fenced_proto::framed;
use fenced_proto::metadata::NOT_LEADER_CODE;
use fenced_proto::v1::session_request::Op;
use fenced_proto::v1::session_response::Result as Reply;
use fenced_proto::v1::{ReleaseRequest, SessionRequest, SessionResponse};
use futures::stream::{BoxStream, SplitSink};
use futures::StreamExt;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tonic::{Code, Status};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Error;
use crate::framed_tls::FramedConnector;
use crate::in_flight::InFlight;
use crate::route::{Failure, Next, Resend, Route};

/// How many requests may wait in a stream's send buffer before senders wait.
const SEND_BUFFER: usize = 1024;

/// How many times a request that never reached a stream (it broke first) is offered to a
/// new one before the caller gets the failure.
const SEND_ATTEMPTS: usize = 3;

/// What a pending request receives: the answer's result (absent only from a server that
/// breaks the protocol), or the status that broke the stream.
type Answer = Result<Option<Reply>, Status>;

/// The session of one client: its stream, if open, and whether the server has one at all.
pub(crate) struct Session {
    /// The member the client talks to; the stream is opened on its channel.
    route: Arc<Route>,
    /// Where send instants are read.
    clock: Arc<dyn Clock>,
    /// How long a request may wait for its answer (opening the stream included).
    timeout: Duration,
    /// Off by configuration ([`Config::session`]).
    enabled: bool,
    /// The server's framed `Session` listener, when the stream goes there instead
    /// ([`Config::framed_session`]).
    framed: Option<String>,
    /// The TLS that wraps each framed connection, when the endpoint is TLS.
    framed_tls: Option<FramedConnector>,
    /// How many requests each stream may have in flight ([`Config::max_session_in_flight`]).
    max_in_flight: usize,
    /// Set for good once the server answered UNIMPLEMENTED.
    unsupported: AtomicBool,
    /// The next request id (shared with the reader tasks, which send orphan releases).
    ids: Arc<AtomicU64>,
    /// The current stream. A `std` mutex: held to clone or swap the `Arc`, never across
    /// an `.await`.
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while a stream is being opened, so that concurrent first callers open one
    /// stream, not one each. A tokio mutex: it is held across the open's `.await`.
    opening: tokio::sync::Mutex<()>,
}

/// One open stream.
struct Conn {
    /// Requests go here; the stream's request half ends when the last sender is dropped.
    requests: mpsc::Sender<SessionRequest>,
    /// The requests awaiting an answer, shared with the stream's reader task.
    pending: Arc<Mutex<Pending>>,
    /// The requests sent and not yet answered, bounded; shared with the reader task,
    /// which frees a room per answer.
    in_flight: Arc<InFlight>,
    /// How a grant nobody waits for is released, shared with the reader task.
    orphans: Arc<Orphans>,
    /// The generation of the route it was opened on ([`Route`]), so that its failures
    /// move the route only if nothing else moved it since.
    generation: u64,
}

/// The requests awaiting an answer on one stream.
#[derive(Default)]
struct Pending {
    /// Id to the caller waiting for its answer.
    slots: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set by the reader when the stream ended: no request may be registered any more.
    broken: bool,
}

/// What came of a request offered to the session: its answer, its failure, or the word
/// to make the unary call instead.
pub(crate) enum SessionOutcome {
    /// The session is off or the server has none: make the unary call.
    Unary,
    /// The server answered (an acquire's grant, a release's confirmation...).
    Answered {
        /// The instant the request was handed to the stream, read before it was.
        sent: Duration,
        /// The answer; never [`Reply::Error`], which comes as [`SessionOutcome::Failed`].
        reply: Reply,
    },
    /// The request failed: refused by the server (mapped as the unary status would be), it
    /// never reached a stream, or the answer did not come in time.
    Failed(Error),
    /// The request was handed to the stream and no answer says what came of it: the stream
    /// broke or ended after it was sent, or the server answered `UNAVAILABLE` without
    /// being a not-leader refusal (a failing server). An acquire may have been granted.
    Unknown(Error),
    /// The member is not the leader: it refused the request and applied none of it. The
    /// stream is retired and the route moved; the caller may send the request again.
    NotLeader(Error),
}

/// What one attempt at a request came to, before the timeout is applied.
enum Exchange {
    /// Use the unary call.
    Unary,
    /// Answered, with the send instant.
    Answered(Duration, Answer),
    /// The stream could not be opened, or it broke before the request reached it.
    Failed(Status),
}

impl Session {
    /// A session that opens its stream on the route's channel (or a framed connection,
    /// wrapped in `framed_tls` if given) when first used.
    pub(crate) fn new(
        route: Arc<Route>,
        clock: Arc<dyn Clock>,
        config: &Config,
        framed_tls: Option<FramedConnector>,
    ) -> Self {
        Session {
            route,
            clock,
            timeout: config.request_timeout,
            enabled: config.session,
            framed: config.framed_session.clone(),
            framed_tls,
            max_in_flight: config.max_session_in_flight,
            unsupported: AtomicBool::new(false),
            ids: Arc::new(AtomicU64::new(1)),
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether requests go over the session: it is on, and the server did not refuse it.
    pub(crate) fn active(&self) -> bool {
        self.enabled && !self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends one request (`what` names it in a timeout error) and waits for its answer, for
    /// at most the request timeout. [`SessionOutcome::Unary`] when the caller must make the unary
    /// call instead (nothing was applied then).
    pub(crate) async fn call(&self, op: Op, what: &'static str) -> SessionOutcome {
        if !self.active() {
            return SessionOutcome::Unary;
        }
        // The stream the request was handed to, once it was: the one to retire if the
        // answer does not come.
        let mut used = None;
        let exchange = match tokio::time::timeout(self.timeout, self.exchange(op, &mut used)).await
        {
            Ok(exchange) => exchange,
            // The pending slot went with the dropped exchange; a late answer finds none.
            Err(_) => {
                if let (Some(_), Some(conn)) = (&self.framed, used) {
                    self.retire(&conn, "a framed session request timed out");
                }
                return SessionOutcome::Failed(Error::Timeout {
                    what,
                    after: self.timeout,
                });
            }
        };
        match exchange {
            Exchange::Unary => SessionOutcome::Unary,
            Exchange::Failed(status) => SessionOutcome::Failed(Error::from(status)),
            Exchange::Answered(_, Err(status)) => {
                // The stream broke: the next one goes where the failure points.
                if let (None, Some(conn)) = (&self.framed, &used) {
                    self.route.follow(conn.generation, &status);
                }
                match Failure::of(&status) {
                    Failure::Answered => SessionOutcome::Failed(Error::from(status)),
                    Failure::NotLeader(_) | Failure::NoAnswer { .. } => {
                        SessionOutcome::Unknown(Error::from(status))
                    }
                }
            }
            Exchange::Answered(_, Ok(Some(Reply::Error(refused))))
                if refused.error_code == NOT_LEADER_CODE =>
            {
                // A message carries no leader's address: the next stream is opened on the
                // next member, whose refusal of the stream itself names the leader.
                if let Some(conn) = &used {
                    self.retire(conn, "the member is not the leader");
                    if self.framed.is_none() {
                        self.route.advance(conn.generation);
                    }
                }
                SessionOutcome::NotLeader(Error::from(refused))
            }
            Exchange::Answered(_, Ok(Some(Reply::Error(refused)))) => {
                let unknown = matches!(
                    Code::from_i32(refused.code),
                    Code::Unavailable | Code::Cancelled | Code::Unknown
                );
                let error = Error::from(refused);
                if unknown {
                    SessionOutcome::Unknown(error)
                } else {
                    SessionOutcome::Failed(error)
                }
            }
            Exchange::Answered(sent, Ok(Some(reply))) => SessionOutcome::Answered { sent, reply },
            Exchange::Answered(_, Ok(None)) => SessionOutcome::Failed(Error::Protocol {
                what: format!("session answered a {what} with no result"),
            }),
        }
    }

    /// One request: a stream (opened if needed), room on it, a slot, the send, the answer.
    /// `used` is set to each stream the request gets room on, so it ends as the one it was
    /// sent on.
    async fn exchange(&self, mut op: Op, used: &mut Option<Arc<Conn>>) -> Exchange {
        for _ in 0..SEND_ATTEMPTS {
            let conn = match self.conn().await {
                Ok(conn) => conn,
                Err(status) if status.code() == Code::Unimplemented => {
                    self.unsupported(&status);
                    return Exchange::Unary;
                }
                Err(status) => return Exchange::Failed(status),
            };
            // Waits while the stream has its most requests in flight. Closed means it broke
            // or was retired meanwhile: nothing sent yet, so a new stream is safe.
            let Some(room) = conn.in_flight.room().await else {
                continue;
            };
            let conn = &*used.insert(conn.clone());
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let (sender, receiver) = oneshot::channel();
            {
                let mut pending = lock(&conn.pending);
                if pending.broken {
                    // Broke after we took it: nothing sent yet, so a new stream is safe.
                    continue;
                }
                pending.slots.insert(id, sender);
            }
            // Dropped in the reverse order: the slot leaves the map first (an answer that
            // comes later finds none and is released by the reader), then the receiver
            // takes back an answer that came before (and releases it) if nobody read it.
            let mut answer = Unread {
                receiver: Some(receiver),
                orphans: &conn.orphans,
            };
            // Removes the slot however this function ends: answered, timed out, dropped.
            let _slot = Slot {
                pending: &conn.pending,
                id,
            };
            // CONTRACT S4: the send instant is read before the message is handed over, so
            // it is never later than the real send.
            let sent = self.clock.now();
            if let Err(mpsc::error::SendError(request)) = conn
                .requests
                .send(SessionRequest { id, op: Some(op) })
                .await
            {
                // The stream's request half is gone: the message never left, retry on a
                // new stream.
                lock(&conn.pending).broken = true;
                conn.in_flight.close();
                match request.op {
                    Some(back) => op = back,
                    None => break,
                }
                continue;
            }
            room.sent();
            return match answer.read().await {
                Some(Err(status)) if status.code() == Code::Unimplemented => {
                    // A server that refuses the method applied none of it.
                    self.unsupported(&status);
                    Exchange::Unary
                }
                Some(answer) => Exchange::Answered(sent, answer),
                // The reader always answers or fails every slot; a dropped sender means
                // its task is gone, which only a runtime shutting down does.
                None => Exchange::Failed(Status::unavailable("the session stream's reader ended")),
            };
        }
        Exchange::Failed(Status::unavailable(
            "the session stream kept breaking before the request could be sent",
        ))
    }

    /// The open stream, or a new one. Errors are the status that opening it gave.
    async fn conn(&self) -> Result<Arc<Conn>, Status> {
        if let Some(conn) = self.healthy() {
            return Ok(conn);
        }
        let _opening = self.opening.lock().await;
        // Another caller may have opened it, or found the server has none, meanwhile.
        if let Some(conn) = self.healthy() {
            return Ok(conn);
        }
        if !self.active() {
            return Err(Status::unimplemented("the server has no Session rpc"));
        }
        let conn = self.open().await?;
        *self.current() = Some(conn.clone());
        Ok(conn)
    }

    /// The current stream, if it is still usable.
    fn healthy(&self) -> Option<Arc<Conn>> {
        let current = self.current();
        let conn = current.as_ref()?;
        let usable = !conn.requests.is_closed() && !lock(&conn.pending).broken;
        usable.then(|| conn.clone())
    }

    /// Opens a stream and starts its reader. A gRPC stream follows the leader: opening it
    /// changes nothing, so a not-leader refusal or a failure is tried again where the
    /// route then points ([`Route`]).
    async fn open(&self) -> Result<Arc<Conn>, Status> {
        let mut attempts = self.route.attempts(Resend::Always);
        let (requests, answers, generation) = loop {
            let (requests, receiver) = mpsc::channel(SEND_BUFFER);
            let current = self.route.current();
            let opened = match &self.framed {
                Some(addr) => open_framed(addr, self.framed_tls.as_ref(), receiver).await,
                None => current
                    .rpc()
                    .session(ReceiverStream::new(receiver))
                    .await
                    .map(|answers| answers.into_inner().boxed()),
            };
            match opened {
                Ok(answers) => break (requests, answers, current.generation),
                Err(status) if self.framed.is_some() || status.code() == Code::Unimplemented => {
                    return Err(status)
                }
                Err(status) => {
                    if let Next::Stop(_) = attempts.after(&current, status.clone()).await {
                        return Err(status);
                    }
                }
            }
        };
        tracing::debug!(framed = ?self.framed, "session stream open");
        let pending = Arc::new(Mutex::new(Pending::default()));
        let in_flight = Arc::new(InFlight::new(self.max_in_flight));
        let orphans = Arc::new(Orphans {
            requests: requests.downgrade(),
            in_flight: in_flight.clone(),
            ids: self.ids.clone(),
            route: self.route.clone(),
            timeout: self.timeout,
        });
        tokio::spawn(read(
            answers,
            pending.clone(),
            in_flight.clone(),
            orphans.clone(),
        ));
        Ok(Arc::new(Conn {
            requests,
            pending,
            in_flight,
            orphans,
            generation,
        }))
    }

    /// Notes that the server has no `Session`: unary calls from now on.
    fn unsupported(&self, status: &Status) {
        if !self.unsupported.swap(true, Ordering::Relaxed) {
            tracing::debug!(%status, "the server has no Session rpc: using unary calls");
        }
        *self.current() = None;
    }

    /// Takes no more requests on `conn` (a framed one whose request timed out: its
    /// connection may have died silently; one on a member that is not the leader), and
    /// stops offering it if it is still the current one. A newer stream that replaced it
    /// meanwhile stays. Requests already on it still get their answers, or fail when it
    /// ends; those waiting for room on it go to a new one.
    fn retire(&self, conn: &Arc<Conn>, why: &'static str) {
        let newly = !std::mem::replace(&mut lock(&conn.pending).broken, true);
        conn.in_flight.close();
        let mut current = self.current();
        if current.as_ref().is_some_and(|now| Arc::ptr_eq(now, conn)) {
            *current = None;
        }
        if newly {
            tracing::debug!("{why}: retiring the session stream");
        }
    }

    /// The current-stream slot, even if a thread panicked while holding it.
    fn current(&self) -> MutexGuard<'_, Option<Arc<Conn>>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a stream is open and takes requests.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.healthy().is_some()
    }

    /// How many requests await an answer on the current stream.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.current()
            .as_ref()
            .map_or(0, |conn| lock(&conn.pending).slots.len())
    }
}

/// A registered request: its slot is removed when the caller stops waiting, whatever the
/// reason (answered, timed out, future dropped).
struct Slot<'a> {
    /// The stream's pending map.
    pending: &'a Mutex<Pending>,
    /// The request's id.
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(self.pending).slots.remove(&self.id);
    }
}

/// The receiving end of a registered request. If its caller goes away without reading an
/// answer that has already come (a grant, say), the answer is taken back here and a grant
/// released: dropping it unread would keep the lock for a TTL with nobody holding it.
struct Unread<'a> {
    /// Where the answer comes; `None` once read.
    receiver: Option<oneshot::Receiver<Answer>>,
    /// How a grant nobody reads is released.
    orphans: &'a Orphans,
}

impl Unread<'_> {
    /// Waits for the answer; `None` if the reader went away without one (or it was
    /// already read).
    async fn read(&mut self) -> Option<Answer> {
        let answer = self.receiver.as_mut()?.await.ok();
        self.receiver = None;
        answer
    }
}

impl Drop for Unread<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        // Closed first: an answer the reader sends from now on fails to arrive, and the
        // reader releases it itself; one that arrived before is taken here.
        receiver.close();
        if let Ok(Ok(Some(Reply::Acquired(grant)))) = receiver.try_recv() {
            let how = self.orphans.release(grant.lease_id);
            tracing::debug!(
                token = grant.token,
                how,
                "a grant reached a caller that went away without reading it: releasing it"
            );
        }
    }
}

/// The pending map, even if a thread panicked while holding it (it is consistent between
/// operations).
fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answers of one stream, whichever way it travels.
type Answers = BoxStream<'static, Result<SessionResponse, Status>>;

/// Connects to the framed `Session` listener at `addr`, says hello, and starts the task
/// that writes `requests` to it; returns the answers read from it. Failures are
/// UNAVAILABLE statuses naming the address (retryable, as a broken gRPC stream's are).
async fn open_framed(
    addr: &str,
    tls: Option<&FramedConnector>,
    requests: mpsc::Receiver<SessionRequest>,
) -> Result<Answers, Status> {
    let unavailable =
        |e: &dyn std::fmt::Display| Status::unavailable(format!("framed session at {addr}: {e}"));
    let stream = framed::connect_tcp(addr)
        .await
        .map_err(|e| unavailable(&e))?;
    match tls {
        None => start_framed(addr, stream, requests).await,
        Some(tls) => {
            let stream = tls
                .wrap(stream)
                .await
                .map_err(|e| unavailable(&format!("TLS handshake failed: {e}")))?;
            start_framed(addr, stream, requests).await
        }
    }
}

/// Says hello on an open connection (plain or TLS) and starts the task that writes
/// `requests` to it; returns its answers.
async fn start_framed<S>(
    addr: &str,
    stream: S,
    requests: mpsc::Receiver<SessionRequest>,
) -> Result<Answers, Status>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let frames = framed::hello(stream)
        .await
        .map_err(|e| Status::unavailable(format!("framed session at {addr}: {e}")))?;
    let (sink, frames_in) = frames.split();
    let (pongs, pongs_out) = mpsc::channel(1);
    tokio::spawn(write_framed(requests, pongs_out, sink));
    let addr = addr.to_string();
    Ok(frames_in
        .filter_map(move |frame| {
            let answer = match frame {
                // The server's keepalive ping: answer it. Full means a pong is already
                // queued, which answers this ping too.
                Ok(frame) if frame.as_ref() == framed::PING => {
                    let _ = pongs.try_send(());
                    None
                }
                Ok(frame) => Some(SessionResponse::decode(frame).map_err(|e| {
                    Status::internal(format!("framed session at {addr}: undecodable answer: {e}"))
                })),
                Err(e) => Some(Err(Status::unavailable(format!(
                    "framed session at {addr}: {e}"
                )))),
            };
            futures::future::ready(answer)
        })
        .boxed())
}

/// The writer task of one framed stream: sends each request as a frame, and an empty frame
/// for each of the reader's `pongs` (answers to the server's keepalive pings), flushing
/// whenever nothing more is queued (so requests queued together go out in one write).
/// Ends when the last sender of `requests` is gone, closing the connection's sending half
/// (the server then finishes the session), or when a write fails (dropping `requests`, so
/// callers see the stream as broken and open a new one).
async fn write_framed<S: AsyncWrite>(
    requests: mpsc::Receiver<SessionRequest>,
    pongs: mpsc::Receiver<()>,
    sink: SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>,
) {
    let requests =
        ReceiverStream::new(requests).map(|request| Ok(Bytes::from(request.encode_to_vec())));
    let pongs = ReceiverStream::new(pongs).map(|()| Ok(Bytes::from_static(framed::PING)));
    if let Err(error) = framed::until_primary_ends(requests, pongs)
        .forward(sink)
        .await
    {
        tracing::debug!(%error, "framed session: a write failed");
    }
}

/// How a stream's reader releases a grant whose caller gave up (an orphan).
struct Orphans {
    /// The stream's requests, for the release. Weak, so that the stream's request half
    /// ends once the client and its callers are gone, and the server then ends the stream.
    requests: mpsc::WeakSender<SessionRequest>,
    /// The stream's requests in flight: a release over the stream needs room there.
    in_flight: Arc<InFlight>,
    /// Where request ids come from.
    ids: Arc<AtomicU64>,
    /// For a unary release when the stream takes no more requests (its request half has
    /// ended, or it was retired) but its answers still come in.
    route: Arc<Route>,
    /// How long that unary release may take.
    timeout: Duration,
}

impl Orphans {
    /// Releases `lease_id` over the stream if it still takes requests and has room for
    /// one more in flight, else with a unary call in the background; says which.
    fn release(&self, lease_id: String) -> &'static str {
        let release = ReleaseRequest {
            lease_id,
            lock: String::new(),
        };
        let Some(sender) = self.requests.upgrade() else {
            return self.release_unary(release);
        };
        let Some(room) = self.in_flight.try_room() else {
            return self.release_unary(release);
        };
        let message = SessionRequest {
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            // A copy: the send may fail, and then the unary call needs it (a rare path).
            op: Some(Op::Release(release.clone())),
        };
        match sender.try_send(message) {
            Ok(()) => {
                room.sent();
                "over the session"
            }
            Err(_full_or_closed) => self.release_unary(release),
        }
    }

    /// Releases with a unary call in a background task, if there is a runtime to run it.
    fn release_unary(&self, release: ReleaseRequest) -> &'static str {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return "not at all: no runtime to run the release in (it expires after its TTL)";
        };
        let (route, timeout) = (self.route.clone(), self.timeout);
        runtime.spawn(async move {
            let outcome = route
                .call("release", timeout, Resend::Always, |mut rpc| {
                    let release = release.clone();
                    async move { rpc.release(release).await }
                })
                .await;
            if let Err(error) = outcome {
                tracing::debug!(%error, "releasing an orphan grant failed");
            }
        });
        "with a unary call"
    }
}

/// The reader task of one stream: frees a room in flight for each answer and hands it to
/// the request with its id; when the stream ends, fails every pending request with the
/// status that ended it, and lets go of the callers waiting for room.
async fn read(
    mut answers: Answers,
    pending: Arc<Mutex<Pending>>,
    in_flight: Arc<InFlight>,
    orphans: Arc<Orphans>,
) {
    let status = loop {
        match answers.next().await {
            Some(Ok(answer)) => {
                in_flight.answered();
                deliver(&pending, answer, &orphans);
            }
            None => break Status::unavailable("the server closed the session stream"),
            Some(Err(status)) => break status,
        }
    };
    let slots = {
        let mut pending = lock(&pending);
        pending.broken = true;
        std::mem::take(&mut pending.slots)
    };
    in_flight.close();
    if slots.is_empty() {
        tracing::debug!(%status, "session stream ended");
    } else {
        tracing::warn!(pending = slots.len(), %status, "session stream failed");
    }
    for (_, slot) in slots {
        let _ = slot.send(Err(status.clone()));
    }
}

/// Hands one answer to its request, or deals with an orphan (its caller gave up).
fn deliver(pending: &Mutex<Pending>, answer: SessionResponse, orphans: &Orphans) {
    let slot = lock(pending).slots.remove(&answer.id);
    let orphan = match slot {
        Some(slot) => match slot.send(Ok(answer.result)) {
            Ok(()) => return,
            // The caller went away between its timeout and the removal of its slot.
            Err(Ok(result)) => result,
            Err(Err(_)) => return,
        },
        None => answer.result,
    };
    match orphan {
        Some(Reply::Acquired(grant)) => {
            let how = orphans.release(grant.lease_id);
            tracing::debug!(
                token = grant.token,
                how,
                "a grant came after its caller gave up: releasing it"
            );
        }
        other => {
            // Only the kind: a renewal's answer carries the lease id, a bearer secret.
            let kind = match other {
                Some(Reply::Acquired(_)) => "acquired",
                Some(Reply::Renewed(_)) => "renewed",
                Some(Reply::Released(_)) => "released",
                Some(Reply::Error(_)) => "refused",
                None => "empty",
            };
            tracing::debug!(
                id = answer.id,
                kind,
                "session answer for a request nobody waits for"
            )
        }
    }
}
