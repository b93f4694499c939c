//! The renewal task: one `KeepAlive` stream per client, shared by all its leases.
//!
//! One loop owns the stream. Each turn it beats the pause watchdog's pulse, lets time act
//! on every lease (deadline passed, surely expired), sends the renewals that are due (at
//! about a third of the TTL, or at once after a pause or a late grant), and then waits for
//! the first of: an answer on the stream, the next instant a lease needs attention, a
//! wake-up (new lease, pause), or the client closing.
//!
//! Failures are never silent: a stream that fails, closes, or leaves a renewal unanswered
//! for a renewal interval is dropped, every lease records the failure (see
//! [`Lease::status`](crate::Lease::status)), a `warn` is logged, and a fresh connection is
//! opened after a backoff (doubling from [`Config::retry_initial`] to
//! [`Config::retry_max`], but at most an eighth of the shortest live lease's TTL, so that a
//! lease is renewed on a restarted server, or on a cluster's new leader, before it runs out
//! there). Retrying goes on until the leases are lost: the local deadline makes them
//! suspect, and [`DeadlinePolicy::surely_expired`] gives them up.
//!
//! The stream follows a cluster's leader ([`Route`](crate::route::Route)): a member that
//! refuses to open it as not the leader names the leader, and the stream is opened there
//! at once (at most 3 redirects per opening); a stream that fails, closes, stalls, or ends
//! with a not-leader refusal moves the client to the leader named, or else to the next
//! endpoint, before the retry. A renewal's local deadline still counts from when it was
//! sent, whichever member confirms it (CONTRACT S4).
//!
//! [`Config::retry_initial`]: crate::Config::retry_initial
//! [`Config::retry_max`]: crate::Config::retry_max
//! [`DeadlinePolicy::surely_expired`]: crate::DeadlinePolicy::surely_expired

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::renew_response::Outcome;
use fenced_proto::v1::{RenewRequest, RenewResponse};
use fenced_types::LeaseId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::route::{chain, Failure, MAX_REDIRECTS};
use crate::shared::Shared;
use crate::state::{LeaseState, LostReason};

/// The longest the loop sleeps without looking at its leases.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The shortest time between two scans of all leases.
const MIN_SCAN: Duration = Duration::from_millis(20);

/// How many renewals may wait in the stream's send buffer.
const SEND_BUFFER: usize = 4096;

/// An open renewal stream.
struct Stream {
    /// Renewal requests go here.
    requests: mpsc::Sender<RenewRequest>,
    /// Their answers come from here.
    answers: Streaming<RenewResponse>,
    /// The generation of the route it was opened on, so that its failure moves the route
    /// only if nothing else moved it since.
    generation: u64,
}

/// A stream being opened.
type Opening = Pin<Box<dyn Future<Output = Result<Stream, String>> + Send>>;

/// What woke the loop.
enum Event {
    /// The client closed.
    Closed,
    /// Time to look at the leases again.
    Tick,
    /// The stream opened, or failed to.
    Opened(Result<Stream, String>),
    /// An answer, the end of the stream, or its failure.
    Answer(Result<Option<RenewResponse>, tonic::Status>),
}

