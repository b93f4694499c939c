//! [`Config`]: every knob of the SDK with its default, and the deadline arithmetic
//! ([`DeadlinePolicy`]) that CONTRACT S4 rests on.

use std::time::Duration;

use tonic::transport::ClientTlsConfig;

use crate::error::Error;

/// How a [`Client`](crate::Client) behaves. Build one with
/// [`Client::builder`](crate::Client::builder); every field has a documented default, and
/// no duration may be longer than [`Config::LONGEST`] (a year).
#[derive(Debug, Clone)]
pub struct Config {
    /// The TTL asked for when an acquire names none. Default: 10 s.
    pub default_ttl: Duration,
    /// The largest relative difference between the rates of the client's and the server's
    /// clocks that the SDK tolerates (0.01 = 1 %). The local deadline is shortened by this
    /// fraction of the TTL. Default: 0.01, far above real quartz drift (tens of ppm), so
    /// that it also covers a server whose timer fires a little late.
    pub drift_bound: f64,
    /// Subtracted from every local deadline on top of the drift bound, so that a token
    /// handed out just before the deadline has time to reach the resource. Default: 50 ms.
    pub safety_margin: Duration,
    /// When to renew, as a fraction of the TTL after the last confirmed renewal was sent.
    /// Default: 1/3, which leaves two further attempts before the deadline.
    pub renew_fraction: f64,
    /// The first wait before retrying a failed renewal stream, or before sending a call
    /// again to the next endpoint of a cluster; doubles up to [`Config::retry_max`].
    /// Default: 50 ms.
    pub retry_initial: Duration,
    /// The longest wait between reconnection attempts. Default: 1 s. While a lease is
    /// held, the wait is also at most an eighth of the shortest held lease's TTL.
    pub retry_max: Duration,
    /// How long the pause watchdog sleeps between heartbeats. Default: 50 ms.
    pub watchdog_period: Duration,
    /// A gap between heartbeats longer than this is reported as a process pause and makes
    /// every lease suspect until the server confirms it again. It must exceed the period
    /// plus ordinary scheduling delay on a loaded machine. Default: 500 ms.
    pub pause_threshold: Duration,
    /// Timeout for establishing a connection. Default: 3 s.
    pub connect_timeout: Duration,
    /// Timeout for one unary call (added to the wait of a queued acquire), for one request
    /// on the `Session` stream (opening the stream included), and for opening the renewal
    /// stream. Default: 5 s.
    pub request_timeout: Duration,
    /// HTTP/2 PING interval. Without it a channel stays stuck on a connection that died in a
    /// partition: a connection whose packets are dropped (no FIN, no RST) looks open until
    /// the operating system gives up on it (its retransmissions take many minutes, and an
    /// idle connection is never checked). With it the stream is torn down and re-opened.
    /// Default: 1 s.
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a PING's answer before declaring the connection dead.
    /// Default: 2 s.
    pub http2_keepalive_timeout: Duration,
    /// The holder name sent with every acquire, for humans and logs. Default:
    /// `pid-<process id>`.
    pub holder: String,
    /// TLS settings for `https://` endpoints. Default: `None`, which uses the roots tonic
    /// was built with: with only `tls-ring` enabled there are none, so give a CA here.
    pub tls: Option<ClientTlsConfig>,
    /// The bearer token sent with every call (`authorization: Bearer TOKEN`), for a server
    /// with authentication on. Default: `None`, nothing sent. Use TLS with it: on a
    /// plaintext connection the token can be read off the wire.
    pub bearer_token: Option<crate::credentials::BearerToken>,
    /// Whether try-once acquires and releases travel as messages on one `Session` stream
    /// per client (opened on first use, reopened after a failure) instead of one unary
    /// call each: one long-lived stream instead of an HTTP/2 stream per call, so a busy
    /// client gets far more requests through. Waiting acquires always use the unary call
    /// (see [`Client::acquire`](crate::Client::acquire)), and a server without `Session` is
    /// detected and served with unary calls. Default: `true`.
    pub session: bool,
    /// The address (`host:port`) of the server's framed `Session` listener
    /// (`fenced --session-listen`): when set, the session travels over a plain TCP
    /// connection there instead of an HTTP/2 stream, at less CPU per message on both
    /// sides. With an `https://` endpoint the connection is TLS too, and needs
    /// [`Config::framed_tls`]; needs [`Config::session`]. Default: `None` (the gRPC `Session`
    /// call).
    pub framed_session: Option<String>,
    /// How the framed session verifies the server when the endpoint is `https://` (the
    /// framed listener then serves TLS with the gRPC certificate). Required with an
    /// `https://` endpoint and a [`Config::framed_session`], refused without them.
    /// Default: `None`.
    pub framed_tls: Option<FramedTls>,
    /// How many requests the client keeps in flight on one session stream or framed
    /// connection (sent, not yet answered); further requests wait in the client, within
    /// their [`Config::request_timeout`], until an answer comes. The server refuses a
    /// framed session's requests past its own cap (`fenced --max-session-in-flight`,
    /// default 1024) with RESOURCE_EXHAUSTED, so keep this at or below the server's.
    /// Default: 1024. At least 1.
    pub max_session_in_flight: usize,
}

