//! The integration-test harness: real binaries over real gRPC on loopback, crashed with
//! `kill -9` and paused with `SIGSTOP` for real.
//!
//! # Layout
//! - [`binaries`]: builds and finds the workspace's binaries.
//! - [`server`]: [`server::TestServer`], a real `fenced` process on a free port, with
//!   `kill` (SIGKILL), `restart` on the same data directory, `pause` and `resume`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod binaries;
pub mod server;