/// Runs the renewal loop until the client closes.
///
/// A *scan* looks at every lease (time passing, renewals due, stuck answers); it runs when
/// the earliest lease needs attention, on a wake-up, or after a stream event, but at most
/// once per [`MIN_SCAN`], so that a client with many leases does not rescan them all for
/// every answer. Answers in between are applied one by one without a scan.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut stream: Option<Stream> = None;
    let mut opening: Option<Opening> = None;
    let mut backoff = shared.config.retry_initial;
    let mut retry_at = Duration::ZERO;
    let mut scan_at = Duration::ZERO;
    // Scans are spaced on tokio's clock: the rate limit is about CPU, not about leases.
    let mut last_scan: Option<Instant> = None;
    loop {
        let now = shared.now();
        let rested = last_scan.is_none_or(|at| at.elapsed() >= MIN_SCAN);
        if now >= scan_at && rested {
            last_scan = Some(Instant::now());
            scan_at = scan(
                &shared,
                &mut stream,
                &mut opening,
                &mut backoff,
                &mut retry_at,
                now,
            );
        }
        let rest = last_scan.map_or(Duration::ZERO, |at| MIN_SCAN.saturating_sub(at.elapsed()));
        let sleep = scan_at
            .saturating_sub(now)
            .max(rest)
            .clamp(Duration::from_millis(1), MAX_SLEEP);

        let event = tokio::select! {
            _ = shared.closed.cancelled() => Event::Closed,
            _ = shared.wake.notified() => Event::Tick,
            _ = tokio::time::sleep(sleep) => Event::Tick,
            result = async {
                match opening.as_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                }
            } => Event::Opened(result),
            answer = async {
                match stream.as_mut() {
                    Some(open) => open.answers.message().await,
                    None => std::future::pending().await,
                }
            } => Event::Answer(answer),
        };

        match event {
            Event::Closed => break,
            Event::Tick => scan_at = Duration::ZERO,
            Event::Opened(Ok(open)) => {
                tracing::debug!("renewal stream open");
                opening = None;
                stream = Some(open);
                backoff = shared.config.retry_initial;
                scan_at = Duration::ZERO;
            }
            Event::Opened(Err(why)) => {
                opening = None;
                retry_at = fail_all(&shared, &why, &mut backoff);
                scan_at = scan_at.min(retry_at);
            }
            Event::Answer(Ok(Some(answer))) => {
                if let Some(next) = apply(&shared, answer) {
                    scan_at = scan_at.min(next);
                }
            }
            Event::Answer(Ok(None)) => {
                if let Some(closed) = stream.take() {
                    shared.route.advance(closed.generation);
                }
                retry_at = fail_all(
                    &shared,
                    "the server closed the renewal stream",
                    &mut backoff,
                );
                scan_at = scan_at.min(retry_at);
            }
            Event::Answer(Err(status)) => {
                if let Some(failed) = stream.take() {
                    shared.route.follow(failed.generation, &status);
                }
                let why = format!("renewal stream failed: {status}");
                retry_at = fail_all(&shared, &why, &mut backoff);
                scan_at = scan_at.min(retry_at);
            }
        }
    }
    tracing::debug!("renewal task ends: client closed");
}

/// Looks at every lease: beats the pulse, lets time act, gives up lost leases, opens a
/// stream if one is needed, sends the renewals that are due. Returns when the next scan is
/// needed.
fn scan(
    shared: &Arc<Shared>,
    stream: &mut Option<Stream>,
    opening: &mut Option<Opening>,
    backoff: &mut Duration,
    retry_at: &mut Duration,
    now: Duration,
) -> Duration {
    shared.heartbeat(now);
    let leases = shared.snapshot();
    for lease in &leases {
        lease.update(|machine| machine.check(now));
    }
    give_up_lost(shared, &leases);

    // Open a stream when there is something to renew and none is open or opening.
    let live = leases.iter().any(|l| !l.read(|b| b.state().is_lost()));
    if stream.is_none() && opening.is_none() && live && now >= *retry_at {
        *opening = Some(Box::pin(open(shared.clone())));
    }

    if let Some(open) = stream.as_ref() {
        if let Err(why) = send_due(shared, open, &leases, now) {
            // Stalled or gone: the next stream goes to the next member.
            shared.route.advance(open.generation);
            *stream = None;
            *retry_at = fail_all(shared, &why, backoff);
        }
    }

    // The next lease that needs attention (or the retry, if not connected).
    let mut next = leases
        .iter()
        .filter_map(|l| l.read(|b| b.next_event()))
        .min()
        .unwrap_or(now.saturating_add(MAX_SLEEP));
    if stream.is_none() && opening.is_none() && live {
        next = next.min(*retry_at);
    }
    next
}

/// Opens a renewal stream on a fresh connection to the route's member, within the request
/// timeout, following up to [`MAX_REDIRECTS`] not-leader refusals that name the leader. A
/// failure moves the route (to the next endpoint) before it is reported.
async fn open(shared: Arc<Shared>) -> Result<Stream, String> {
    let timeout = shared.config.request_timeout;
    let route = &shared.route;
    let attempt = async {
        let mut redirects = 0;
        loop {
            let current = route.current();
            let channel = match current.endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    route.advance(current.generation);
                    return Err(format!("cannot connect to {}: {}", current.url, chain(&e)));
                }
            };
            let (requests, receiver) = mpsc::channel(SEND_BUFFER);
            let status = match LockServiceClient::new(route.credentials().on(channel))
                .keep_alive(ReceiverStream::new(receiver))
                .await
            {
                Ok(answers) => {
                    return Ok(Stream {
                        requests,
                        answers: answers.into_inner(),
                        generation: current.generation,
                    })
                }
                Err(status) => status,
            };
            let followed = route.follow(current.generation, &status);
            if matches!(followed, Failure::NotLeader(Some(_))) && redirects < MAX_REDIRECTS {
                redirects += 1;
                continue;
            }
            return Err(format!(
                "cannot open the renewal stream on {}: {status}",
                current.url
            ));
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => {
            // Stuck on this member: the next try goes to the next one.
            let current = route.current();
            route.advance(current.generation);
            Err(format!(
                "opening the renewal stream on {} timed out after {} ms",
                current.url,
                timeout.as_millis()
            ))
        }
    }
}

