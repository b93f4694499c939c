//! fenced-torture: runs fenced's real processes under faults (kill -9, SIGSTOP, a bad
//! network), records every operation on one machine-wide clock, and checks the history
//! against CONTRACT.md.
//!
//! `cargo run --release -p fenced-torture -- --runs 100` runs a hundred histories with
//! every fault mixed; `fenced-torture check HISTORY` checks a recorded one.
//!
//! # Layout
//! - [`history`]: the history's events, one JSON object per line, on `CLOCK_BOOTTIME`.
//! - [`check`]: the checker, one module per contract rule, reading only the history.
//! - [`worker`]: a worker process: the SDK used as an application uses it, every call
//!   recorded.
//! - [`system`]: the processes of one run (lock server, store, proxies, workers), started
//!   with the shared process harness and killed on drop.
//! - [`nemesis`]: faults as a target plus an action, drawn at random and healed.
//! - [`run`]: one run from start to checked history; failing runs kept.
//! - [`summary`]: the totals of many runs, as a table and as Markdown.
//! - [`timeline`]: a failing run as an HTML page, drawn with the zombie demo's picture.
#![deny(missing_docs)]

pub mod check;
pub mod history;
pub mod nemesis;
pub mod run;
pub mod summary;
pub mod system;
pub mod timeline;
pub mod worker;
