//! [`SessionStream`]: the answers of one `Session` rpc, as a stream that runs the requests
//! itself.
//!
//! Each request becomes a future in a `FuturesUnordered`, polled by whoever polls the
//! answers (hyper's task for this HTTP/2 stream, or a framed connection's task), so a
//! queued acquire does not hold up the rest and answers leave in the order they are ready.
//! No task is spawned and no channel is crossed per request: on 2 cores that hop cost
//! about a tenth of the session's CPU.
//!
//! How a session ends decides what happens to the requests still in flight:
//! - The client finished sending (the inbound stream ends): they are answered, then the
//!   session ends. A gRPC half-close, and the server's own shutdown of a framed connection.
//! - The client is gone (the inbound stream yields an error, or whoever polls drops the
//!   stream, as hyper does when the client goes away): they are dropped, and their drop
//!   guards take queued acquirers out of their queues and undo grants nobody received
//!   (CONTRACT L2). A framed connection's end of file is this case: TCP cannot tell a
//!   client that stopped sending from one that is gone.

use std::pin::Pin;
use std::task::{Context, Poll};

use fenced_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use tonic::Status;

use crate::service::LockServer;

/// Requests of one session in flight at most; past that the session stops reading until
/// answers go out (HTTP/2 flow control then slows the client down).
const MAX_IN_FLIGHT: usize = 1024;

/// The answers of one session. See the module documentation. `Inbound` is where its
/// requests come from: a gRPC `Session` call's request stream, or a framed connection
/// ([`crate::framed`]). Its end answers what is in flight; an `Err` from it drops that.
pub struct SessionStream<Inbound> {
    /// Runs each request.
    server: LockServer,
    /// The client's requests; `None` once it has finished sending.
    inbound: Option<Inbound>,
    /// Requests being served.
    in_flight: FuturesUnordered<BoxFuture<'static, pb::SessionResponse>>,
}

impl<Inbound> SessionStream<Inbound> {
    /// Serves `inbound` with `server`.
    pub fn new(server: LockServer, inbound: Inbound) -> Self {
        SessionStream {
            server,
            inbound: Some(inbound),
            in_flight: FuturesUnordered::new(),
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
        while this.in_flight.len() < MAX_IN_FLIGHT {
            let Some(inbound) = this.inbound.as_mut() else {
                break;
            };
            match Pin::new(inbound).poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    let server = this.server.clone();
                    this.in_flight
                        .push(Box::pin(async move { server.session_one(request).await }));
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
        match Pin::new(&mut this.in_flight).poll_next(cx) {
            Poll::Ready(Some(response)) => Poll::Ready(Some(Ok(response))),
            // Nothing in flight: done if the client is, else the inbound poll above has
            // registered the wake-up.
            Poll::Ready(None) if this.inbound.is_none() => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}
