//! [`Route`]: which member of a cluster the client talks to, and how a call follows the
//! leader there.
//!
//! A client is given one endpoint or several (the members of a cluster, one scheme for
//! all). It talks to one at a time, the *current* one, over one shared channel; the renewal
//! task opens its streams on fresh connections to the same address. When a call fails:
//! - **Not the leader, leader named**: `UNAVAILABLE` with `fenced-error: not-leader` and
//!   `fenced-leader: host:port`. The member changed nothing, so the route switches to the
//!   leader's address (the endpoints' scheme; even an address not in the list, since
//!   membership changes) and the call is sent again at once, at most [`MAX_REDIRECTS`]
//!   times per call, so that two confused members cannot bounce a call forever.
//! - **Not the leader, no leader known** (an election), or **no answer** (the connection
//!   failed, broke, or the server was unavailable): the route moves to the next configured
//!   endpoint, and the call is sent again after the backoff ([`Config::retry_initial`],
//!   doubling to [`Config::retry_max`]) when sending it twice is harmless ([`Resend`]),
//!   trying each endpoint once per call.
//! - **Any other answer** (busy, expired, ...) is the answer: never sent elsewhere.
//!
//! Calls that fail together move the route one step, not one step each: a move names the
//! generation of the route the failed call used, and is skipped if the route moved since.
//! A client with one endpoint that was never redirected keeps its channel through failures,
//! as tonic reconnects it by itself.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use fenced_proto::metadata::{ERROR_CODE, LEADER, NOT_LEADER_CODE};
use fenced_proto::v1::lock_service_client::LockServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::config::Config;
use crate::credentials::{Authed, Credentials};
use crate::error::Error;

/// How many times one call follows a not-leader refusal that names a leader.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// The member a client talks to, and the members it may move to.
pub(crate) struct Route {
    /// The configured endpoints, in order, each with its URL.
    configured: Vec<(String, Endpoint)>,
    /// `https` or `http`: the scheme of every configured endpoint, given to a leader's
    /// address.
    scheme: &'static str,
    /// The settings a leader's endpoint is built with.
    config: Config,
    /// What every call carries (the bearer token, if any).
    credentials: Credentials,
    /// The member talked to now. A `std` lock, held only to clone or replace the `Arc`
    /// (each call reads it: one reference count, no allocation).
    current: RwLock<Arc<Current>>,
}

/// The member a client talks to now.
pub(crate) struct Current {
    /// Counts the moves of the route, so that a stale failure moves nothing.
    pub(crate) generation: u64,
    /// Its URL.
    pub(crate) url: String,
    /// Its endpoint, from which the renewal task opens fresh connections.
    pub(crate) endpoint: Endpoint,
    /// The shared channel to it, with the client's credentials on every call.
    pub(crate) channel: Authed,
    /// The configured endpoint this is, or the one the route was on when it was
    /// redirected here: the next move goes to the one after it.
    index: usize,
    /// Whether a redirect brought the route here (the address may be in no list).
    redirected: bool,
}

impl Current {
    /// A lock service client on the shared channel.
    pub(crate) fn rpc(&self) -> LockServiceClient<Authed> {
        LockServiceClient::new(self.channel.clone())
    }
}

/// What a failed call says about where to send it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A member that is not the leader refused; it changed nothing. The leader's address
    /// (`host:port`), if the member knows it.
    NotLeader(Option<String>),
    /// No answer from a server: the connection failed or broke, or the server was
    /// unavailable. `unsent` when no connection could be made, so the request never left.
    NoAnswer {
        /// Whether the request surely never reached a server.
        unsent: bool,
    },
    /// A definite answer: it stays the call's answer.
    Answered,
}

impl Failure {
    /// What `status` says.
    pub(crate) fn of(status: &Status) -> Failure {
        if is_not_leader(status) {
            let leader = status
                .metadata()
                .get(LEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|addr| !addr.is_empty())
                .map(str::to_string);
            return Failure::NotLeader(leader);
        }
        match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Unknown => Failure::NoAnswer {
                unsent: never_connected(status),
            },
            _ => Failure::Answered,
        }
    }
}

/// Whether `status` is a not-leader refusal.
pub(crate) fn is_not_leader(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status
            .metadata()
            .get(ERROR_CODE)
            .is_some_and(|code| code.as_bytes() == NOT_LEADER_CODE.as_bytes())
}

