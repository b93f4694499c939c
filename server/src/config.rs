//! [`Config`]: everything the server can be told, with defaults and validation.
//!
//! `clap` lives only in `main.rs`; this struct is what the library takes, so tests and
//! embedders build it directly.

use std::path::PathBuf;
use std::time::Duration;

use fenced_types::LockName;

/// The server's settings. `Default` gives the documented defaults; call
/// [`Config::validate`] before use (the server does).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the journal and sled keep leases and the token counter.
    pub data_dir: PathBuf,
    /// The shortest TTL a lease may ask for (default 100 ms).
    pub min_ttl: Duration,
    /// The longest TTL a lease may ask for (default 1 h).
    pub max_ttl: Duration,
    /// The longest lock name accepted, in bytes (default and ceiling 256).
    pub max_name_bytes: usize,
    /// The longest free-form holder name accepted, in bytes (default 256).
    pub max_holder_bytes: usize,
    /// The longest an Acquire may wait in a queue (default 1 h).
    pub max_wait: Duration,
    /// The longest lock-delay an Acquire may ask for (default 1 min).
    pub max_lock_delay: Duration,
    /// Live leases at most, server-wide (default 1,000,000). A handoff that would need one
    /// more refuses only the first waiter of that lock's queue; the rest keep their places
    /// and get the lock as soon as a lease ends.
    pub max_leases: usize,
    /// Held locks at most, server-wide (default 10,000,000); at the limit, handoffs behave
    /// as for `max_leases`.
    pub max_locks: usize,
    /// Queued acquirers at most, server-wide (default 100,000). It bounds all a waiter
    /// costs (its place in the queue, its request, its reply channel), which is freed when
    /// it is granted, times out, is cancelled or disconnects.
    pub max_waiters: usize,
    /// Acquires that may wait (a `wait_ms` above zero) one authenticated identity may have
    /// in flight at most, so one tenant cannot take every place under `max_waiters`; 0
    /// (default) sets no limit beyond `max_waiters`. Without authentication it does not
    /// apply.
    pub max_waiters_per_identity: usize,
    /// Live leases one authenticated identity may have at most, so one tenant cannot take
    /// every place under `max_leases`; 0 (default) sets no limit beyond `max_leases`. A
    /// lease counts against the identity that created it (recorded with the lease, so the
    /// count survives restarts and failovers). One more create is refused with
    /// RESOURCE_EXHAUSTED (`fenced-error: identity-leases`); a queued create that finds its
    /// identity at the limit when the lock is handed to it is refused then, and the lock
    /// goes on to the next waiter. Without authentication it does not apply.
    pub max_leases_per_identity: usize,
    /// Locks one lease may hold at most (default 1,000). A lease's expiry or release ends
    /// all its locks in one command, under the engine's lock: a durable write and a watch
    /// event per lock, all at once. The default keeps that burst well inside the watch
    /// channel's 4,096 events, so one lease ending cannot by itself make every watcher fall
    /// behind. A lease restored holding more (the limit was lowered across a restart) keeps
    /// its locks, and takes no more until it is under the limit.
    pub max_locks_per_lease: usize,
    /// Concurrent `Watch` streams at most (default 1,000). Each costs a task, a wake-up
    /// per event and a bounded buffer (see [`crate::watch`]).
    pub max_watchers: usize,
    /// Concurrent `Watch` streams one authenticated identity may have open at most, so one
    /// tenant cannot take every place under `max_watchers`; 0 (default) sets no limit
    /// beyond `max_watchers`. Without authentication it does not apply.
    pub max_watchers_per_identity: usize,
    /// The most locks one `List` page returns, and the most lock entries it examines under
    /// the engine's lock (default 1,000). A request for more, or for 0, gets this many.
    /// Each entry costs a lookup and a copy of its name while grants wait for the lock, so
    /// this bounds how long a List holds them up; and a page of the longest names and
    /// holders must fit in gRPC's default 4 MiB message limit ([`Config::validate`]).
    pub max_list_page: usize,
    /// How long ended lease ids are remembered, so a late renewal learns whether its lease
    /// expired or was released (default 10 min).
    pub remember_ended_for: Duration,
    /// How many ended lease ids are remembered at most (default 1,000,000, about 50 MB);
    /// past that the oldest are forgotten early and answer "unknown".
    pub remember_ended_max: usize,
    /// How long a queued acquirer restored after a restart or a failover keeps its place
    /// for its client to send its acquire again (default 5 s; see
    /// [`crate::table`]'s `detached`). A restored waiter at the head of a free lock holds
    /// the lock for its client that long at most, as a lock-delay does.
    pub waiter_grace: Duration,
    /// `fdatasync` every journal append (and sled's data file at each checkpoint), so an
    /// acknowledged grant survives a power cut and not only a process crash (default true).
    pub fdatasync: bool,
    /// How often the journal's writes are moved into sled and the journal file replaced
    /// (default 1 s). Shorter keeps the journal that a restart replays smaller; longer lets
    /// sled coalesce more (an acquire and its release within one interval cost sled
    /// nothing).
    pub checkpoint_interval: Duration,
    /// sled's page cache size in bytes (default 64 MiB; sled's own default is 1 GiB).
    pub cache_bytes: u64,
    /// How long a shutdown waits for in-flight requests before closing connections
    /// (default 5 s).
    pub drain_timeout: Duration,
    /// Serve TLS with this certificate chain and private key (PEM files); `None` serves
    /// plaintext (default).
    pub tls: Option<TlsFiles>,
    /// The audit log ([`crate::audit`]): every grant, release, expiry, revocation and refused
    /// call, one JSON line each; `None`: no audit log (default).
    pub audit_log: Option<PathBuf>,
    /// The size at which the audit log is rotated (default 64 MiB).
    pub audit_max_bytes: u64,
    /// Authentication by client certificates: the CA (PEM) whose certificates identify
    /// clients ([`crate::auth`]); needs `tls`. `None`: no client certificates (default).
    pub client_ca: Option<PathBuf>,
    /// Authentication: the tokens file ([`crate::auth`]) whose bearer tokens every call
    /// must carry; `None` checks nothing (default, the embedded single node).
    pub auth_tokens: Option<PathBuf>,
    /// Permissions per lock-name prefix: the policy file ([`crate::policy`]); `None` lets
    /// every authenticated client do everything (default). Needs `auth_tokens`.
    pub policy: Option<PathBuf>,
    /// How long a connection may stay silent before the server PINGs it (default 10 s):
    /// HTTP/2's PING on gRPC connections, an empty frame on framed `Session` ones. A client
    /// that vanished without closing (a partition, a dead host) is noticed and its
    /// connection closed, so its queued acquires leave their queues (CONTRACT L2) instead
    /// of being granted to nobody.
    pub keepalive_interval: Duration,
    /// How long the server waits for a PING's answer before closing the connection
    /// (default 20 s).
    pub keepalive_timeout: Duration,
    /// How long a new connection has, from its accept, to become usable (default 10 s): to
    /// finish its TLS handshake and then send the HTTP/2 preface (gRPC) or the hello
    /// (framed `Session`). A connection that says nothing is closed then, so an idle
    /// socket cannot hold a connection slot ([`Config::max_connections`]) forever.
    pub handshake_timeout: Duration,
    /// Connections open at once on each listener, the gRPC one and the framed `Session`
    /// one each (default 10,000). A connection past it is closed at once, with a warning
    /// in the log; the open ones are not disturbed, and each one that closes frees its
    /// slot. Keep it below the process's open-file limit (`ulimit -n`).
    pub max_connections: usize,
    /// HTTP/2 streams open at once on one gRPC connection (default 1,024), announced to
    /// the client in HTTP/2's SETTINGS: a client's calls past it wait in the client until
    /// one of its streams ends.
    pub max_concurrent_streams: u32,
    /// Requests of one `Session` in flight at once (default 1,024). A gRPC `Session` past
    /// it is not read until an answer goes out (HTTP/2 flow control then holds the
    /// client); a framed one keeps being read, so that its keepalive pings are still
    /// heard, and a request past it is answered at once with RESOURCE_EXHAUSTED.
    pub max_session_in_flight: usize,
    /// Serve the admin HTTP listener ([`crate::admin`]: `/metrics`, `/healthz`, `/readyz`
    /// and the status page) on this address; `None` serves none and installs no metrics
    /// recorder (default). Its connections are capped by `max_connections` too.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Run as a member of a replicated cluster ([`crate::cluster`]); `None` runs a single
    /// node (default). A member keeps its raft log and state machine in `data_dir`
    /// (`raft-log/`, `raft-state/`).
    pub cluster: Option<crate::cluster::settings::ClusterSettings>,
    /// Sign every grant's sequencer with this key ([`crate::signing`]); `None` signs
    /// nothing and answers grants with an empty sequencer (default).
    pub signing_key: Option<crate::signing::SigningKeyFile>,
}

