//! The `Session` over framed TCP: the same requests and answers as the gRPC `Session` call,
//! without HTTP/2 under them.
//!
//! Why: on a small machine a lock cycle's cost is mostly per message, and a message on an
//! HTTP/2 stream crosses several tasks on each side (tonic's body channel, hyper's
//! connection task) and carries h2 framing and flow control. A framed connection is one
//! task per connection, one read and one write per message. `BENCHMARKS.md` measures the
//! two side by side in every run.
//!
//! The protocol is in [`fenced_proto::framed`]: a hello, then one protobuf
//! `SessionRequest` or `SessionResponse` per length-prefixed frame. Each connection is one
//! session, served by [`crate::session`] exactly as a gRPC `Session` call is. On a server
//! that serves TLS, every connection is TLS (same certificate as gRPC), so lease ids, which
//! are bearer secrets, never cross the network in the clear.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use fenced_proto::framed::{codec, until_primary_ends, HELLO, PING, REFUSED};
use fenced_proto::v1 as pb;
use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::admission::{accept, ConnectionLimit, Slot};
use crate::service::LockServer;
use crate::session::SessionStream;
use crate::throttle::Throttle;

/// When the server pings a silent connection, and how long it then waits for an answer
/// (the protocol's point 4 in [`fenced_proto::framed`]).
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Ping a connection that has sent nothing for this long.
    pub interval: Duration,
    /// Close it when nothing comes within this after the ping.
    pub timeout: Duration,
}

/// How the framed listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// When to ping a silent connection, and how long to wait for the answer.
    pub keepalive: Keepalive,
    /// How long a new connection has, from its accept, to finish its TLS handshake (if
    /// any) and send its hello.
    pub handshake_timeout: Duration,
    /// Connections open at once, at most; one past it is closed at once.
    pub max_connections: usize,
    /// Requests of one session in flight at once, at most; one past it is refused at once.
    pub max_in_flight: usize,
    /// How long a stop lets connections answer what they have in flight.
    pub drain_timeout: Duration,
}