/// Whether the transport error behind `status` is a connection that could not be made
/// (refused, unreachable, a failed handshake): the request never left this process, so it
/// changed nothing anywhere.
fn never_connected(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = error.source();
    }
    false
}

/// Whether a call may be sent again after it failed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Sending it twice is harmless: a read, a release, opening a stream.
    Always,
    /// Only if it surely never left: a call that reached a server that then failed may
    /// have been applied there, and applying it twice would differ from once (an acquire
    /// that joins a lease, a membership change). A not-leader refusal is sent again either
    /// way (nothing happened).
    IfUnsent,
}

/// What to do after one failed attempt of a call.
pub(crate) enum Next {
    /// Send it again, on the route's current member.
    Again,
    /// Give up with this error.
    Stop(Error),
}

/// How far one call has gone: its redirects, its moves, its backoff, where it went.
pub(crate) struct Attempts<'a> {
    /// The route it follows.
    route: &'a Route,
    /// Whether a call without an answer may be sent again.
    resend: Resend,
    /// Redirects followed.
    redirects: usize,
    /// Moves to the next endpoint followed.
    moves: usize,
    /// The wait before the next move's attempt.
    backoff: Duration,
    /// The URLs tried, in order.
    tried: Vec<String>,
}

impl Attempts<'_> {
    /// Records a failed attempt on `current` with `status`, moves the route as the failure
    /// says, and says whether to send the call again (after the backoff, waited here).
    pub(crate) async fn after(&mut self, current: &Current, status: Status) -> Next {
        self.tried.push(current.url.clone());
        let failure = Failure::of(&status);
        match &failure {
            Failure::Answered => return Next::Stop(Error::from(status)),
            Failure::NotLeader(Some(leader)) => {
                if self.redirects >= MAX_REDIRECTS {
                    return Next::Stop(self.no_leader(format!(
                        "still not the leader after {MAX_REDIRECTS} redirects: {}",
                        describe(&status)
                    )));
                }
                self.redirects += 1;
                self.route.redirect(current.generation, leader);
                return Next::Again;
            }
            Failure::NotLeader(None) | Failure::NoAnswer { .. } => {}
        }
        // Moves once per configured endpoint, and once more from a redirect's target (the
        // configured endpoints are then all still untried by this move count).
        let moves = self.route.configured.len() - 1 + usize::from(current.redirected);
        self.route.advance(current.generation);
        let resendable = match failure {
            Failure::NoAnswer { unsent } => unsent || self.resend == Resend::Always,
            _ => true,
        };
        if !resendable {
            return Next::Stop(Error::from(status));
        }
        if self.moves >= moves {
            let single = self.tried.len() == 1 && !matches!(failure, Failure::NotLeader(_));
            return Next::Stop(if single {
                Error::from(status)
            } else {
                self.no_leader(describe(&status))
            });
        }
        self.moves += 1;
        tokio::time::sleep(self.backoff).await;
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.route.config.retry_max);
        Next::Again
    }

    /// The error that says no leader was reached, with where the call went.
    fn no_leader(&mut self, why: String) -> Error {
        Error::NoLeader {
            tried: std::mem::take(&mut self.tried),
            why,
        }
    }
}

/// A status in one line, with the leader it named if any.
fn describe(status: &Status) -> String {
    match Failure::of(status) {
        Failure::NotLeader(Some(leader)) => format!("{status} (leader {leader})"),
        _ => status.to_string(),
    }
}

impl Route {
    /// The route over `configured` (already checked: non-empty, one scheme), starting on
    /// the one at `index` with its connected `channel`.
    pub(crate) fn new(
        configured: Vec<(String, Endpoint)>,
        index: usize,
        channel: Channel,
        config: &Config,
    ) -> Route {
        let scheme = scheme_of(configured.first().map_or("", |(url, _)| url.as_str()));
        let (url, endpoint) = configured[index.min(configured.len() - 1)].clone();
        let credentials = Credentials::of(config.bearer_token.as_ref());
        Route {
            scheme,
            config: config.clone(),
            current: RwLock::new(Arc::new(Current {
                generation: 0,
                url,
                endpoint,
                channel: credentials.on(channel),
                index,
                redirected: false,
            })),
            configured,
            credentials,
        }
    }

