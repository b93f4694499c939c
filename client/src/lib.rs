//! The fenced client SDK: take a lock, keep it alive in the background, notice when the
//! process was paused, and hand out the fencing token only while the lease is safely held.
//!
//! ```no_run
//! # async fn run() -> Result<(), fenced_client::Error> {
//! use fenced_client::{AcquireOptions, Client};
//! use std::time::Duration;
//!
//! let client = Client::connect("http://127.0.0.1:7070").await?;
//! let lease = client
//!     .acquire("orders/compaction", AcquireOptions::wait(Duration::from_secs(5)))
//!     .await?;
//! // Right before each guarded write: the token, or an error saying why not.
//! let token = lease.fence()?;
//! println!("writing with token {token}");
//! lease.release().await?;
//! # Ok(()) }
//! ```
//!
//! # The promise (CONTRACT S4)
//! Each lease has a *local deadline*: the instant its grant or latest confirmed renewal was
//! **sent**, plus `ttl * (1 - drift_bound) - safety_margin`, on `CLOCK_BOOTTIME` (which
//! counts through suspend). The server cannot expire the lease before it, so a token
//! handed out before it is the live holder's. Renewals go out at a third of the TTL, over
//! one `KeepAlive` stream per client, retried across reconnects. Try-once acquires and
//! releases share one `Session` stream per client ([`Config::session`]), or one connection
//! to the server's framed session listener ([`Config::framed_session`]); waiting acquires
//! are unary calls, so that dropping one leaves the server's queue (CONTRACT L2). An
//! acquire whose future is dropped hands back a grant that comes anyway, at once and in
//! the background, so that it does not keep the lock for its TTL (the one grant it cannot
//! see: [`Client::acquire`]).
//!
//! A lease is [`LeaseState::Held`], [`LeaseState::Suspect`] (a pause was detected, the
//! deadline passed, or a queued grant came late: no token until the server confirms a
//! renewal sent afterwards) or [`LeaseState::Lost`] (for good, CONTRACT S7). Nothing here
//! can stop a write already in flight when the process froze: that is the gate's job,
//! which is why every write carries the token (CONTRACT S5).
//!
//! # A cluster
//! Give every member: `Client::builder("http://a:7500").endpoints(["http://b:7500",
//! "http://c:7500"])` or [`Client::builder_for_cluster`]. The client connects to the first
//! that answers and from then on follows the leader: a member that is not the leader
//! refuses without doing anything and names the leader, and the call goes there. An
//! acquire that creates a lease carries a lease id the client chose, so when a failover
//! leaves its outcome unknown (the connection or the `Session` stream broke after it was
//! sent, or the leader's term ended mid-call) it is sent again with that id and finds its
//! own grant instead of making a second lease: a try-once acquire over the session once
//! more as a unary call, a waiting acquire with what is left of its wait (queued again at
//! the back if it was not granted yet). Every call follows at most 3 redirects and tries
//! each endpoint once; see [`ClientBuilder::endpoints`] for exactly what is sent again and
//! what is not. Renewals follow too, so a lease outlives a failover when the new leader is
//! reached before its local deadline (CONTRACT L3); [`Error::NoLeader`] says no leader was
//! reached.
//!
//! # Layout
//! - [`client`]: [`Client`], its [`ClientBuilder`] (one endpoint or a cluster's), acquire.
//! - [`inspect`]: reading the lock table: describe, list, check a token, watch a lock or a
//!   prefix; `lock_watch`: [`LockWatch`], a watch that resumes from its last revision
//!   after a failure or a failover.
//! - [`lease`]: [`Lease`]: fence, attach the token to a request, observe, release.
//! - [`cluster_admin`]: a cluster's members: list, add, remove.
//! - [`revoke`]: an administrator revokes a lease or force-releases a lock.
//! - [`election`]: [`Election`]: campaign, leader, observe, resign.
//! - [`state`]: [`LeaseState`] and the reasons for suspicion and loss.
//! - [`config`]: [`Config`] with its defaults, and [`DeadlinePolicy`], the arithmetic of S4.
//! - [`clock`]: [`Clock`], [`BootClock`] (`CLOCK_BOOTTIME`), [`ManualClock`] for tests.
//! - [`credentials`]: [`BearerToken`], sent with every call to a server with
//!   authentication on.
//! - [`error`]: [`Error`] (gRPC statuses mapped back) and [`FenceError`].
//! - `lease_state_machine`: the pure per-lease state machine (every rule, unit-tested with
//!   a hand-made clock); `shared_lease`: that machine shared between tasks, its state
//!   published on a `watch` channel.
//! - `renewer`: the renewal task and its `KeepAlive` stream.
//! - `session`: the `Session` stream (gRPC, or framed TCP) that carries try-once acquires
//!   and releases, multiplexed by request id, reopened after a failure, unary calls when
//!   the server has none; `in_flight`: the bound on a stream's requests in flight;
//!   `framed_tls`: the TLS that wraps a framed connection.
//! - `unary_acquire`: the unary `Acquire` call, sent again with its lease id after a
//!   failure that leaves its outcome unknown (a waiting one with what is left of its
//!   wait), and the release of its grant when the caller drops the call before reading it.
//! - `watchdog`: the pause watchdog's heartbeat and thread.
//! - `route`: which member of a cluster the client talks to, and how every call follows
//!   the leader there (not-leader redirects, moves to the next endpoint, what may be sent
//!   twice).
//! - `shared`: what the handles and the background work share.

pub mod client;
pub mod clock;
pub mod cluster_admin;
pub mod config;
pub mod credentials;
pub mod election;
pub mod error;
pub mod inspect;
pub mod lease;
pub mod revoke;
pub mod state;

mod framed_tls;
mod in_flight;
mod lease_state_machine;
mod lock_watch;
mod renewer;
mod route;
mod session;
mod shared;
mod shared_lease;
mod unary_acquire;
mod watchdog;

pub use client::{
    AcquireOptions, Client, ClientBuilder, Holder, LockEvent, LockEventKind, LockInfo, LockWatch,
};
pub use clock::{BootClock, Clock, ManualClock};
pub use cluster_admin::{Member, Members};
pub use config::{Config, DeadlinePolicy, FramedTls};
pub use credentials::BearerToken;
pub use election::Election;
pub use error::{Error, FenceError};
pub use fenced_types::{FencingToken, LeaseId, LockName};
pub use inspect::{ListPage, TokenCheck};
pub use lease::{Lease, LeaseStatus};
pub use revoke::Revoked;
pub use state::{LeaseState, LostReason, StateChange, SuspectReason};

#[cfg(test)]
mod tests;