/// Accepts connections on `listener` (over TLS with `tls`), at most
/// `settings.max_connections` at once, and serves each as one session (pinging silent
/// ones), until `stop` is cancelled; then stops accepting and lets every connection answer
/// what it has in flight (reading no more requests) for up to `settings.drain_timeout`,
/// after which the rest are cut, which drops and so undoes what they had in flight.
/// Returns once every connection is gone.
pub async fn serve(
    listener: TcpListener,
    server: LockServer,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
    settings: Settings,
) {
    let limit = ConnectionLimit::new("framed session", settings.max_connections);
    let failures = std::sync::Arc::new(Throttle::new(Duration::from_secs(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            (stream, peer) = accept(&listener, "framed session") => {
                // Past the limit the connection is dropped here, which closes it.
                if let Some(slot) = limit.admit(peer) {
                    connections.spawn(serve_connection(
                        Accepted { stream, peer, slot },
                        tls.clone(),
                        server.clone(),
                        stop.clone(),
                        settings,
                        failures.clone(),
                    ));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    let drain_timeout = settings.drain_timeout;
    if tokio::time::timeout(drain_timeout, drain).await.is_err() {
        tracing::warn!(timeout = ?drain_timeout, "framed sessions did not drain in time; closing them");
        connections.abort_all();
        // `join_next` returns each aborted task once its future is dropped: the undo of
        // what it had in flight is staged by then.
        while connections.join_next().await.is_some() {}
    }
}

/// Why a connection was closed early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// The socket failed, or a frame was too long.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The first frame was not [`HELLO`].
    #[error(
        "the first frame was not the hello {:?}",
        String::from_utf8_lossy(HELLO)
    )]
    NoHello,
    /// The TLS handshake (if any) and the hello did not finish within the handshake
    /// timeout.
    #[error("no TLS handshake and hello within {0:?} (--handshake-timeout-ms)")]
    HandshakeTimeout(Duration),
    /// The TLS handshake failed (a plaintext client on a TLS listener, say).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

impl ConnectionError {
    /// Whether the connection failed before its session began, where a client can cause
    /// as many failures as it likes: those warnings are throttled.
    fn before_the_session(&self) -> bool {
        matches!(
            self,
            ConnectionError::NoHello
                | ConnectionError::HandshakeTimeout(_)
                | ConnectionError::Handshake(_)
        )
    }
}

/// A connection the listener took, with its place under the connection limit.
struct Accepted {
    /// The connection.
    stream: TcpStream,
    /// The client's address.
    peer: SocketAddr,
    /// Its place under the listener's connection limit, given back when the connection
    /// task ends.
    slot: Slot,
}

/// Why a connection stopped being read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The socket failed, or a frame was too long.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A frame is not a `SessionRequest`.
    #[error("{0}")]
    Undecodable(#[from] prost::DecodeError),
    /// Nothing came within the keepalive timeout after a ping.
    #[error("no answer to a keepalive ping within {0:?}")]
    Silent(Duration),
}

/// Serves one connection as one session. `failures` throttles the warnings about
/// connections that fail before their session begins.
async fn serve_connection(
    accepted: Accepted,
    tls: Option<TlsAcceptor>,
    server: LockServer,
    stop: CancellationToken,
    settings: Settings,
    failures: std::sync::Arc<Throttle>,
) {
    let Accepted { stream, peer, slot } = accepted;
    // The TLS handshake and the hello share one deadline, counted from the accept.
    let handshake_deadline = Instant::now() + settings.handshake_timeout;
    let served = async {
        match tls {
            // The plaintext halves are split without a lock between them.
            None => {
                let (read, write) = stream.into_split();
                run_connection(
                    read,
                    write,
                    peer,
                    server,
                    stop,
                    settings,
                    handshake_deadline,
                )
                .await
            }
            Some(acceptor) => {
                let stream = tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream))
                    .await
                    .map_err(|_elapsed| {
                        ConnectionError::HandshakeTimeout(settings.handshake_timeout)
                    })?
                    .map_err(ConnectionError::Handshake)?;
                let (read, write) = tokio::io::split(stream);
                run_connection(
                    read,
                    write,
                    peer,
                    server,
                    stop,
                    settings,
                    handshake_deadline,
                )
                .await
            }
        }
    };
    let served = served.await;
    // The slot is given back once the connection is closed (its halves dropped above).
    drop(slot);
    match served {
        Ok(()) => {}
        Err(error) if error.before_the_session() => {
            if let Some(also_failed) = failures.admit(std::time::Instant::now()) {
                tracing::warn!(%peer, %error, also_failed, "framed connection closed before its session began");
            }
        }
        Err(error) => tracing::warn!(%peer, %error, "framed session closed"),
    }
}

async fn run_connection<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    server: LockServer,
    stop: CancellationToken,
    settings: Settings,
    handshake_deadline: Instant,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut frames_in = FramedRead::new(read, codec());
    let mut frames_out = FramedWrite::new(write, codec());

    match tokio::time::timeout_at(handshake_deadline, frames_in.next()).await {
        Ok(Some(Ok(hello))) if hello.as_ref() == HELLO => {
            frames_out.send(Bytes::from_static(HELLO)).await?;
        }
        Ok(Some(Ok(_))) => {
            let refusal = [REFUSED, b"expected the hello frame ", HELLO].concat();
            frames_out.send(Bytes::from(refusal)).await?;
            return Err(ConnectionError::NoHello);
        }
        Ok(Some(Err(error))) => return Err(error.into()),
        // Closed before saying anything: a port probe, nothing to report.
        Ok(None) => return Ok(()),
        Err(_elapsed) => {
            return Err(ConnectionError::HandshakeTimeout(
                settings.handshake_timeout,
            ))
        }
    }

    // A bad frame, a silence, and the end of file end the session as a client that is
    // gone (what is in flight is dropped and undone, CONTRACT L2); the server's own stop
    // ends the inbound side cleanly, so what is in flight is answered first.
    let (pings, pings_out) = mpsc::channel(1);
    let reader = RequestReader::new(frames_in, settings.keepalive, pings);
    let inbound = futures::stream::unfold(reader, RequestReader::next_request)
        .map(move |request| {
            request.map_err(|error| {
                if !matches!(&error, ReadError::Io(error) if is_disconnect(error)) {
                    tracing::warn!(%peer, %error, "framed session: closing the connection");
                }
                ClientGone
            })
        })
        .chain(futures::stream::once(async { Err(ClientGone) }))
        .take_until(stop.cancelled_owned());
    // At its in-flight cap the session keeps reading, refusing the requests past it: the
    // client's answers to pings come in the same byte stream as its requests, so a session
    // that stopped reading could no longer tell a live client from a vanished one (L2).
    // The framed protocol carries no credentials (it is refused with authentication on):
    // its caller has no identity, so a policy would refuse it everything.
    let caller = server
        .caller(&tonic::Extensions::default())
        .with_peer(Some(peer));
    let answers = SessionStream::new(server, caller, Box::pin(inbound), settings.max_in_flight)
        .refusing_past_cap(peer)
        .map(|answer| {
            answer
                .map(|response| Bytes::from(response.encode_to_vec()))
                .map_err(|status| std::io::Error::other(status.to_string()))
        });
    let pings = ReceiverStream::new(pings_out).map(|()| Ok(Bytes::from_static(PING)));
    // `forward` flushes whenever no frame is ready, so answers that are ready together go
    // out in one write.
    let forwarded = until_primary_ends(answers, pings)
        .forward(&mut frames_out)
        .await;
    match forwarded {
        Err(error) if !is_disconnect(&error) => Err(error.into()),
        _ => Ok(()),
    }
}

