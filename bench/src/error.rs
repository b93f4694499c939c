//! The benchmark's one error type: every variant names the system and the step that failed.

use std::time::Duration;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration cannot be run.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A client could not connect.
    #[error("{system}: cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The system under test.
        system: &'static str,
        /// Where it was supposed to listen.
        endpoint: String,
        /// The transport's error, in words.
        reason: String,
    },
    /// A gRPC call failed.
    #[error("{system}: {op} failed: {status}")]
    Rpc {
        /// The system under test.
        system: &'static str,
        /// The call, e.g. `Acquire`.
        op: &'static str,
        /// The status the server (or the transport) answered.
        status: Box<tonic::Status>,
    },
    /// A Redis command failed.
    #[error("redis: {op} failed: {source}")]
    Redis {
        /// The command or script, e.g. `acquire script`.
        op: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A call got no answer in time.
    #[error("{system}: {op} got no answer within {after:?}")]
    Timeout {
        /// The system under test.
        system: &'static str,
        /// The call.
        op: &'static str,
        /// How long the benchmark waited.
        after: Duration,
    },
    /// The server answered something the benchmark cannot use.
    #[error("{system}: unexpected answer to {op}: {detail}")]
    Unexpected {
        /// The system under test.
        system: &'static str,
        /// The call.
        op: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A local file operation failed (the fdatasync probe, /proc).
    #[error("{what}: {source}")]
    Io {
        /// What the benchmark was doing.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    /// A failed gRPC call of `system`.
    pub fn rpc(system: &'static str, op: &'static str, status: tonic::Status) -> BenchError {
        BenchError::Rpc {
            system,
            op,
            status: Box::new(status),
        }
    }

    /// A failed Redis command.
    pub fn redis(op: &'static str, source: redis::RedisError) -> BenchError {
        BenchError::Redis { op, source }
    }
}
