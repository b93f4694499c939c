//! [`Client`]: a connection to a fenced server or cluster, its builder, and the calls that
//! do not belong to one lease (acquire, describe, watch).

use std::sync::Arc;
use std::time::Duration;

use fenced_proto::v1::session_request::Op;
use fenced_proto::v1::session_response::Result as Reply;
use fenced_proto::v1::{AcquireRequest, AcquireResponse};
use fenced_types::{FencingToken, LeaseId, LockName, Sequencer};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::clock::{BootClock, Clock};
use crate::config::{Config, FramedTls};
use crate::error::Error;
use crate::framed_tls::FramedConnector;
use crate::lease::Lease;
use crate::lease_state_machine::LeaseStateMachine;
use crate::route::{chain, check_urls, endpoint_for, Route, MAX_REDIRECTS};
use crate::session::SessionOutcome;
use crate::shared::Shared;
use crate::shared_lease::SharedLease;
use crate::unary_acquire::unary_acquire;
use crate::{renewer, watchdog};

/// A connection to a fenced server, or to the leader of a fenced cluster (given several
/// endpoints, see [`ClientBuilder::endpoints`]). Cheap to clone; all clones share one renewal stream
/// and one pause watchdog. The background work stops when the last clone and the last
/// [`Lease`] are dropped.
#[derive(Debug, Clone)]
pub struct Client {
    /// The shared owner of the background work.
    handle: Arc<Handle>,
}

/// Owns the background work: dropping the last handle closes the client.
pub(crate) struct Handle {
    /// The state shared with the background work.
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("endpoint", &self.shared.route.current().url)
            .finish_non_exhaustive()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.cancel();
    }
}

/// Builds a [`Client`]: every setting has the default documented on [`Config`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The servers' URLs, in the order they are tried.
    endpoints: Vec<String>,
    /// The settings.
    config: Config,
    /// The clock; [`BootClock`] unless a test injects another.
    clock: Arc<dyn Clock>,
}

impl ClientBuilder {
    /// More endpoints, after those already given: the other members of a cluster. All
    /// endpoints share one scheme (all `http://` or all `https://`).
    ///
    /// [`ClientBuilder::connect`] connects to the first endpoint that answers, in order.
    /// From then on every call follows the cluster's leader: a member that is not the
    /// leader refuses a call without doing anything (`UNAVAILABLE`, `fenced-error:
    /// not-leader`, and `fenced-leader: host:port` when it knows the leader); the client
    /// then switches to the leader's address (with the endpoints' scheme, even if it is not
    /// in this list, since membership changes) and sends the call again, at most 3 times
    /// per call. When no leader is named (an election, or a leader whose term ended
    /// answering "outcome unknown") or a member cannot be reached, the client moves to the
    /// next endpoint and sends the call again after the retry backoff
    /// ([`Config::retry_initial`]), each endpoint once per call, if sending it twice is
    /// harmless. Refusals that are answers (busy, expired, ...) are never sent elsewhere.
    /// [`Error::NoLeader`] says that no leader was reached.
    ///
    /// What is sent again after a failure without an answer (the connection broke after
    /// the call was sent, or the leader's term ended mid-call):
    /// - Reads, releases and renewals, and any call that never left (no connection could
    ///   be made).
    /// - An acquire that creates a lease: it carries a lease id this client chose, and is
    ///   sent again with that same id, so a member that already granted it answers that
    ///   grant (same lease, same token) instead of making a second lease. If that grant
    ///   was handed back meanwhile (the id is taken), the acquire is made once more with a
    ///   fresh id.
    ///   - A try-once acquire as a unary call is sent again as above. One sent over the
    ///     `Session` stream whose stream broke after it was sent (or that a failing server
    ///     answered `UNAVAILABLE`) is sent once more, as a unary call with its id, within
    ///     one request timeout and the same bounds on redirects and moves; its answer is
    ///     the acquire's, and if it gets none either, the session's error is returned.
    ///   - A waiting acquire cut off mid-wait is sent again with its id and what is left of
    ///     its wait (never past the deadline the wait set when it was first sent): it gets
    ///     the grant if the lock was handed to it before the cut, else it takes back its
    ///     place in the queue the new leader restored (a place committed before the cut,
    ///     within the server's waiter grace, 5 s by default; else at the back).
    ///     Dropping its future still takes it out of the queue it waits in (CONTRACT L2).
    ///
    /// Not sent again: an acquire that joins an existing lease (it has no id of its own
    /// to be found by), a waiting acquire whose wait no clock can hold, a try-once acquire
    /// that timed out (its grant, if it comes, is released), and, with a single endpoint
    /// (nowhere else to go), any call that failed without an answer, except the one unary
    /// call after a broken `Session` stream.
    ///
    /// The framed session ([`ClientBuilder::framed_session`]) names one server, so it is
    /// refused with more than one endpoint.
    pub fn endpoints<I>(mut self, more: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.endpoints.extend(more.into_iter().map(Into::into));
        self
    }