/// Which server the framed session trusts over TLS ([`Config::framed_tls`]).
///
/// A setting of its own because tonic's `ClientTlsConfig` ([`Config::tls`]) cannot be read
/// back: give the same CA to both.
#[derive(Clone, Debug)]
pub struct FramedTls {
    /// The CA certificates that signed the server's certificate, PEM.
    pub ca_certificate_pem: Vec<u8>,
    /// The name the server's certificate must carry. Default: `None`, the host of
    /// [`Config::framed_session`].
    pub domain: Option<String>,
}

impl FramedTls {
    /// Trusts the CA certificates in `ca_certificate_pem` (PEM), and verifies the host of the
    /// framed session's address.
    pub fn new(ca_certificate_pem: impl Into<Vec<u8>>) -> FramedTls {
        FramedTls {
            ca_certificate_pem: ca_certificate_pem.into(),
            domain: None,
        }
    }

    /// Verifies this name instead of the address's host (as tonic's `domain_name`).
    pub fn domain(mut self, domain: impl Into<String>) -> FramedTls {
        self.domain = Some(domain.into());
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_ttl: Duration::from_secs(10),
            drift_bound: 0.01,
            safety_margin: Duration::from_millis(50),
            renew_fraction: 1.0 / 3.0,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
            watchdog_period: Duration::from_millis(50),
            pause_threshold: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            http2_keepalive_interval: Duration::from_secs(1),
            http2_keepalive_timeout: Duration::from_secs(2),
            holder: format!("pid-{}", std::process::id()),
            tls: None,
            bearer_token: None,
            session: true,
            framed_session: None,
            framed_tls: None,
            max_session_in_flight: 1024,
        }
    }
}

impl Config {
    /// The longest any duration setting may be: a year. The SDK adds its settings to
    /// clock readings, and the timers of tokio, hyper and tonic under it panic on
    /// instants they cannot represent (tonic's request deadline at about 11,000 years);
    /// no lease service needs a timeout or a TTL anywhere near a year.
    pub const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// The largest [`Config::max_session_in_flight`]: half the most a tokio semaphore
    /// counts, so that counting a session's requests can never overflow it.
    pub const MOST_SESSION_IN_FLIGHT: usize = tokio::sync::Semaphore::MAX_PERMITS / 2;

