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
#![deny(missing_docs)]

pub mod check;
pub mod history;
