//! [`TestKv`]: a real `fenced-kv` process on a free loopback port, with `kill` (SIGKILL),
//! `restart` on the same data directory, and `stop` (SIGTERM, graceful).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};

use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use tonic::transport::Channel;

use crate::process::{signal, spawn_listening};

/// A running `fenced-kv` binary and its data directory.
pub struct TestKv {
    /// The child process; `None` after [`TestKv::kill`].
    child: Option<Child>,
    /// Where it listens.
    addr: SocketAddr,
    /// The data directory, kept across restarts, removed when the harness is dropped.
    data_dir: PathBuf,
    /// Owns the temporary directory behind `data_dir`.
    _temp: tempfile::TempDir,
    /// Extra flags passed on every start (e.g. `--unfenced`).
    extra_args: Vec<String>,
}

impl TestKv {
    /// Starts `fenced-kv` on a fresh data directory and a free port.
    pub fn start() -> TestKv {
        Self::start_with(&[])
    }

    /// Starts `fenced-kv` with extra flags (e.g. `--max-value-bytes 1024`).
    pub fn start_with(extra_args: &[&str]) -> TestKv {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let data_dir = temp.path().join("kv-data");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(&data_dir, "127.0.0.1:0", &extra_args);
        TestKv {
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

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A connected client.
    pub async fn client(&self) -> GatedKvClient<Channel> {
        GatedKvClient::connect(self.endpoint())
            .await
            .expect("fenced-kv accepts connections")
    }

    /// Kills it with SIGKILL (`kill -9`): no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM and waits for it to exit; returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "-TERM");
        child.wait().ok()
    }

    /// Kills it (if it runs) and starts it again on the same data directory and, where it
    /// is still free, the same port.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let (child, addr) = spawn(&self.data_dir, &listen, &self.extra_args);
        self.child = Some(child);
        self.addr = addr;
    }
}

impl Drop for TestKv {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data_dir: &Path, listen: &str, extra_args: &[String]) -> (Child, SocketAddr) {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        listen.into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    args.extend(extra_args.iter().map(OsString::from));
    spawn_listening("fenced-kv", "fenced-kv listening on ", &args)
}