/// Whether a socket error is only the client going away (not worth a warning).
fn is_disconnect(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        error.kind(),
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

/// The client is gone: its connection ended or broke, it broke the protocol, or it fell
/// silent.
struct ClientGone;

/// Reads one connection's requests after the hello and watches its silence: skips the
/// client's keepalive frames, has the writing side ping a client that falls silent, and
/// fails when the ping goes unanswered.
struct RequestReader<R> {
    /// The client's frames.
    frames: FramedRead<R, LengthDelimitedCodec>,
    /// When to ping, and how long to wait for the answer.
    keepalive: Keepalive,
    /// Asks the writing side to send a ping.
    pings: mpsc::Sender<()>,
    /// When the client's last frame came (or the session began).
    last_heard: Instant,
    /// When the unanswered ping went out, if one did since the last frame.
    pinged_at: Option<Instant>,
    /// Fires at the next moment the silence must be looked at. Moved lazily: a frame only
    /// notes [`RequestReader::last_heard`], so a busy connection costs no timer update per
    /// frame.
    check: Pin<Box<Sleep>>,
}

impl<R: AsyncRead + Unpin> RequestReader<R> {
    fn new(
        frames: FramedRead<R, LengthDelimitedCodec>,
        keepalive: Keepalive,
        pings: mpsc::Sender<()>,
    ) -> RequestReader<R> {
        let now = Instant::now();
        RequestReader {
            frames,
            keepalive,
            pings,
            last_heard: now,
            pinged_at: None,
            check: Box::pin(tokio::time::sleep_until(now + keepalive.interval)),
        }
    }

    /// The client's next request, skipping its keepalive frames; pings the client when it
    /// has been silent for the interval, and fails when a ping then goes unanswered. `None`
    /// at the end of file.
    async fn next_request(
        mut self,
    ) -> Option<(Result<pb::SessionRequest, ReadError>, RequestReader<R>)> {
        loop {
            tokio::select! {
                biased;
                frame = self.frames.next() => {
                    self.last_heard = Instant::now();
                    self.pinged_at = None;
                    let request = match frame {
                        None => return None,
                        Some(Ok(frame)) if frame.as_ref() == PING => continue,
                        Some(Ok(frame)) => pb::SessionRequest::decode(frame).map_err(ReadError::from),
                        Some(Err(error)) => Err(ReadError::from(error)),
                    };
                    return Some((request, self));
                }
                () = self.check.as_mut() => {
                    let now = Instant::now();
                    let next_check = match self.pinged_at {
                        Some(pinged_at) if now >= pinged_at + self.keepalive.timeout => {
                            return Some((Err(ReadError::Silent(self.keepalive.timeout)), self));
                        }
                        Some(pinged_at) => pinged_at + self.keepalive.timeout,
                        None if now >= self.last_heard + self.keepalive.interval => {
                            // Full means a ping is already on its way: one is enough.
                            let _ = self.pings.try_send(());
                            self.pinged_at = Some(now);
                            now + self.keepalive.timeout
                        }
                        None => self.last_heard + self.keepalive.interval,
                    };
                    self.check.as_mut().reset(next_check);
                }
            }
        }
    }
}
