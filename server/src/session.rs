//! [`SessionStream`]: the answers of one `Session` rpc, as a stream that runs the requests
//! itself.
//!
//! Each request becomes a future in a `FuturesUnordered`, polled by whoever polls the
//! answers (hyper's task for this HTTP/2 stream), so a queued acquire does not hold up the
//! rest and answers leave in the order they are ready. No task is spawned and no channel
//! is crossed per request: on 2 cores that hop cost about a tenth of the session's CPU.
//! When the client goes away, hyper drops the stream, which drops every request still in
//! flight, and their drop guards take queued acquirers out of their queues and undo grants
//! nobody received (CONTRACT L2).

use std::pin::Pin;
use std::task::{Context, Poll};

use fenced_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use tonic::{Status, Streaming};

use crate::service::LockServer;

/// Requests of one session in flight at most; past that the session stops reading until
/// answers go out (HTTP/2 flow control then slows the client down).
const MAX_IN_FLIGHT: usize = 1024;

/// The answers of one session. See the module documentation.
pub struct SessionStream {
    /// Runs each request.
    server: LockServer,
    /// The client's requests; `None` once it has finished sending.
    inbound: Option<Streaming<pb::SessionRequest>>,
    /// Requests being served.
    in_flight: FuturesUnordered<BoxFuture<'static, pb::SessionResponse>>,
}

impl SessionStream {
    /// Serves `inbound` with `server`.
    pub fn new(server: LockServer, inbound: Streaming<pb::SessionRequest>) -> Self {
        SessionStream {
            server,
            inbound: Some(inbound),
            in_flight: FuturesUnordered::new(),
        }
    }
}

impl Stream for SessionStream {
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
                // The client finished sending (or its stream broke): answer what is in
                // flight, then end.
                Poll::Ready(Some(Err(_)) | None) => this.inbound = None,
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
