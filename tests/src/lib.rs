//! The integration-test harness: real binaries over real gRPC on loopback, crashed with
//! `kill -9` and paused with `SIGSTOP` for real.
//!
//! # Layout
//! - [`binaries`]: builds and finds the workspace's binaries.
//! - [`server`]: [`server::TestServer`], a real `fenced` process on a free port, with
//!   `kill` (SIGKILL), `restart` on the same data directory, `pause` and `resume`.
//! - [`process`]: spawning a binary and waiting for its "listening" line, and
//!   [`process::ServerProcess`], the server lifecycle both harnesses share.
//! - [`cluster`]: [`cluster::TestCluster`], three `fenced` processes as one replicated
//!   cluster, and [`cluster::Router`], a raw gRPC caller that follows the leader.
//! - [`kv_server`]: [`kv_server::TestKv`], a real `fenced-kv` process, with `kill`,
//!   `restart` on the same data directory and `stop` (SIGTERM).
//! - [`http`]: a minimal HTTP/1.1 client for the admin listener: a GET, and a
//!   server-sent event stream read as it comes.
//! - [`member`]: [`member::FakeMember`], an in-process cluster member that forwards every
//!   rpc to a real server or refuses it as not the leader (naming one or not), switched
//!   on the test's command.
//! - [`proxy`]: [`proxy::Proxy`], a TCP proxy that passes, delays, resets or black-holes
//!   connections on the test's command.
//! - [`pki`]: [`pki::TestPki`], a throwaway CA and `localhost` certificate for TLS tests.
//! - [`ports`]: listen addresses below the ephemeral range, free again after a restart.
//! - [`power_cut`]: [`power_cut::ScratchFs`], an ext4 filesystem on a loop device whose
//!   power a test can cut (what was not synced is lost).
//! - [`postgres`]: [`postgres::TestPostgres`], a throwaway PostgreSQL cluster on a free
//!   loopback port, with `crash_restart` (kill -9 of the postmaster, start again) and `psql`.
//! - [`thin_disk`]: [`thin_disk::ThinDisk`], an ext4 filesystem whose disk a test can make
//!   fail writes and then work again (a failed sync, then one that reports clean).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod audit;
pub mod binaries;
pub mod cluster;
pub mod http;
pub mod kv_server;
pub mod member;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod power_cut;
pub mod process;
pub mod proxy;
pub mod server;
pub mod thin_disk;
