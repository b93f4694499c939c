//! fenced-torture: runs fenced's real processes under faults (kill -9, SIGSTOP, a bad
//! network), records every operation on one machine-wide clock, and checks the history
//! against CONTRACT.md.
//!
//! `cargo run --release -p fenced-torture -- --runs 1000` runs a thousand histories with
//! every fault mixed (`--run-ms`, `--workers`, `--locks`, `--nemesis`,
//! `--concurrent-faults` and `--fault-gap-ms` shape them); `fenced-torture check HISTORY`
//! checks a recorded one. `--cluster 3` runs the lock server as a cluster of three members
//! (the workers given all of them), and `--nemesis all` then mixes the cluster's faults
//! (`kill-leader`, `kill-follower`, `pause-leader`, `pause-follower`, `raft-net`,
//! `isolate`) with the store's and the workers'. `--weaken unfenced` (the store's gate
//! off) and `--weaken no-fdatasync` (the lock server's sync off, under power cuts) run a
//! deliberately broken system, with `--expect S5` or `--expect S1,S2` to succeed only if
//! the checker caught it.
//! A failing run is kept in `torture-failures/run-<seed>/`: `history.jsonl`,
//! `violations.txt` and `timeline.html`. `scripts/torture.sh` writes RELIABILITY.md.
//!
//! # Layout
//! - [`history`]: the history's events, one JSON object per line, on `CLOCK_BOOTTIME`.
//! - [`check`]: the checker, one module per contract rule, reading only the history.
//! - [`worker`]: a worker process: the SDK used as an application uses it, every call
//!   recorded.
//! - [`cluster`]: a cluster as the lock server: members on ports chosen before they
//!   start, a proxy in front of each raft port, and how the harness finds the leader.
//! - [`system`]: the processes of one run (lock server, store, proxies, workers), started
//!   with the shared process harness and killed on drop.
//! - [`nemesis`]: faults as a target plus an action, drawn at random and healed.
//! - [`run`]: one run from start to checked history; failing runs kept.
//! - [`summary`]: the totals of many runs, as a table and as Markdown.
//! - [`timeline`]: a failing run as an HTML page, drawn with the zombie demo's picture.
#![deny(missing_docs)]

pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod run;
pub mod summary;
pub mod system;
pub mod timeline;
pub mod worker;
