//! The unary `Acquire` call, how it is sent again with its lease id after a failure that
//! leaves its outcome unknown ([`unary_acquire`]), and what becomes of its grant when the
//! caller goes away.
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

use fenced_proto::v1::lock_service_client::LockServiceClient;

use crate::credentials::Authed;
use fenced_proto::v1::AcquireRequest;
use fenced_proto::v1::AcquireResponse;
use fenced_types::LeaseId;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;
use tonic::{Response, Status};

use crate::config::Config;
use crate::error::Error;
use crate::route::{Next, Resend};
use crate::shared::Shared;

/// The unary `Acquire` call, bounded by the wait plus the request timeout. Returns the send
/// instant (read before the call, CONTRACT S4) with the answer. Dropping its future hands
/// a grant back as the module documentation says.
///
/// It follows the leader ([`Route`](crate::route::Route)): a not-leader refusal changed
/// nothing, so the acquire is sent again where it points, with a send instant of its own.
/// An acquire that creates a lease with the id this client chose (`new_lease_id`) is sent
/// again after a failure without an answer too (a leader that died mid-call, a connection
/// that broke): if the first attempt was granted, the retry gets that grant back; if that
/// grant was handed back meanwhile (its id is taken now), it acquires once more with a
/// fresh id. A waiting one is sent again with what is left of its wait
/// ([`send_waiting`]). An acquire that joins a lease (no `new_lease_id`) is sent again
/// only if it never left (no connection could be made): a second one could not tell
/// its own grant from another.
pub(crate) async fn unary_acquire(
    shared: &Arc<Shared>,
    mut request: AcquireRequest,
    wait: Duration,
) -> Result<(Duration, AcquireResponse), Error> {
    if request.new_lease_id.is_empty() {
        return send_acquire(shared, request, wait, Resend::IfUnsent).await;
    }
    if !wait.is_zero() {
        // Past any timer's reach ("as long as it takes"): sent as it is, and not again
        // (the server refuses such a wait).
        let Some(deadline) = Instant::now().checked_add(wait) else {
            return send_acquire(shared, request, wait, Resend::IfUnsent).await;
        };
        return match send_waiting(shared, request.clone(), deadline).await {
            Err(error @ Error::LeaseIdTaken { .. }) => {
                // With a fresh id and what is left of the wait, if anything is.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis();
                request.wait_ms = u64::try_from(left).unwrap_or(u64::MAX);
                if request.wait_ms == 0 {
                    return Err(error);
                }
                request.new_lease_id = LeaseId::random().to_string();
                send_waiting(shared, request, deadline).await
            }
            answer => answer,
        };
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
    let limit = limit_of(shared, wait);
    shared
        .route
        .call("acquire", limit, resend, |rpc| {
            attempt(shared, rpc, request.clone(), wait, limit)
        })
        .await
}

/// How many rounds of the endpoints a waiting acquire cut off mid-wait makes to find a
/// leader (each with [`MAX_REDIRECTS`](crate::route::MAX_REDIRECTS) redirects and one move
/// per endpoint, [`Config::retry_max`] apart), while its wait lasts.
const WAITING_ROUNDS: usize = 3;

/// A waiting acquire that creates a lease, queued until `deadline` (its wait from when the
/// caller asked), following the leader. Cut off mid-wait (a not-leader refusal, "outcome
/// unknown" from a leader whose term ended, a connection that broke after it was sent), it
/// is sent again with the same lease id and what is left of the wait, to the leader it is
/// pointed to or the next endpoint: the new leader answers the grant the old one made if
/// the handoff happened, or puts it back in its place in the queue it restored (or at the
/// back, if that place was not committed or its grace ended). The attempts are those of any call (at most
/// [`MAX_REDIRECTS`](crate::route::MAX_REDIRECTS) redirects and one move per endpoint),
/// in up to [`WAITING_ROUNDS`] rounds when a round reaches no leader; none is sent once
/// the deadline has passed, and none waits past it: the server's wait of each is what is
/// left.
async fn send_waiting(
    shared: &Arc<Shared>,
    mut request: AcquireRequest,
    deadline: Instant,
) -> Result<(Duration, AcquireResponse), Error> {
    let mut attempts = shared.route.attempts(Resend::Always);
    let mut rounds = 1;
    // The first attempt carries the wait it was given as it is.
    let mut wait = Duration::from_millis(request.wait_ms);
    loop {
        let limit = limit_of(shared, wait);
        let current = shared.route.current();
        let sent = attempt(shared, current.rpc(), request.clone(), wait, limit);
        let status = match tokio::time::timeout(limit, sent).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(status)) => status,
            Err(_) => {
                return Err(Error::Timeout {
                    what: "acquire",
                    after: limit,
                })
            }
        };
        let failure = Error::from(status.clone());
        if let Next::Stop(error) = attempts.after(&current, status).await {
            // A round of the endpoints found no leader: an election after the leader died
            // outlasts one round's backoff. Another round after the longest backoff, while
            // the wait lasts, a fixed number of times.
            let left = deadline.saturating_duration_since(Instant::now());
            let pause = shared.config.retry_max;
            let no_leader = matches!(error, Error::NoLeader { .. });
            if !no_leader || rounds >= WAITING_ROUNDS || left <= pause {
                return Err(error);
            }
            rounds += 1;
            tokio::time::sleep(pause).await;
            attempts = shared.route.attempts(Resend::Always);
        }
        // What is left, in whole milliseconds as the wire carries it; none left means the
        // wait is over, and what cut the last attempt off is the answer.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        request.wait_ms = u64::try_from(left).unwrap_or(u64::MAX);
        if request.wait_ms == 0 {
            return Err(failure);
        }
        wait = Duration::from_millis(request.wait_ms);
    }
}

/// How long one attempt of an acquire that waits `wait` may take: the wait plus the request
/// timeout, saturating, and no longer than any timer can hold (a caller may well write
/// `Duration::MAX` for "as long as it takes"; the server then refuses the wait).
fn limit_of(shared: &Shared, wait: Duration) -> Duration {
    wait.saturating_add(shared.config.request_timeout)
        .min(Config::LONGEST)
}

/// One attempt of a unary `Acquire` on `rpc`: the send instant (read before the call is
/// handed to the channel, CONTRACT S4) with the answer.
fn attempt(
    shared: &Arc<Shared>,
    mut rpc: LockServiceClient<Authed>,
    request: AcquireRequest,
    wait: Duration,
    limit: Duration,
) -> impl Future<Output = Result<(Duration, AcquireResponse), Status>> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(limit);
    let sent = shared.now();
    let call = InFlight {
        call: Some(Box::pin(async move { rpc.acquire(request).await })),
        waiting: !wait.is_zero(),
        shared: shared.clone(),
    };
    async move { call.await.map(|reply| (sent, reply)) }
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
