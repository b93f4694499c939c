//! fenced, the lease server: grants leases on named locks with fencing tokens that only go
//! up, persisted in sled so that they survive crashes (see `CONTRACT.md`).
//!
//! # Layout
//! - [`table`]: the lock table, a pure state machine (commands and time in; replies,
//!   durable writes, handoffs and events out). No I/O, no clock, no tasks.
//! - [`clock`]: the monotonic time the table is driven with.
//! - [`store`]: persistence with group commit, the facade the engine uses: [`journal`]
//!   (one append + `fdatasync` per commit) ahead of sled, which [`checkpoint`] fills in the
//!   background; [`record`]: each write as a key and a value; [`recovery`]: opening the
//!   data directory and replaying the journal over sled at start; [`frame`]: the record
//!   framing and torn-tail rule the journal and the raft log share.
//! - [`marker`]: a token floor beside sled's files, so a silently reset database is caught.
//! - [`engine`]: the table and the store behind one lock; nothing is shown before it is
//!   durable. [`event_log`]: the node's recent events with their revisions, which `Watch`
//!   streams start from (a cluster member's is fed as it applies entries).
//! - [`committer`]: the background tasks: group committer and lease reaper.
//! - [`serving`]: which engine answers clients (a cluster member's, only while it leads),
//!   and the not-leader refusal.
//! - [`service`]: one handler per rpc, and the gRPC `LockService` over them; [`session`]:
//!   its `Session` stream, also served over framed TCP by [`framed`]; [`watch`]: its
//!   `Watch` streams and their cap; [`convert`]: protobuf to domain and back; [`tls`]: the
//!   TLS identity both listeners serve.
//! - [`auth`]: who a client is (bearer tokens from a tokens file) and the interceptor that
//!   refuses everyone else when authentication is on; [`policy`]: what each identity may
//!   do under which lock names (the policy file); [`access`]: the caller of one request,
//!   checked against the policy by the handlers, and the holder name it gets;
//!   [`quota`]: places (Watch streams, waiting acquires) counted per identity (leases per
//!   identity are the lock table's: each lease records its [`table::LeaseOrigin`]);
//!   [`signing`]: the key that signs each grant's sequencer, if one is configured.
//! - [`audit`]: the audit log: lock events, revocations and refused calls as JSON lines.
//! - [`revocation`]: the `AdminService`: an administrator revokes a lease or force-releases
//!   a lock.
//! - [`grpc_incoming`]: the gRPC listener's connections, past their TLS handshake and
//!   HTTP/2 preface within the handshake timeout; [`admission`]: each listener's
//!   connection limit; [`throttle`]: warnings a client can trigger, at most one a second.
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, the status
//!   page and its event stream; [`telemetry`]: the metrics and their recorder.
//! - [`server`]: open and recover, start the background tasks, serve, shut down in order.
//! - [`config`], [`error`]: settings and the errors that stop the server.
//! - [`cluster`]: fenced as a member of a replicated cluster on openraft (raft log, state
//!   machine over sled's image of the records, the network, a term of service while it
//!   leads, membership); not used by the single-node server.
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod clock;
pub mod cluster;
pub mod committer;
pub mod config;
pub mod convert;
pub mod engine;
pub mod error;
pub mod event_log;
pub mod frame;
pub mod framed;
pub mod grpc_incoming;
pub mod journal;
pub mod marker;
pub mod policy;
pub mod quota;
pub mod record;
pub mod recovery;
pub mod revocation;
pub mod server;
pub mod service;
pub mod serving;
pub mod session;
pub mod signing;
pub mod store;
pub mod table;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod watch;

pub use config::Config;
pub use error::Error;
pub use server::{run, OpenServer};
