//! fenced-kv: a small gRPC key-value store guarded by the fenced storage gate, the store
//! the zombie demo writes to (CONTRACT S5 over the network).
//!
//! A *resource* (what one lock guards, say `orders`) holds many keys and has one
//! high-water mark. `Put`, `Delete` and `Fence` carry a fencing token (in the body or as
//! `fencing-token` metadata); a token below the resource's mark gets `FAILED_PRECONDITION`
//! with both tokens in the message and in `fencing-token-presented` /
//! `fencing-token-current` metadata, and changes nothing. Accepted writes are on disk
//! (sled flush + fdatasync, shared by concurrent writers) before they are answered. After a
//! failed sync nothing more is acknowledged (every call gets `UNAVAILABLE` naming the
//! failure) and the process exits with a failure; a restart serves what the disk holds.
//!
//! With `--verify-keys FILE` ([`Config::verify_keys`]) the store is in sequencer mode: every
//! write must carry a sequencer (`fencing-sequencer` metadata, as the SDK's
//! `Lease::attach` sends it, or the request's `sequencer` field), the holder's token
//! signed by the lock server with its lock. It is verified offline against the file's
//! public keys before the gate is called: a bare token, a made-up or tampered sequencer, an
//! unknown key or a sequencer of another lock than the resource (a resource is guarded by
//! the lock of the same name) gets `PERMISSION_DENIED` (bytes that are no sequencer
//! `INVALID_ARGUMENT`), naming why, with the kind in `fencing-sequencer-refused`
//! metadata, and writes nothing.
//!
//! # Layout
//! - [`config`]: [`Config`] (data directory, gate limits, `--unfenced`) with `validate()`.
//! - [`server`]: [`Kv`] (open the store, serve it), and [`run`].
//! - [`service`]: [`service::KvService`], the `fenced.kv.v1.GatedKv` handlers: decode, gate, encode.
//! - [`stop`]: [`StoreStop`], how a failed sync met by any request stops the process.
//! - [`metrics`]: the metrics' names and the Prometheus recorder; [`admin`]: the admin
//!   listener (`--admin-listen`) serving `/metrics` and `/healthz`.
//! - [`audit`]: the audit log (`--audit-log`): refused calls and refused writes.
//! - [`error`]: [`Error`], why the service could not start or stopped.
//!
//! Besides `GatedKv`, the gRPC port serves the standard health service (`grpc.health.v1`):
//! SERVING while the store works, NOT_SERVING once shutdown starts or a failed sync stopped
//! the store.
//!
//! The binary (`src/main.rs`) parses flags (and a `--config` file), prints
//! `fenced-kv admin on <addr>` when it has an admin listener and then
//! `fenced-kv listening on <addr>` once it serves, tells systemd `READY=1` then, and shuts
//! down gracefully on SIGINT / SIGTERM.
#![deny(missing_docs)]

pub mod admin;
pub mod audit;
pub mod config;
pub mod error;
pub mod metrics;
pub mod server;
pub mod service;
pub mod stop;

pub use config::Config;
pub use error::Error;
pub use server::{run, Kv};
pub use stop::StoreStop;