    /// Replaces all settings at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The TTL of acquires that name none ([`Config::default_ttl`]).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// The drift bound ([`Config::drift_bound`]).
    pub fn drift_bound(mut self, drift_bound: f64) -> Self {
        self.config.drift_bound = drift_bound;
        self
    }

    /// The safety margin ([`Config::safety_margin`]).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.config.safety_margin = margin;
        self
    }

    /// The pause threshold ([`Config::pause_threshold`]).
    pub fn pause_threshold(mut self, threshold: Duration) -> Self {
        self.config.pause_threshold = threshold;
        self
    }

    /// The watchdog's period ([`Config::watchdog_period`]).
    pub fn watchdog_period(mut self, period: Duration) -> Self {
        self.config.watchdog_period = period;
        self
    }

    /// Connect and request timeouts ([`Config::connect_timeout`],
    /// [`Config::request_timeout`]).
    pub fn timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.request_timeout = request;
        self
    }

    /// HTTP/2 keepalive ([`Config::http2_keepalive_interval`],
    /// [`Config::http2_keepalive_timeout`]).
    pub fn http2_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.http2_keepalive_interval = interval;
        self.config.http2_keepalive_timeout = timeout;
        self
    }

    /// Reconnection backoff ([`Config::retry_initial`], [`Config::retry_max`]).
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_initial = initial;
        self.config.retry_max = max;
        self
    }

    /// The holder name sent with acquires ([`Config::holder`]).
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.config.holder = holder.into();
        self
    }

    /// TLS settings for `https://` endpoints ([`Config::tls`]).
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// The bearer token sent with every call, for a server with authentication on
    /// ([`Config::bearer_token`]).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.config.bearer_token = Some(crate::credentials::BearerToken::new(token));
        self
    }

    /// Whether try-once acquires and releases share one `Session` stream instead of one
    /// unary call each ([`Config::session`], default on). Turn it off to get exactly one
    /// HTTP/2 stream per call, e.g. behind a proxy that mishandles long-lived streams.
    pub fn session(mut self, on: bool) -> Self {
        self.config.session = on;
        self
    }

    /// Sends the session over the server's framed `Session` listener at `addr`
    /// (`host:port`, `fenced --session-listen`) instead of an HTTP/2 stream
    /// ([`Config::framed_session`]). With an `https://` endpoint it is TLS too: give
    /// [`ClientBuilder::framed_tls`].
    pub fn framed_session(mut self, addr: impl Into<String>) -> Self {
        self.config.framed_session = Some(addr.into());
        self
    }

    /// Which server the framed session trusts over TLS ([`Config::framed_tls`]): needed
    /// with an `https://` endpoint and [`ClientBuilder::framed_session`].
    pub fn framed_tls(mut self, tls: FramedTls) -> Self {
        self.config.framed_tls = Some(tls);
        self
    }

    /// How many requests stay in flight on one session stream or framed connection; the
    /// rest wait in the client ([`Config::max_session_in_flight`]). Default: 1024.
    pub fn max_session_in_flight(mut self, max: usize) -> Self {
        self.config.max_session_in_flight = max;
        self
    }

    /// Replaces the clock: for tests. Production code keeps [`BootClock`] (CONTRACT S4).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates the settings, connects to the first endpoint that answers (in order), and
    /// starts the renewal task and the watchdog. Must be called within a tokio runtime.
    ///
    /// With one endpoint, a failure to connect is [`Error::Connect`]; with several,
    /// [`Error::NoLeader`], naming each endpoint and why it failed.
    pub async fn connect(self) -> Result<Client, Error> {
        self.config.validate()?;
        check_urls(&self.endpoints)?;
        if self.endpoints.len() > 1 {
            if let Some(addr) = &self.config.framed_session {
                return Err(Error::Config {
                    field: "framed_session",
                    why: format!(
                        "{addr} is one server's framed listener, but {} endpoints are given: the framed session cannot follow a cluster's leader; use the gRPC session (no framed_session) with several endpoints",
                        self.endpoints.len()
                    ),
                });
            }
        }
        let framed_tls = self.framed_connector()?;
        let configured = self
            .endpoints
            .iter()
            .map(|url| Ok((url.clone(), endpoint_for(url, &self.config)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let (index, channel) = connect_first(&configured).await?;
        let route = Route::new(configured, index, channel, &self.config);
        let shared = Arc::new(Shared::new(
            self.config,
            self.clock,
            Arc::new(route),
            framed_tls,
        ));
        watchdog::spawn(Arc::downgrade(&shared), shared.config.watchdog_period).map_err(|e| {
            Error::Config {
                field: "watchdog_period",
                why: format!("cannot start the watchdog thread: {e}"),
            }
        })?;
        tokio::spawn(renewer::run(shared.clone()));
        Ok(Client {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// The framed session's TLS, which follows the endpoint's: with `https://`, a framed
    /// session must be TLS (its messages carry lease ids, which are bearer secrets), and
    /// with plaintext gRPC a framed TLS setting is a mistake to point out.
    fn framed_connector(&self) -> Result<Option<FramedConnector>, Error> {
        let endpoint = self.endpoints.first().map_or("", String::as_str);
        let tls_endpoint = endpoint.starts_with("https://");
        let config = &self.config;
        match (&config.framed_session, &config.framed_tls) {
            (Some(addr), Some(tls)) if tls_endpoint => FramedConnector::new(tls, addr).map(Some),
            (Some(_), None) if tls_endpoint => Err(Error::Config {
                field: "framed_tls",
                why: format!(
                    "{endpoint} is TLS, so the framed session must be too: give the CA of the server's certificate with framed_tls"
                ),
            }),
            (_, Some(_)) if !tls_endpoint => Err(Error::Config {
                field: "framed_tls",
                why: format!(
                    "{endpoint} is plaintext gRPC: the framed listener serves TLS only when gRPC does"
                ),
            }),
            _ => Ok(None),
        }
    }
}

/// Connects to the first of `configured` that answers; returns which, with its channel.
async fn connect_first(configured: &[(String, Endpoint)]) -> Result<(usize, Channel), Error> {
    let mut failures = Vec::new();
    for (index, (url, endpoint)) in configured.iter().enumerate() {
        match endpoint.connect().await {
            Ok(channel) => {
                if !failures.is_empty() {
                    tracing::info!(%url, unreachable = ?failures, "connected past unreachable endpoints");
                }
                return Ok((index, channel));
            }
            Err(source) if configured.len() == 1 => {
                return Err(Error::Connect {
                    endpoint: url.clone(),
                    source,
                })
            }
            Err(source) => failures.push(format!("{url}: {}", chain(&source))),
        }
    }
    Err(Error::NoLeader {
        tried: configured.iter().map(|(url, _)| url.clone()).collect(),
        why: format!(
            "no endpoint could be connected to ({})",
            failures.join("; ")
        ),
    })
}

/// How to acquire a lock.
#[derive(Debug, Clone, Default)]
pub struct AcquireOptions {
    /// The lease's TTL; `None` uses [`Config::default_ttl`].
    pub ttl: Option<Duration>,
    /// Zero: try once. Otherwise wait in the lock's FIFO queue for up to this long.
    pub wait: Duration,
    /// After the lease *expires* (not when released), keep the lock from others this long,
    /// so that the old holder's writes in flight can drain.
    pub lock_delay: Duration,
}

impl AcquireOptions {
    /// Try once.
    pub fn try_once() -> Self {
        AcquireOptions::default()
    }

    /// Wait in the queue for up to `wait`.
    pub fn wait(wait: Duration) -> Self {
        AcquireOptions {
            wait,
            ..AcquireOptions::default()
        }
    }

    /// With this TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// With this lock-delay.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }
}

/// What anyone may know of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock.
    pub lock: LockName,
    /// The live holder, if any.
    pub holder: Option<Holder>,
    /// How many acquirers wait.
    pub waiters: u32,
}

/// The live holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's free-form name.
    pub name: String,
    /// The holder's token.
    pub token: FencingToken,
    /// Time until its lease expires unless renewed, as the server saw it.
    pub remaining: Duration,
}

/// One change of a watched lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEvent {
    /// What happened.
    pub kind: LockEventKind,
    /// The lock.
    pub lock: String,
    /// The holder that acquired, released or lost it.
    pub holder: String,
    /// The token of that holding.
    pub token: FencingToken,
    /// The event's place in the order of all events (the cluster's, in a cluster): a
    /// watch resumes after it ([`Client::watch_from`]).
    pub revision: u64,
}

/// What happened to a watched lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockEventKind {
    /// A lease was granted the lock.
    Acquired,
    /// The holder released it.
    Released,
    /// The holder's lease expired.
    Expired,
}

pub use crate::lock_watch::LockWatch;

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or `https://...`); add
    /// the other members of a cluster with [`ClientBuilder::endpoints`].
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        Client::builder_for_cluster([endpoint])
    }

    /// Starts building a client for the members of a cluster, tried in this order (see
    /// [`ClientBuilder::endpoints`]); at least one, all with one scheme.
    pub fn builder_for_cluster<I>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            config: Config::default(),
            clock: Arc::new(BootClock),
        }
    }

    /// The URL of the member the client talks to now: the leader, as far as the client
    /// knows. For diagnostics.
    pub fn current_endpoint(&self) -> String {
        self.handle.shared.route.current().url.clone()
    }

    /// Connects with the default settings.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        Client::builder(endpoint).connect().await
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.handle.shared.config
    }

    /// Whether try-once acquires and releases go over the `Session` stream: it is on
    /// ([`Config::session`]) and the server has not answered that it has none. For
    /// diagnostics; the stream itself is opened on first use.
    pub fn uses_session(&self) -> bool {
        self.handle.shared.session.active()
    }

    /// The state shared with the background work.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Tries once to take a lock, with the default TTL.
    pub async fn try_acquire(&self, lock: &str) -> Result<Lease, Error> {
        self.acquire(lock, AcquireOptions::try_once()).await
    }

    /// Takes a lock. With a non-zero [`AcquireOptions::wait`], queues (FIFO) for up to that
    /// long; dropping the returned future cancels the wait and leaves the queue (CONTRACT
    /// L2).
    ///
    /// A try-once acquire travels over the client's `Session` stream ([`Config::session`]),
    /// else as a unary call. If its future is dropped or times out and the grant comes
    /// anyway, whenever it comes, the SDK releases that grant at once in the background. A
    /// waiting acquire is always a unary call (see the comment in the body: CONTRACT L2);
    /// if its future is dropped, a grant that has already reached the client is released
    /// at once, but one still on the wire when the cancellation reaches the server is seen
    /// by nobody and keeps the lock until its TTL runs out.
    ///
    /// An acquire that creates a lease carries a lease id chosen here; after a failure
    /// that leaves its outcome unknown (a broken connection or session stream, a leader
    /// whose term ended), it is sent again with that id, so it finds its own grant instead
    /// of a second lease; a waiting one with what is left of its wait, taking back its
    /// place in the queue.
    /// [`ClientBuilder::endpoints`] says exactly what is sent again and what is not.
    ///
    /// The lease's local deadline counts from when this request was *sent* (CONTRACT S4).
    /// If the grant came so late that a renewal is already due, the lease starts
    /// [`Suspect`](crate::LeaseState::Suspect) and is confirmed by a renewal at once.
    pub async fn acquire(&self, lock: &str, options: AcquireOptions) -> Result<Lease, Error> {
        let shared = &self.handle.shared;
        let name = LockName::new(lock)?;
        let ttl = options.ttl.unwrap_or(shared.config.default_ttl);
        if shared.policy.usable(ttl).is_none() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "ttl {} ms leaves no time once the drift bound and the {} ms safety margin are taken off",
                    ttl.as_millis(),
                    shared.config.safety_margin.as_millis()
                ),
            });
        }
        let request = AcquireRequest {
            lock: name.to_string(),
            holder: shared.config.holder.clone(),
            ttl_ms: millis(ttl),
            wait_ms: millis(options.wait),
            lock_delay_ms: millis(options.lock_delay),
            lease_id: String::new(),
            // Chosen here, so that the same request sent again (to a new leader after a
            // failover, say) finds the grant the first one made instead of a second lease.
            new_lease_id: LeaseId::random().to_string(),
        };
        // Only a try-once acquire goes over the session. A waiting one stays on the unary
        // call: dropping this future must take the waiter out of the server's FIFO queue
        // (CONTRACT L2), and the reset of a unary call's HTTP/2 stream does exactly that,
        // while a Session has no message that cancels one request.
        let mut refusals = 0;
        let routed = loop {
            if !(options.wait.is_zero() && shared.session.active()) {
                break SessionOutcome::Unary;
            }
            match shared
                .session
                .call(Op::Acquire(request.clone()), "acquire")
                .await
            {
                // Refused by a member that is not the leader: nothing was granted, send it
                // again where the route now points.
                SessionOutcome::NotLeader(_) if refusals < MAX_REDIRECTS => refusals += 1,
                SessionOutcome::NotLeader(error) => break SessionOutcome::Failed(error),
                other => break other,
            }
        };
        let (sent, reply) = match routed {
            SessionOutcome::Answered {
                sent,
                reply: Reply::Acquired(reply),
            } => (sent, reply),
            SessionOutcome::Answered { .. } => {
                return Err(Error::Protocol {
                    what: "session answered an acquire with something else".into(),
                })
            }
            SessionOutcome::Failed(error) | SessionOutcome::NotLeader(error) => {
                return Err(error.for_lock(&name))
            }
            SessionOutcome::Unknown(error) => fall_back_to_unary(shared, request, error)
                .await
                .map_err(|error| error.for_lock(&name))?,
            SessionOutcome::Unary => unary_acquire(shared, request, options.wait)
                .await
                .map_err(|error| error.for_lock(&name))?,
        };
        let now = shared.now();
        // A pause while waiting for the answer applies to the leases held before it; the
        // new one counts from its send, which covers the pause.
        shared.heartbeat(now);
        let id: LeaseId = reply.lease_id.parse().map_err(|e| Error::Protocol {
            what: format!("acquire answered with lease id: {e}"),
        })?;
        // A grant this SDK cannot use is still a grant: hand it back before saying why.
        let malformed = |what: String| {
            shared.release_in_background(id, "its grant was malformed");
            Error::Protocol { what }
        };
        let token = FencingToken::new(reply.token)
            .map_err(|e| malformed(format!("acquire answered with token: {e}")))?;
        if reply.ttl_ms == 0 {
            return Err(malformed("acquire answered with ttl_ms 0".into()));
        }
        let granted_ttl = Duration::from_millis(reply.ttl_ms);
        let sequencer = grant_sequencer(&reply.sequencer, &name, token).map_err(malformed)?;
        let machine = LeaseStateMachine::granted(sent, granted_ttl, now, shared.policy);
        let shared_lease =
            Arc::new(SharedLease::new(id, name, token, machine).with_sequencer(sequencer));
        tracing::debug!(lock = %shared_lease.lock, lease = %id.short(), %token, "lock acquired");
        shared.register(shared_lease.clone());
        Ok(Lease::new(shared_lease, self.handle.clone()))
    }
}