/// Sends every renewal that is due. The send time is taken *before* the request is handed
/// to the stream, so it is never later than the real send (CONTRACT S4). Fails if the
/// stream is gone or an earlier renewal went unanswered for too long.
fn send_due(
    shared: &Shared,
    stream: &Stream,
    leases: &[Arc<crate::shared_lease::SharedLease>],
    now: Duration,
) -> Result<(), String> {
    for lease in leases {
        if lease.read(|b| b.stuck(now)) {
            return Err(format!(
                "renewal of lease {} unanswered for a renewal interval",
                lease.id.short()
            ));
        }
        if stream.requests.capacity() == 0 {
            // The buffer is full: the rest go out on a later turn.
            break;
        }
        let due = lease.update(|machine| {
            let due = machine.renewal_due(now);
            if due {
                machine.on_sent(shared.now());
            }
            due
        });
        if due {
            let request = RenewRequest {
                lease_id: lease.id.to_string(),
            };
            if stream.requests.try_send(request).is_err() {
                return Err("the renewal stream is closed".to_string());
            }
        }
    }
    Ok(())
}

/// Records a stream failure on every lease, logs it, and returns when to retry.
fn fail_all(shared: &Shared, why: &str, backoff: &mut Duration) -> Duration {
    let now = shared.now();
    let leases = shared.snapshot();
    let shortest_ttl = leases
        .iter()
        .filter_map(|l| l.read(|b| (!b.state().is_lost()).then(|| b.ttl())))
        .min();
    let delay = retry_delay(*backoff, shortest_ttl);
    let retry_at = now.saturating_add(delay);
    tracing::warn!(
        leases = leases.len(),
        retry_in_ms = delay.as_millis() as u64,
        "{why}"
    );
    for lease in &leases {
        lease.update(|machine| machine.on_failure(why, now, retry_at));
    }
    *backoff = backoff.saturating_mul(2).min(shared.config.retry_max);
    retry_at
}

/// Tries per TTL of the shortest live lease, at least, while the connection is down.
const RETRIES_PER_TTL: u32 = 8;

/// The shortest wait between two tries, however short the leases.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(10);

/// How long to wait before the next try: the backoff, but never more than an eighth of the
/// shortest live lease's TTL. A restarted server gives every lease its full TTL from the
/// restart (CONTRACT L3), and a backoff that has grown to `retry_max` during the outage
/// would otherwise let a short lease expire there unrenewed. The tries this adds are
/// bounded: a lease the connection cannot reach is given up after about a TTL.
fn retry_delay(backoff: Duration, shortest_live_ttl: Option<Duration>) -> Duration {
    match shortest_live_ttl {
        Some(ttl) => backoff.min((ttl / RETRIES_PER_TTL).max(MIN_RETRY_DELAY)),
        None => backoff,
    }
}

/// Applies one answer of the stream to its lease; returns when that lease next needs a
/// scan.
fn apply(shared: &Shared, answer: RenewResponse) -> Option<Duration> {
    let now = shared.now();
    // An answer that sat in a buffer while the process was stopped must not clear the
    // doubt the pause casts: beat the pulse before applying it.
    shared.heartbeat(now);
    let Ok(id) = answer.lease_id.parse::<LeaseId>() else {
        tracing::error!(
            lease_id = %answer.lease_id,
            "protocol violation: renewal answer for a malformed lease id"
        );
        return None;
    };
    let Some(lease) = shared.get(&id) else {
        // Released or given up while the renewal was in flight.
        return None;
    };
    let message = answer.message;
    match Outcome::try_from(answer.outcome) {
        Ok(Outcome::Renewed) if answer.ttl_ms > 0 => {
            let ttl = Duration::from_millis(answer.ttl_ms);
            lease.update(|machine| machine.on_renewed(ttl, now));
        }
        Ok(Outcome::Expired) => lose(&lease, LostReason::Expired { message }, now),
        Ok(Outcome::Released) => lose(&lease, LostReason::Released { message }, now),
        Ok(Outcome::Unknown) => lose(&lease, LostReason::Unknown { message }, now),
        Ok(Outcome::Invalid) => lose(&lease, LostReason::Invalid { message }, now),
        other => {
            let why = format!(
                "protocol violation: renewal answer {other:?} with ttl_ms {}",
                answer.ttl_ms
            );
            tracing::error!(lease = %id.short(), "{why}");
            lease.update(|machine| machine.on_failure(&why, now, now));
        }
    }
    lease.read(|machine| machine.next_event())
}