    /// What every call carries, for a stream opened on a fresh connection.
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The member talked to now.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh count of attempts for one call.
    pub(crate) fn attempts(&self, resend: Resend) -> Attempts<'_> {
        Attempts {
            route: self,
            resend,
            redirects: 0,
            moves: 0,
            backoff: self.config.retry_initial,
            tried: Vec::new(),
        }
    }

    /// Moves the route as `status`, the failure of a call on the route's generation
    /// `generation`, says: to the leader it names, or to the next endpoint when it says
    /// nothing was answered. A definite answer moves nothing. Returns what it said.
    pub(crate) fn follow(&self, generation: u64, status: &Status) -> Failure {
        let failure = Failure::of(status);
        match &failure {
            Failure::NotLeader(Some(leader)) => self.redirect(generation, leader),
            Failure::NotLeader(None) | Failure::NoAnswer { .. } => self.advance(generation),
            Failure::Answered => {}
        }
        failure
    }

    /// Runs a unary call on the current member, within `limit` per attempt, following
    /// not-leader refusals and moving on failures as the module documentation says.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        limit: Duration,
        resend: Resend,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(LockServiceClient<Authed>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_on(what, limit, resend, |channel| {
            send(LockServiceClient::new(channel))
        })
        .await
    }

    /// As [`Route::call`], for any service on the member's channel (the
    /// `ClusterService`).
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        what: &'static str,
        limit: Duration,
        resend: Resend,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Authed) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempts = self.attempts(resend);
        loop {
            let current = self.current();
            let status = match tokio::time::timeout(limit, send(current.channel.clone())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(status)) => status,
                Err(_) => return Err(Error::Timeout { what, after: limit }),
            };
            match attempts.after(&current, status).await {
                Next::Again => {}
                Next::Stop(error) => return Err(error),
            }
        }
    }

    /// Switches to the leader at `leader` (`host:port`), unless the route moved since
    /// `generation`. An address that makes no endpoint counts as no leader named.
    pub(crate) fn redirect(&self, generation: u64, leader: &str) {
        let url = format!("{}://{leader}", self.scheme);
        let valid = !leader.contains('/') && !leader.contains('@');
        let endpoint = match endpoint_for(&url, &self.config) {
            Ok(endpoint) if valid => endpoint,
            Ok(_) | Err(_) => {
                tracing::warn!(
                    leader,
                    "a member named a leader address that is not host:port"
                );
                self.advance(generation);
                return;
            }
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            return;
        }
        if current.url == url {
            // Sent here already: a member confused about itself. The bound on redirects
            // ends the call; a move would skip a member that may know better.
            return;
        }
        tracing::info!(from = %current.url, to = %url, "following the cluster's leader");
        *current = Arc::new(Current {
            generation: generation.wrapping_add(1),
            channel: self.credentials.on(endpoint.connect_lazy()),
            url,
            endpoint,
            index: current.index,
            redirected: true,
        });
    }

    /// Moves to the next configured endpoint, unless the route moved since `generation`.
    /// With one endpoint, never redirected, the channel stays (tonic reconnects it).
    pub(crate) fn advance(&self, generation: u64) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.generation != generation {
            return;
        }
        if self.configured.len() == 1 && !current.redirected {
            return;
        }
        let index = (current.index + 1) % self.configured.len();
        let (url, endpoint) = self.configured[index].clone();
        tracing::info!(from = %current.url, to = %url, "moving to the next endpoint");
        *current = Arc::new(Current {
            generation: generation.wrapping_add(1),
            channel: self.credentials.on(endpoint.connect_lazy()),
            url,
            endpoint,
            index,
            redirected: false,
        });
    }
}

/// `https` for an `https://` URL, else `http`.
fn scheme_of(url: &str) -> &'static str {
    if url.starts_with("https://") {
        "https"
    } else {
        "http"
    }
}

