//! The zombie-leader demo, made of real processes: the lock server `fenced`, the gated
//! store `fenced-kv`, and two workers (`alpha`, `beta`) using the client SDK. Alpha leads,
//! is frozen with `SIGSTOP` right before a write leaves, loses its lease, and wakes up to
//! send its stale write; the gate turns it away. Run again with the gate off, the same
//! write silently overwrites the new leader's data.
//!
//! Run it with `cargo run --release -p fenced-demo --example zombie`.
//!
//! # Layout
//! - [`scenario`]: the story, step by step, synchronised on events (never on sleeps), and
//!   its [`scenario::Report`].
//! - [`process`]: child processes whose stdout lines are events, and signals.
//! - [`worker`]: the line protocol between the orchestrator and a worker process.
//! - [`timeline`]: the narrated, timestamped record of a run.
//! - [`html`]: the timeline as a self-contained HTML page.
//! - [`credentials`]: the secured story's credentials (bearer tokens or client
//!   certificates), policy and signing key (`--secure`); [`pki`]: a throwaway CA.
//! - [`cargo`]: a nested `cargo build` for the other binaries, without rebuilding the world.
//! - `src/bin/fenced-demo-worker.rs`: the worker process.
#![deny(missing_docs)]

pub mod cargo;
pub mod credentials;
pub mod html;
pub mod pki;
pub mod process;
pub mod scenario;
pub mod timeline;
pub mod worker;