    /// Checks the settings against each other; the error names the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, why: String| Err(Error::Config { field, why });
        if let Some(Err(why)) = self.bearer_token.as_ref().map(|token| token.header()) {
            return bad("bearer_token", why);
        }
        for (field, value) in [
            ("default_ttl", self.default_ttl),
            ("safety_margin", self.safety_margin),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
            ("watchdog_period", self.watchdog_period),
            ("pause_threshold", self.pause_threshold),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
        ] {
            if value > Self::LONGEST {
                return bad(
                    field,
                    format!(
                        "{value:?} is over the longest duration setting the SDK takes, a year ({:?}): the clocks it is added to cannot count that far",
                        Self::LONGEST
                    ),
                );
            }
        }
        if !(0.0..0.5).contains(&self.drift_bound) {
            return bad(
                "drift_bound",
                format!("{} is outside [0, 0.5)", self.drift_bound),
            );
        }
        if !(self.renew_fraction > 0.0 && self.renew_fraction < 0.9) {
            return bad(
                "renew_fraction",
                format!("{} is outside (0, 0.9)", self.renew_fraction),
            );
        }
        if self.default_ttl.is_zero() {
            return bad("default_ttl", "is zero".into());
        }
        if self.policy().usable(self.default_ttl).is_none() {
            return bad(
                "default_ttl",
                format!(
                    "{:?} leaves no time once the drift bound and the {:?} safety margin are taken off",
                    self.default_ttl, self.safety_margin
                ),
            );
        }
        if self.watchdog_period.is_zero() {
            return bad("watchdog_period", "is zero".into());
        }
        if self.pause_threshold <= self.watchdog_period {
            return bad(
                "pause_threshold",
                format!(
                    "{:?} is not longer than the watchdog period {:?}: every heartbeat would look like a pause",
                    self.pause_threshold, self.watchdog_period
                ),
            );
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return bad(
                "retry_initial",
                format!(
                    "{:?} must be non-zero and at most retry_max ({:?})",
                    self.retry_initial, self.retry_max
                ),
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "is zero".into());
            }
        }
        if let Some(addr) = &self.framed_session {
            if !self.session {
                return bad(
                    "framed_session",
                    format!("{addr} is set but the session is off (`session: false`)"),
                );
            }
            if addr.is_empty() || addr.contains("://") {
                return bad(
                    "framed_session",
                    format!("{addr:?} is not host:port (the framed listener speaks no URL scheme)"),
                );
            }
        }
        if self.max_session_in_flight == 0 {
            return bad(
                "max_session_in_flight",
                "is zero: no session request could ever be sent".into(),
            );
        }
        if self.max_session_in_flight > Self::MOST_SESSION_IN_FLIGHT {
            return bad(
                "max_session_in_flight",
                format!(
                    "{} is over {}, the most requests the client can count",
                    self.max_session_in_flight,
                    Self::MOST_SESSION_IN_FLIGHT
                ),
            );
        }
        if self.framed_tls.is_some() && self.framed_session.is_none() {
            return bad(
                "framed_tls",
                "is set but framed_session is not: there is no framed connection to secure".into(),
            );
        }
        Ok(())
    }

    /// The deadline arithmetic these settings imply.
    pub fn policy(&self) -> DeadlinePolicy {
        DeadlinePolicy {
            drift_bound: self.drift_bound,
            safety_margin: self.safety_margin,
            renew_fraction: self.renew_fraction,
        }
    }
}

/// The arithmetic of CONTRACT S4: from the instant a request was *sent* and the TTL the
/// server granted, when the client must stop trusting the lease, when it should renew, and
/// when the server has surely let the lease go.
///
/// All instants are on the SDK's [`Clock`](crate::Clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadlinePolicy {
    /// See [`Config::drift_bound`].
    pub drift_bound: f64,
    /// See [`Config::safety_margin`].
    pub safety_margin: Duration,
    /// See [`Config::renew_fraction`].
    pub renew_fraction: f64,
}

impl DeadlinePolicy {
    /// How much of a TTL the client may use: `ttl * (1 - drift_bound) - safety_margin`, or
    /// `None` when nothing is left.
    pub fn usable(&self, ttl: Duration) -> Option<Duration> {
        scale(ttl, 1.0 - self.drift_bound)
            .checked_sub(self.safety_margin)
            .filter(|d| !d.is_zero())
    }

    /// The local deadline of a grant or renewal sent at `sent` for `ttl`.
    ///
    /// The server counts the TTL from when it *handled* the request, which is after it was
    /// sent; its clock may run up to `drift_bound` faster than ours. So `sent + ttl * (1 -
    /// drift_bound)` is never later than the server's expiry, and the margin leaves room
    /// for the write that carries the token. A TTL with nothing usable gives `sent`: a
    /// deadline that has already passed.
    pub fn deadline(&self, sent: Duration, ttl: Duration) -> Duration {
        sent.saturating_add(self.usable(ttl).unwrap_or(Duration::ZERO))
    }

    /// When to send the next renewal after one sent at `sent` was confirmed.
    pub fn renew_at(&self, sent: Duration, ttl: Duration) -> Duration {
        sent.saturating_add(scale(ttl, self.renew_fraction))
    }