/// The tonic endpoint of `url` with the settings: keepalive so that a dead connection is
/// noticed, timeouts, and TLS for `https://`.
pub(crate) fn endpoint_for(url: &str, config: &Config) -> Result<Endpoint, Error> {
    let invalid = |source| Error::InvalidEndpoint {
        endpoint: url.to_string(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(invalid)?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.http2_keepalive_interval)
        .keep_alive_timeout(config.http2_keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let tls = config
            .tls
            .clone()
            .unwrap_or_else(|| ClientTlsConfig::new().with_enabled_roots());
        endpoint = endpoint.tls_config(tls).map_err(invalid)?;
    }
    Ok(endpoint)
}

/// The URLs of a client's endpoints, checked: at least one, and one scheme for all (a
/// leader's address is given the endpoints' scheme, so a mix could not be followed).
pub(crate) fn check_urls(urls: &[String]) -> Result<(), Error> {
    let Some(first) = urls.first() else {
        return Err(Error::Config {
            field: "endpoints",
            why: "no endpoint given".into(),
        });
    };
    let scheme = scheme_of(first);
    if let Some(other) = urls.iter().find(|url| scheme_of(url) != scheme) {
        return Err(Error::Config {
            field: "endpoints",
            why: format!(
                "{first} and {other} differ in scheme: every member of a cluster is reached the same way (all http:// or all https://)"
            ),
        });
    }
    Ok(())
}

/// An error and its sources, in one line (tonic's transport error says only "transport
/// error" itself).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_leader(leader: Option<&str>) -> Status {
        let mut status = Status::unavailable("not the leader");
        let meta = status.metadata_mut();
        meta.insert(ERROR_CODE, NOT_LEADER_CODE.parse().unwrap());
        if let Some(leader) = leader {
            meta.insert(LEADER, leader.parse().unwrap());
        }
        status
    }

    fn route(urls: &[&str]) -> Route {
        let config = Config::default();
        let configured: Vec<(String, Endpoint)> = urls
            .iter()
            .map(|url| (url.to_string(), endpoint_for(url, &config).unwrap()))
            .collect();
        let channel = configured[0].1.connect_lazy();
        Route::new(configured, 0, channel, &config)
    }

    // checks: L3 (a refusal is read as the cluster means it: a not-leader names where to
    // go, anything else definite stays the answer)
    #[test]
    fn failures_are_read_from_the_status_and_its_metadata() {
        assert_eq!(
            Failure::of(&not_leader(Some("10.0.0.2:7500"))),
            Failure::NotLeader(Some("10.0.0.2:7500".into()))
        );
        assert_eq!(Failure::of(&not_leader(None)), Failure::NotLeader(None));
        assert_eq!(
            Failure::of(&Status::unavailable("connection reset")),
            Failure::NoAnswer { unsent: false }
        );
        assert_eq!(
            Failure::of(&Status::aborted("busy")),
            Failure::Answered,
            "a busy refusal is an answer, never sent elsewhere"
        );
        let mut busy = Status::aborted("busy");
        busy.metadata_mut()
            .insert(LEADER, "10.0.0.2:7500".parse().unwrap());
        assert_eq!(Failure::of(&busy), Failure::Answered);
    }

    // checks: L3 (the leader's address gets the endpoints' scheme; moves go round the
    // configured list; a stale failure moves nothing)
    #[tokio::test]
    async fn the_route_follows_redirects_and_moves_round_the_list() {
        let route = route(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let first = route.current();
        assert_eq!(first.url, "http://127.0.0.1:1");
        route.follow(first.generation, &not_leader(Some("127.0.0.1:9")));
        let leader = route.current();
        assert_eq!(leader.url, "http://127.0.0.1:9");
        // A failure seen on the old generation moves nothing.
        route.follow(first.generation, &Status::unavailable("reset"));
        assert_eq!(route.current().url, "http://127.0.0.1:9");
        route.follow(leader.generation, &Status::unavailable("reset"));
        assert_eq!(route.current().url, "http://127.0.0.1:2");
        let second = route.current();
        route.follow(second.generation, &not_leader(None));
        assert_eq!(route.current().url, "http://127.0.0.1:1");
        let third = route.current();
        route.follow(third.generation, &Status::aborted("busy"));
        assert_eq!(route.current().generation, third.generation);
    }

    #[test]
    fn a_mix_of_schemes_is_refused() {
        let urls = ["http://a:1".to_string(), "https://b:1".to_string()];
        assert!(matches!(
            check_urls(&urls),
            Err(Error::Config {
                field: "endpoints",
                ..
            })
        ));
        assert!(check_urls(&urls[..1]).is_ok());
        assert!(check_urls(&[]).is_err());
    }
}
