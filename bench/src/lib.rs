//! fenced-bench: measures fenced against etcd's Lease + Lock API and a Redis `SET NX`
//! lock, on the same machine, in one run, and prints Markdown tables with the ratios.
//!
//! Every system is driven over its own wire protocol by a thin client (fenced through its
//! generated tonic client, not the SDK, so the numbers are the server's), each benchmark
//! client on a connection of its own. The workloads run each system in turn at each size,
//! so the ratios hold on a noisy machine. Only loopback endpoints are accepted, and every
//! request loop is bounded in time and count.
//!
//! # Layout
//! - [`config`]: the run's [`Config`] (defaults, `validate()`), workloads, keepalive cases.
//! - [`error`]: the one error type, [`BenchError`].
//! - [`driver`]: the traits every system implements, [`driver::LockSystem`] and
//!   [`driver::LeaseSystem`].
//! - [`drivers`]: fenced, etcd and Redis behind those traits.
//! - [`etcd_api`]: client code generated from the part of etcd's protocol used.
//! - [`workloads`]: cycle, contended, expiry, keepalive, and the serial limit.
//! - [`latency`]: HDR histograms of latencies.
//! - [`fifo`]: grant order and exclusion checks for the contended workload.
//! - [`procstat`]: a server's CPU time and RSS from /proc.
//! - [`progress`]: the progress bar.
//! - [`runner`]: runs the workloads, systems alternating.
//! - `fake` (tests only): an in-memory lock system the workloads' tests run against.
//! - [`spread`]: the median and range of a cell's repeated runs.
//! - [`report`]: the Markdown tables: a summary, then every cell's median and range.
//! - [`failover`]: the `fenced-failover` binary's benchmark: 3-member fenced and etcd
//!   clusters whose leader is killed again and again, timed until they grant and renew.

pub mod config;
pub mod driver;
pub mod drivers;
pub mod error;
pub mod etcd_api;
pub mod failover;
#[cfg(test)]
mod fake;
pub mod fifo;
pub mod latency;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod runner;
pub mod spread;
pub mod workloads;

pub use config::Config;
pub use error::BenchError;
pub use report::Report;
pub use runner::run;
