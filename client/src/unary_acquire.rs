//! The unary `Acquire` call, and what becomes of its grant when the caller goes away.
//!
//! A caller may drop an acquire's future at any moment (a `select!` whose other branch
//! won, a timeout, an aborted task). The server cannot tell a grant it answered from one
//! that was read, and only the answer carries the lease id, so a grant nobody reads keeps
//! the lock from everyone for its TTL. [`InFlight`] owns the call so that its drop can
//! deal with that:
//! - A **try-once** acquire is answered at once, so the call is left to finish in the
//!   background (within the request timeout) and any grant it brings is released.
//! - A **waiting** acquire must leave the server's queue at once (CONTRACT L2): dropping
//!   the call resets its HTTP/2 stream, which does that. A grant that has already reached
//!   this client is taken first (one poll, no waiting) and released. One still on the
//!   wire when the reset reaches the server is seen by nobody and expires after its TTL:
//!   a unary call has no way to ask for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use fenced_proto::v1::AcquireRequest;
use fenced_proto::v1::AcquireResponse;
use fenced_types::LeaseId;
use futures::future::BoxFuture;
use futures::FutureExt;
use tonic::{Response, Status};

use crate::config::Config;
use crate::error::Error;
use crate::route::Resend;
use crate::shared::Shared;

/// The unary `Acquire` call, bounded by the wait plus the request timeout. Returns the send
/// instant (read before the call, CONTRACT S4) with the answer. Dropping its future hands
/// a grant back as the module documentation says.
///
/// It follows the leader ([`Route`](crate::route::Route)): a not-leader refusal changed
/// nothing, so the acquire is sent again where it points, with a send instant of its own.
/// A try-once acquire that creates a lease with the id this client chose
/// (`new_lease_id`) is sent again after a failure without an answer too (a leader that
/// died mid-call): if the first attempt was granted, the retry gets that grant back; if
/// that grant was handed back meanwhile (its id is taken now), it acquires once more with
/// a fresh id. Any other acquire that failed without an answer is sent again only if it
/// never left (no connection could be made): a queued one that reached a server that then
/// failed may still be granted, and that failure is reported.
pub(crate) async fn unary_acquire(
    shared: &Arc<Shared>,
    mut request: AcquireRequest,
    wait: Duration,
) -> Result<(Duration, AcquireResponse), Error> {
    let idempotent = wait.is_zero() && !request.new_lease_id.is_empty();
    if !idempotent {
        return send_acquire(shared, request, wait, Resend::IfUnsent).await;
    }
    match send_acquire(shared, request.clone(), wait, Resend::Always).await {
        Err(Error::LeaseIdTaken { .. }) => {
            request.new_lease_id = LeaseId::random().to_string();
            send_acquire(shared, request, wait, Resend::Always).await
        }
        answer => answer,
    }
}

/// One unary `Acquire`, following the leader, sent again after a failure without an
/// answer as `resend` says.
async fn send_acquire(
    shared: &Arc<Shared>,
    request: AcquireRequest,
    wait: Duration,
    resend: Resend,
) -> Result<(Duration, AcquireResponse), Error> {
    // Saturating, and no longer than any timer can hold: a caller may well write
    // `Duration::MAX` for "as long as it takes" (the server then refuses the wait).
    let limit = wait
        .saturating_add(shared.config.request_timeout)
        .min(Config::LONGEST);
    shared
        .route
        .call("acquire", limit, resend, |mut rpc| {
            let mut request = tonic::Request::new(request.clone());
            request.set_timeout(limit);
            // CONTRACT S4: read before the call is handed to the channel.
            let sent = shared.now();
            let call = InFlight {
                call: Some(Box::pin(async move { rpc.acquire(request).await })),
                waiting: !wait.is_zero(),
                shared: shared.clone(),
            };
            async move { call.await.map(|reply| (sent, reply)) }
        })
        .await
}

/// A unary `Acquire` call in flight: the call until it has answered, and what is needed
/// to hand its grant back if the caller goes away first.
struct InFlight {
    /// The call; `None` once it has answered. Boxed so that its drop can move it into a
    /// background task.
    call: Option<BoxFuture<'static, Result<Response<AcquireResponse>, Status>>>,
    /// Whether it waits in the lock's queue (else it is a try-once acquire).
    waiting: bool,
    /// Where a grant nobody reads is released.
    shared: Arc<Shared>,
}

impl Future for InFlight {
    type Output = Result<AcquireResponse, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(Err(Status::internal(
                "the acquire was polled after it answered",
            )));
        };
        let answer = ready!(call.as_mut().poll(cx));
        self.call = None;
        Poll::Ready(answer.map(Response::into_inner))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        if self.waiting {
            // Take a grant that is already here, without waiting (the tokio budget does
            // not apply: this is the last poll); then the call is dropped, which resets
            // its stream and takes the waiter out of the queue.
            if let Some(Ok(reply)) = tokio::task::unconstrained(&mut call).now_or_never() {
                hand_back(&self.shared, reply.into_inner());
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to finish an abandoned acquire in: a grant it brings expires after its TTL");
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let timeout = shared.config.request_timeout;
            if let Ok(Ok(reply)) = tokio::time::timeout(timeout, call).await {
                hand_back(&shared, reply.into_inner());
            }
        });
    }
}

/// Releases a grant that nobody will use, in the background.
fn hand_back(shared: &Shared, grant: AcquireResponse) {
    match grant.lease_id.parse::<LeaseId>() {
        Ok(id) => {
            tracing::debug!(
                token = grant.token,
                "an acquire's caller went away before its grant: releasing it"
            );
            shared.release_in_background(id, "a grant nobody read");
        }
        // Nothing a release could name: the server would not know it either.
        Err(error) => {
            tracing::warn!(%error, "a grant nobody read has a malformed lease id: not released")
        }
    }
}