/// Marks a lease lost on the server's word.
fn lose(lease: &crate::shared_lease::SharedLease, reason: LostReason, now: Duration) {
    tracing::warn!(lease = %lease.id.short(), lock = %lease.lock, %reason, "lease lost");
    lease.update(|machine| machine.on_refused(reason, now));
}

/// Stops renewing lost leases. One the SDK gave up on by itself may still be alive on the
/// server (a renewal could have got through unseen), so it is released, best effort.
fn give_up_lost(shared: &Shared, leases: &[Arc<crate::shared_lease::SharedLease>]) {
    for lease in leases {
        let state = lease.read(|b| b.state().clone());
        if let LeaseState::Lost { reason } = state {
            shared.forget(&lease.id);
            if matches!(reason, LostReason::ExpiredLocally { .. }) {
                tracing::warn!(lease = %lease.id.short(), lock = %lease.lock, %reason, "lease given up");
                shared.release_in_background(lease.id, "given up locally");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fenced_types::{FencingToken, LeaseId, LockName};
    use tonic::transport::Endpoint;

    use super::*;
    use crate::clock::ManualClock;
    use crate::lease_state_machine::LeaseStateMachine;
    use crate::route::Route;
    use crate::shared_lease::SharedLease;
    use crate::Config;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A client's shared state with no server behind it (the channel never connects), on a
    /// manual clock, holding one lease of `ttl` granted now.
    fn shared_holding(ttl: Duration) -> Result<Shared, Box<dyn std::error::Error>> {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(100)));
        let url = "http://127.0.0.1:9".to_string();
        let endpoint = Endpoint::from_shared(url.clone())?;
        let channel = endpoint.connect_lazy();
        let route = Route::new(vec![(url, endpoint)], 0, channel, &Config::default());
        let shared = Shared::new(Config::default(), clock, Arc::new(route), None);
        let now = shared.now();
        let machine = LeaseStateMachine::granted(now, ttl, now, shared.policy);
        shared.register(Arc::new(SharedLease::new(
            LeaseId::random(),
            LockName::new("retry-pace")?,
            FencingToken::new(1)?,
            machine,
        )));
        Ok(shared)
    }

    // checks: L3 (a holder whose connection broke retries often enough, for the shortest
    // lease it holds, to reach a restarted server before the lease runs out; a backoff grown
    // to `retry_max` during a longer outage must not skip that window)
    #[tokio::test]
    async fn retries_come_at_least_eight_times_per_ttl_of_the_shortest_live_lease(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let shared = shared_holding(ms(400))?;
        let mut backoff = shared.config.retry_max;
        assert_eq!(backoff, ms(1_000), "the default this test starts from");
        let now = shared.now();
        let retry_at = fail_all(&shared, "test: connection broke", &mut backoff);
        let delay = retry_at.saturating_sub(now);
        assert!(
            delay <= ms(50),
            "retry in {delay:?} with a 400 ms lease held: past an eighth of its TTL"
        );
        Ok(())
    }

    // checks: none (the backoff still grows when no short lease needs it, so an outage
    // does not become a connection storm)
    #[tokio::test]
    async fn with_long_leases_the_backoff_doubles_up_to_retry_max(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let shared = shared_holding(Duration::from_secs(60))?;
        let mut backoff = shared.config.retry_initial;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let now = shared.now();
            delays.push(fail_all(&shared, "test: connection broke", &mut backoff) - now);
        }
        assert_eq!(delays[0], shared.config.retry_initial);
        assert_eq!(delays[1], shared.config.retry_initial * 2);
        assert_eq!(delays[7], shared.config.retry_max);
        Ok(())
    }
}