    /// The instant after which the server has expired a lease whose latest confirmation
    /// (grant or renewal) arrived at `confirmed_at`, even if its clock ran `drift_bound`
    /// slow: the server handled that request no later than its answer arrived. The SDK
    /// stops waiting for the server then and calls the lease lost. (Counting from the
    /// *arrival* matters for a grant that waited in the queue: the server counts its TTL
    /// from the grant, long after the request was sent.)
    ///
    /// This bound is a judgement, not a proof: a request stuck in a network buffer could in
    /// principle reach the server later still. Declaring a lease lost is always safe (the
    /// holder only stops writing), so the SDK gives up here and releases the lease.
    pub fn surely_expired(&self, confirmed_at: Duration, ttl: Duration) -> Duration {
        confirmed_at
            .saturating_add(scale(ttl, 1.0 + self.drift_bound))
            .saturating_add(self.safety_margin)
    }
}

/// `d * factor`, saturating at [`Duration::MAX`] where `Duration::mul_f64` would panic (a
/// TTL of `Duration::MAX`); a factor that is negative or not a number gives zero, the
/// cautious end of every use above.
fn scale(d: Duration, factor: f64) -> Duration {
    let seconds = d.as_secs_f64() * factor;
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_field() {
        let config = Config {
            drift_bound: 0.7,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::Config {
                field: "drift_bound",
                ..
            })
        ));
        let config = Config {
            pause_threshold: ms(10),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::Config {
                field: "pause_threshold",
                ..
            })
        ));
        let config = Config {
            default_ttl: ms(40),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::Config {
                field: "default_ttl",
                ..
            })
        ));
        for max_session_in_flight in [0, Config::MOST_SESSION_IN_FLIGHT + 1] {
            let config = Config {
                max_session_in_flight,
                ..Config::default()
            };
            assert!(matches!(
                config.validate(),
                Err(Error::Config {
                    field: "max_session_in_flight",
                    ..
                })
            ));
        }
    }

    // checks: S4
    #[test]
    fn deadline_counts_from_send_and_respects_the_drift_bound() {
        let policy = DeadlinePolicy {
            drift_bound: 0.05,
            safety_margin: ms(100),
            renew_fraction: 1.0 / 3.0,
        };
        let sent = Duration::from_secs(1000);
        let ttl = Duration::from_secs(10);
        // 10 s * 0.95 - 0.1 s = 9.4 s after the send.
        assert_eq!(policy.deadline(sent, ttl), sent + ms(9_400));
        // The server's expiry is at least `handled + ttl` on its clock; with its clock
        // running drift_bound fast that is `handled + ttl / 1.05` on ours, and `handled`
        // is no earlier than `sent`. The local deadline is before that.
        let server_expiry_at_worst = sent + ttl.div_f64(1.0 + policy.drift_bound);
        assert!(policy.deadline(sent, ttl) < server_expiry_at_worst);
        assert!(policy.renew_at(sent, ttl) < policy.deadline(sent, ttl));
        assert!(policy.surely_expired(sent, ttl) > sent + ttl);
        // A TTL that the margin eats entirely gives a deadline that has already passed.
        assert_eq!(policy.deadline(sent, ms(100)), sent);
        assert_eq!(policy.usable(ms(100)), None);
    }

    // checks: S4 (the arithmetic saturates instead of panicking on TTLs and instants beyond
    // any clock, and a saturated deadline is still never later than the server's expiry)
    #[test]
    fn deadline_arithmetic_saturates_on_durations_beyond_any_clock() {
        let policy = DeadlinePolicy {
            drift_bound: 0.0,
            safety_margin: ms(100),
            renew_fraction: 1.0 / 3.0,
        };
        let sent = Duration::from_secs(1000);
        assert!(policy.usable(Duration::MAX).is_some());
        assert_eq!(policy.deadline(sent, Duration::MAX), Duration::MAX);
        let renew_at = policy.renew_at(sent, Duration::MAX);
        assert!(sent < renew_at && renew_at < policy.deadline(sent, Duration::MAX));
        assert_eq!(policy.surely_expired(sent, Duration::MAX), Duration::MAX);
        assert_eq!(policy.deadline(Duration::MAX, ms(1_000)), Duration::MAX);
        let drifting = DeadlinePolicy {
            drift_bound: 0.25,
            ..policy
        };
        assert_eq!(drifting.surely_expired(sent, Duration::MAX), Duration::MAX);
        assert!(drifting.deadline(sent, Duration::MAX) < Duration::MAX);
    }
}