/// Where the server's TLS certificate chain and private key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./fenced-data"),
            min_ttl: Duration::from_millis(100),
            max_ttl: Duration::from_secs(3600),
            max_name_bytes: LockName::MAX_BYTES,
            max_holder_bytes: 256,
            max_wait: Duration::from_secs(3600),
            max_lock_delay: Duration::from_secs(60),
            max_leases: 1_000_000,
            max_locks: 10_000_000,
            max_waiters: 100_000,
            max_waiters_per_identity: 0,
            max_leases_per_identity: 0,
            max_locks_per_lease: 1_000,
            max_watchers: 1_000,
            max_watchers_per_identity: 0,
            max_list_page: 1_000,
            remember_ended_for: Duration::from_secs(600),
            waiter_grace: Duration::from_secs(5),
            remember_ended_max: 1_000_000,
            fdatasync: true,
            checkpoint_interval: Duration::from_secs(1),
            cache_bytes: 64 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
            tls: None,
            auth_tokens: None,
            client_ca: None,
            audit_log: None,
            audit_max_bytes: 64 * 1024 * 1024,
            policy: None,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_concurrent_streams: 1024,
            max_session_in_flight: 1024,
            admin_listen: None,
            cluster: None,
            signing_key: None,
        }
    }
}

/// A setting that makes no sense, named with the values that conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Client certificates were asked for on a server that does not serve TLS.
    #[error("client_ca needs TLS: give tls_cert and tls_key too")]
    ClientCaWithoutTls,
    /// The TTL bounds are empty or start at zero.
    #[error("TTL bounds {min:?}..={max:?} are invalid: need 0 < min <= max")]
    TtlBounds {
        /// The configured minimum.
        min: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// The name limit is outside what the protocol allows.
    #[error("max name length {given} is invalid: need 1..={ceiling}")]
    NameLimit {
        /// The configured limit.
        given: usize,
        /// The protocol's ceiling.
        ceiling: usize,
    },
    /// The checkpoint interval is zero.
    #[error("the checkpoint interval must be above zero")]
    ZeroCheckpointInterval,
    /// A duration that must be above zero is zero.
    #[error("{what} must be above zero")]
    ZeroDuration {
        /// Which setting.
        what: &'static str,
    },
    /// A List page of the longest names and holders would not fit in one gRPC message.
    #[error(
        "max_list_page {page} is too large: a page of {page} locks with {name_bytes}-byte \
         names and {holder_bytes}-byte holders takes up to {bytes} bytes, over gRPC's \
         default message limit of {limit} bytes"
    )]
    ListPageTooLarge {
        /// The configured page size.
        page: usize,
        /// The longest lock name.
        name_bytes: usize,
        /// The longest holder name.
        holder_bytes: usize,
        /// The worst-case encoded size of a page.
        bytes: usize,
        /// The message size limit.
        limit: usize,
    },
    /// A capacity limit is zero.
    #[error("{what} must be at least 1")]
    ZeroLimit {
        /// Which limit.
        what: &'static str,
    },
    /// A policy file without authentication: no call would carry an identity to check.
    #[error(
        "the policy file (--policy) needs authentication on (--auth-tokens or --client-ca): \
         without it no call carries an identity the policy could name"
    )]
    PolicyWithoutAuthentication,
}

