//! [`SessionStream`]: the answers of one `Session` rpc, as a stream that runs the requests
//! itself.
//!
//! Each request becomes a future in a `FuturesUnordered`, polled by whoever polls the
//! answers (hyper's task for this HTTP/2 stream, or a framed connection's task), so a
//! queued acquire does not hold up the rest and answers leave in the order they are ready.
//! No task is spawned and no channel is crossed per request: each such hop would add a
//! task wake-up to every request, which on a small machine is a large part of what a lock
//! cycle costs.
//!
//! How a session ends decides what happens to the requests still in flight:
//! - The client finished sending (the inbound stream ends): they are answered, then the
//!   session ends. A gRPC half-close, and the server's own shutdown of a framed connection.
//! - The client is gone (the inbound stream yields an error, or whoever polls drops the
//!   stream, as hyper does when the client goes away): they are dropped, and their drop
//!   guards take queued acquirers out of their queues and undo grants nobody received
//!   (CONTRACT L2). A framed connection's end of file is this case: TCP cannot tell a
//!   client that stopped sending from one that is gone.
//!
//! A session has at most its cap of requests in flight (`--max-session-in-flight`). At the
//! cap a gRPC `Session` stops reading until an answer goes out: HTTP/2 flow control then
//! holds the client, and the connection's keepalive PINGs, which travel beside the stream,
//! still tell whether the client is there. A framed session cannot stop reading: the
//! client's answers to its pings come in the same byte stream as its requests, so it keeps
//! reading and answers each request past the cap at once with RESOURCE_EXHAUSTED
//! ([`SessionStream::refusing_past_cap`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use fenced_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use tonic::Status;

use crate::access::Caller;
use crate::service::LockServer;
use crate::table::Refusal;

/// The answers of one session. See the module documentation. `Inbound` is where its
/// requests come from: a gRPC `Session` call's request stream, or a framed connection
/// ([`crate::framed`]). Its end answers what is in flight; an `Err` from it drops that.
pub struct SessionStream<Inbound> {
    /// Runs each request.
    server: LockServer,
    /// Who sent the requests (the identity the `Session` call carried), checked against
    /// the policy by each handler.
    caller: Caller,
    /// The client's requests; `None` once it has finished sending.
    inbound: Option<Inbound>,
    /// Requests being served.
    in_flight: FuturesUnordered<BoxFuture<'static, pb::SessionResponse>>,
    /// Requests in flight at most.
    max_in_flight: usize,
    /// What happens at the cap.
    at_cap: AtCap,
    /// Counts the session in the live sessions gauge while it lives.
    _live: LiveSession,
}

/// One live session in the `fenced_sessions` gauge, taken out when dropped.
struct LiveSession;

impl LiveSession {
    fn new() -> LiveSession {
        crate::telemetry::telemetry().sessions.increment(1.0);
        LiveSession
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        crate::telemetry::telemetry().sessions.decrement(1.0);
    }
}

/// What a session does with its client's requests while it has its most in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtCap {
    /// Read no more until an answer goes out.
    Wait,
    /// Keep reading; answer each request at once with RESOURCE_EXHAUSTED. `peer` is the
    /// client's address, for the warning at the first refusal; `warned` says whether it
    /// was logged.
    Refuse {
        /// The client's address.
        peer: SocketAddr,
        /// Whether this session's first refusal was logged.
        warned: bool,
    },
}

impl<Inbound> SessionStream<Inbound> {
    /// Serves `inbound` from `caller` with `server`, at most `max_in_flight` requests at
    /// once (at least one), reading no more while it has that many.
    pub fn new(server: LockServer, caller: Caller, inbound: Inbound, max_in_flight: usize) -> Self {
        SessionStream {
            server,
            caller,
            inbound: Some(inbound),
            in_flight: FuturesUnordered::new(),
            max_in_flight: max_in_flight.max(1),
            at_cap: AtCap::Wait,
            _live: LiveSession::new(),
        }
    }

    /// At the cap, keeps reading and answers each request at once with
    /// RESOURCE_EXHAUSTED (warning once per session, naming `peer`), instead of reading no
    /// more: for a framed session, whose keepalive must keep hearing the client.
    pub fn refusing_past_cap(mut self, peer: SocketAddr) -> Self {
        self.at_cap = AtCap::Refuse {
            peer,
            warned: false,
        };
        self
    }

