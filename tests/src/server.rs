//! [`TestServer`]: a real `fenced` process on a free loopback port.
//!
//! The server prints the line `fenced listening on <addr>` on stdout once recovery is done
//! and it serves (after `fenced admin on <addr>` and `fenced sessions on <addr>` when it has
//! those listeners); the harness waits for that line, so tests synchronise on the
//! server being ready instead of sleeping. The lifecycle (`kill` with SIGKILL, `restart` on
//! the same data directory, `stop` with SIGTERM, `pause`/`resume`) is
//! [`ServerProcess`]'s, reached through `Deref`.

use std::ops::{Deref, DerefMut};

use crate::process::ServerProcess;

/// Sends a signal with the `kill` command, so the harness needs no unsafe code.
pub use crate::process::signal;

/// A running `fenced` binary and its data directory.
pub struct TestServer(ServerProcess);

impl TestServer {
    /// Starts `fenced` on a fresh data directory and a free port.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts `fenced` with extra command-line flags (e.g. `--min-ttl-ms 50`).
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        TestServer(ServerProcess::start(
            "fenced",
            "fenced listening on ",
            extra_args,
        ))
    }

    /// Starts `fenced` with extra flags and extra environment variables (e.g.
    /// `NOTIFY_SOCKET`), kept for restarts.
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> TestServer {
        TestServer(ServerProcess::start_with_env(
            "fenced",
            "fenced listening on ",
            extra_args,
            env,
        ))
    }

    /// Starts `fenced` on the data directory `data_dir` (e.g. on a
    /// [`crate::power_cut::ScratchFs`]), with extra flags.
    pub fn start_in(data_dir: std::path::PathBuf, extra_args: &[&str]) -> TestServer {
        TestServer(ServerProcess::start_in(
            "fenced",
            "fenced listening on ",
            data_dir,
            extra_args,
        ))
    }

    /// Starts `fenced` with its framed `Session` listener on a free port too
    /// (`--session-listen 127.0.0.1:0`), plus extra flags; see [`TestServer::session_addr`].
    pub fn start_with_sessions(extra_args: &[&str]) -> TestServer {
        let mut args = vec!["--session-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::start_with(&args)
    }

    /// The framed `Session` listener's address (the `fenced sessions on <addr>` line), if
    /// the server was started with one. After a restart it may be another port.
    pub fn session_addr(&self) -> Option<std::net::SocketAddr> {
        self.announced("fenced sessions on ")
    }

    /// Starts `fenced` with its admin HTTP listener on a free port too
    /// (`--admin-listen 127.0.0.1:0`), plus extra flags; see [`TestServer::admin_addr`].
    pub fn start_with_admin(extra_args: &[&str]) -> TestServer {
        let mut args = vec!["--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::start_with(&args)
    }

    /// The admin listener's address (the `fenced admin on <addr>` line), if the server was
    /// started with one. After a restart it may be another port.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.announced("fenced admin on ")
    }

    /// An SDK client of this server holding leases as `holder`. A scheduling hiccup on a
    /// loaded machine must not count as a process pause here (the pause tests set their
    /// own threshold), so pauses under 2 s are ignored.
    pub async fn sdk(&self, holder: &str) -> fenced_client::Client {
        fenced_client::Client::builder(self.endpoint())
            .holder(holder)
            .pause_threshold(std::time::Duration::from_secs(2))
            .connect()
            .await
            .expect("the SDK connects to the test server")
    }

    /// A raw gRPC client of the lock service, connected to this server.
    pub async fn client(
        &self,
    ) -> fenced_proto::v1::lock_service_client::LockServiceClient<tonic::transport::Channel> {
        fenced_proto::v1::lock_service_client::LockServiceClient::connect(self.endpoint())
            .await
            .expect("connects to the test server")
    }
}

impl Deref for TestServer {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.0
    }
}
