//! [`TestServer`]: a real `fenced` process on a free loopback port.
//!
//! The server prints exactly one line `fenced listening on <addr>` on stdout once recovery
//! is done and it serves; the harness waits for that line, so tests synchronise on the
//! server being ready instead of sleeping.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::process::spawn_listening;

/// A running `fenced` binary and its data directory.
pub struct TestServer {
    /// The child process; `None` after [`TestServer::kill`].
    child: Option<Child>,
    /// Where the server listens.
    addr: SocketAddr,
    /// The data directory, kept across restarts, removed when the harness is dropped.
    data_dir: PathBuf,
    /// Owns the temporary directory behind `data_dir`.
    _temp: tempfile::TempDir,
    /// Extra flags passed on every start.
    extra_args: Vec<String>,
}

impl TestServer {
    /// Starts `fenced` on a fresh data directory and a free port.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts `fenced` with extra command-line flags (e.g. `--min-ttl-ms 50`).
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let data_dir = temp.path().join("data");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(&data_dir, "127.0.0.1:0", &extra_args);
        TestServer {
            child: Some(child),
            addr,
            data_dir,
            _temp: temp,
            extra_args,
        }
    }

    /// The `http://` endpoint clients connect to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw gRPC client of the lock service, connected to this server.
    pub async fn client(
        &self,
    ) -> fenced_proto::v1::lock_service_client::LockServiceClient<tonic::transport::Channel> {
        fenced_proto::v1::lock_service_client::LockServiceClient::connect(self.endpoint())
            .await
            .expect("connects to the test server")
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL (`kill -9`): no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (if it runs) and starts it again on the same data directory and,
    /// where it is still free, the same port.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let (child, addr) = spawn(&self.data_dir, &listen, &self.extra_args);
        self.child = Some(child);
        self.addr = addr;
    }

    /// Asks the server to shut down with SIGTERM and waits (up to a minute) for it to exit;
    /// returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal(child.id(), "-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait works") {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again (after [`TestServer::kill`] or [`TestServer::terminate`]).
    pub fn start_again(&mut self) {
        self.restart();
    }

    /// Stops the server process with SIGSTOP: it keeps its sockets but runs no code.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-STOP");
        }
    }

    /// Continues a server stopped with [`TestServer::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-CONT");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Sends a signal with the `kill` command, so the harness needs no unsafe code.
pub use crate::process::signal;

/// Spawns the binary and waits (up to a generous minute) for its "listening" line.
fn spawn(data_dir: &Path, listen: &str, extra_args: &[String]) -> (Child, SocketAddr) {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        listen.into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    args.extend(extra_args.iter().map(OsString::from));
    spawn_listening("fenced", "fenced listening on ", &args)
}