    /// The answer to request `id`, which came while the session had its most in flight.
    fn refuse(&mut self, id: u64) -> pb::SessionResponse {
        if let AtCap::Refuse { peer, warned } = &mut self.at_cap {
            if !*warned {
                *warned = true;
                tracing::warn!(
                    %peer,
                    limit = self.max_in_flight,
                    "framed session at its cap of requests in flight (--max-session-in-flight): \
                     refusing requests past it"
                );
            }
        }
        let status = Status::from(Refusal::Exhausted {
            what: "requests in flight on this session",
            limit: self.max_in_flight,
        });
        pb::SessionResponse {
            id,
            result: Some(pb::session_response::Result::Error(
                fenced_proto::session::session_error(&status),
            )),
        }
    }
}

impl<Inbound, E> Stream for SessionStream<Inbound>
where
    Inbound: Stream<Item = Result<pb::SessionRequest, E>> + Unpin,
{
    type Item = Result<pb::SessionResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Take in every request that has arrived (up to the cap), so each starts at once.
        while this.in_flight.len() < this.max_in_flight {
            let Some(inbound) = this.inbound.as_mut() else {
                break;
            };
            match Pin::new(inbound).poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    this.in_flight.push(Box::pin(answer(
                        this.server.clone(),
                        this.caller.clone(),
                        request,
                    )));
                }
                // The client finished sending: answer what is in flight, then end.
                Poll::Ready(None) => this.inbound = None,
                // The client is gone: drop what is in flight (its guards undo it), end.
                Poll::Ready(Some(Err(_))) => {
                    this.inbound = None;
                    this.in_flight.clear();
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        let answered = Pin::new(&mut this.in_flight).poll_next(cx);
        if let Poll::Ready(Some(response)) = answered {
            return Poll::Ready(Some(Ok(response)));
        }
        // At the cap with no answer ready: a refusing session reads one more request and
        // refuses it. One per poll, so refusals wait for the writer like any answer.
        let at_cap = this.in_flight.len() >= this.max_in_flight;
        if at_cap && matches!(this.at_cap, AtCap::Refuse { .. }) {
            if let Some(inbound) = this.inbound.as_mut() {
                match Pin::new(inbound).poll_next(cx) {
                    Poll::Ready(Some(Ok(request))) => {
                        return Poll::Ready(Some(Ok(this.refuse(request.id))));
                    }
                    Poll::Ready(None) => this.inbound = None,
                    Poll::Ready(Some(Err(_))) => {
                        this.inbound = None;
                        this.in_flight.clear();
                        return Poll::Ready(None);
                    }
                    // The wake-up for the next request (or ping, or silence) is registered.
                    Poll::Pending => {}
                }
            }
        }
        match answered {
            // Nothing in flight: done if the client is, else the inbound poll above has
            // registered the wake-up.
            Poll::Ready(None) if this.inbound.is_none() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

/// The answer to one request of a session: what the unary call of its operation answers,
/// from the same handler. Dropping the future drops the handler's, which undoes what it
/// had begun (a queued acquirer leaves its queue, L2).
async fn answer(
    server: LockServer,
    caller: Caller,
    request: pb::SessionRequest,
) -> pb::SessionResponse {
    use pb::session_request::Op;
    use pb::session_response::Result as Outcome;
    let result = match request.op {
        Some(Op::Acquire(acquire)) => server
            .acquire(&caller, acquire)
            .await
            .map(Outcome::Acquired),
        Some(Op::Renew(renew)) => server.renew(&caller, renew).await.map(Outcome::Renewed),
        Some(Op::Release(release)) => server
            .release(&caller, release)
            .await
            .map(Outcome::Released),
        None => Err(crate::convert::invalid(
            "session request without an operation".to_string(),
        )),
    };
    pb::SessionResponse {
        id: request.id,
        result: Some(result.unwrap_or_else(|status| {
            Outcome::Error(fenced_proto::session::session_error(&status))
        })),
    }
}