/// Sends a try-once acquire whose `Session` attempt has an unknown outcome (`unknown`: the
/// stream broke after it was sent, or a failing server answered) once more, as a unary
/// call with the same `new_lease_id`: it finds the grant the first attempt made, if any,
/// or acquires (or is refused) as any acquire. That call follows the leader within the
/// usual bounds and within one request timeout in all. Its answer, a grant or a refusal,
/// is the acquire's; if it gets no answer either, the session's failure is.
async fn fall_back_to_unary(
    shared: &Arc<Shared>,
    request: AcquireRequest,
    unknown: Error,
) -> Result<(Duration, AcquireResponse), Error> {
    let limit = shared.config.request_timeout;
    let fallback =
        match tokio::time::timeout(limit, unary_acquire(shared, request, Duration::ZERO)).await {
            Ok(fallback) => fallback,
            Err(_) => Err(Error::Timeout {
                what: "acquire",
                after: limit,
            }),
        };
    match fallback {
        Err(error) if error.is_transient() => {
            tracing::debug!(%error, session = %unknown, "an acquire sent again after its session failed got no answer either");
            Err(unknown)
        }
        answer => answer,
    }
}

/// The grant's sequencer, if the server sent one: it must be of the lock and token granted.
/// Only its format is checked; its signature is the gate's to verify.
fn grant_sequencer(
    bytes: &[u8],
    lock: &LockName,
    token: FencingToken,
) -> Result<Option<Sequencer>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let sequencer = Sequencer::decode(bytes)
        .map_err(|e| format!("acquire answered with a sequencer that does not decode: {e}"))?;
    if sequencer.lock() != lock || sequencer.token() != token {
        return Err(format!(
            "acquire of lock {lock} with token {token} answered with a sequencer of lock {} \
             and token {}",
            sequencer.lock(),
            sequencer.token()
        ));
    }
    Ok(Some(sequencer))
}

/// A duration in whole milliseconds for the wire, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
