//! [`Error`]: why fenced-kv could not start, or stopped. Per-request errors are
//! `fenced_gate::Error`s, turned into gRPC statuses by the gate's one `From` impl.

/// A reason the service cannot run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The config cannot work.
    #[error("invalid config: {0}")]
    Config(String),
    /// A TLS file (`--tls-cert`, `--tls-key`, `--client-ca`) could not be read or used.
    #[error("cannot use {path} ({flag}): {problem}")]
    Tls {
        /// The flag that names it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The audit log (`--audit-log`) cannot be opened.
    #[error("{0} (--audit-log)")]
    Audit(String),
    /// The tokens file (`--auth-tokens`) could not be read or parsed.
    #[error("{0} (--auth-tokens)")]
    AuthTokens(String),
    /// The public-keys file (`--verify-keys`) could not be read or parsed.
    #[error("cannot use the public-keys file {path} (--verify-keys): {problem}")]
    VerifyKeys {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The store could not be opened or flushed.
    #[error("storage: {0}")]
    Storage(#[from] fenced_gate::Error),
    /// The gRPC server failed.
    #[error("serving failed: {0}")]
    Serve(String),
}