/// gRPC's default limit on a decoded message (tonic's and grpc-go's), which every List page
/// must fit in.
pub const GRPC_MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

/// Encoded bytes of one `LockInfo` in a `ListResponse` beyond its name and holder, at
/// most: seven field tags, three length prefixes, a bool and three numbers at their longest
/// varints (48), rounded up.
const LOCK_INFO_OVERHEAD: usize = 64;

impl Config {
    /// The largest a `ListResponse` of a full page can be, in encoded bytes.
    pub fn worst_list_page_bytes(&self) -> usize {
        let info = self.max_name_bytes + self.max_holder_bytes + LOCK_INFO_OVERHEAD;
        self.max_list_page
            .saturating_mul(info)
            .saturating_add(self.max_name_bytes + LOCK_INFO_OVERHEAD)
    }

    /// Checks that the settings are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_ttl.is_zero() || self.min_ttl > self.max_ttl {
            return Err(ConfigError::TtlBounds {
                min: self.min_ttl,
                max: self.max_ttl,
            });
        }
        if self.max_name_bytes == 0 || self.max_name_bytes > LockName::MAX_BYTES {
            return Err(ConfigError::NameLimit {
                given: self.max_name_bytes,
                ceiling: LockName::MAX_BYTES,
            });
        }
        if self.checkpoint_interval.is_zero() {
            return Err(ConfigError::ZeroCheckpointInterval);
        }
        if self.client_ca.is_some() && self.tls.is_none() {
            return Err(ConfigError::ClientCaWithoutTls);
        }
        for (what, value) in [
            ("max_leases", self.max_leases),
            ("max_locks", self.max_locks),
            ("max_waiters", self.max_waiters),
            ("max_locks_per_lease", self.max_locks_per_lease),
            ("max_watchers", self.max_watchers),
            ("max_list_page", self.max_list_page),
            ("remember_ended_max", self.remember_ended_max),
            ("max_connections", self.max_connections),
            ("max_session_in_flight", self.max_session_in_flight),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { what });
            }
        }
        if self.worst_list_page_bytes() > GRPC_MESSAGE_LIMIT {
            return Err(ConfigError::ListPageTooLarge {
                page: self.max_list_page,
                name_bytes: self.max_name_bytes,
                holder_bytes: self.max_holder_bytes,
                bytes: self.worst_list_page_bytes(),
                limit: GRPC_MESSAGE_LIMIT,
            });
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::ZeroLimit {
                what: "max_concurrent_streams",
            });
        }
        if self.policy.is_some() && self.auth_tokens.is_none() && self.client_ca.is_none() {
            return Err(ConfigError::PolicyWithoutAuthentication);
        }
        for (what, value) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("waiter_grace", self.waiter_grace),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { what });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        assert_eq!(Config::default().validate(), Ok(()));
        let backwards = Config {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(1),
            ..Config::default()
        };
        assert!(matches!(
            backwards.validate(),
            Err(ConfigError::TtlBounds { .. })
        ));
        let long_names = Config {
            max_name_bytes: 300,
            ..Config::default()
        };
        assert!(matches!(
            long_names.validate(),
            Err(ConfigError::NameLimit { .. })
        ));
        let no_checkpoints = Config {
            checkpoint_interval: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            no_checkpoints.validate(),
            Err(ConfigError::ZeroCheckpointInterval)
        );
        let no_leases = Config {
            max_leases: 0,
            ..Config::default()
        };
        assert_eq!(
            no_leases.validate(),
            Err(ConfigError::ZeroLimit { what: "max_leases" })
        );
        for (what, zero) in [
            (
                "max_locks_per_lease",
                Config {
                    max_locks_per_lease: 0,
                    ..Config::default()
                },
            ),
            (
                "max_watchers",
                Config {
                    max_watchers: 0,
                    ..Config::default()
                },
            ),
            (
                "max_list_page",
                Config {
                    max_list_page: 0,
                    ..Config::default()
                },
            ),
        ] {
            assert_eq!(zero.validate(), Err(ConfigError::ZeroLimit { what }));
        }
        // A page of 7,000 of the longest names and holders fits in 4 MiB; 8,000 does not.
        let big_pages = |max_list_page| Config {
            max_list_page,
            ..Config::default()
        };
        assert_eq!(big_pages(7_000).validate(), Ok(()));
        assert!(matches!(
            big_pages(8_000).validate(),
            Err(ConfigError::ListPageTooLarge { page: 8_000, .. })
        ));
        let silent = Config {
            keepalive_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            silent.validate(),
            Err(ConfigError::ZeroDuration {
                what: "keepalive_timeout"
            })
        );
        let no_handshake = Config {
            handshake_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            no_handshake.validate(),
            Err(ConfigError::ZeroDuration {
                what: "handshake_timeout"
            })
        );
        for (what, zero) in [
            (
                "max_connections",
                Config {
                    max_connections: 0,
                    ..Config::default()
                },
            ),
            (
                "max_concurrent_streams",
                Config {
                    max_concurrent_streams: 0,
                    ..Config::default()
                },
            ),
            (
                "max_session_in_flight",
                Config {
                    max_session_in_flight: 0,
                    ..Config::default()
                },
            ),
        ] {
            assert_eq!(zero.validate(), Err(ConfigError::ZeroLimit { what }));
        }
    }
}
