//! [`TestKv`]: a real `fenced-kv` process on a free loopback port. The lifecycle (`kill`
//! with SIGKILL, `restart` on the same data directory, `stop` with SIGTERM) is
//! [`ServerProcess`]'s, reached through `Deref`.

use std::ops::{Deref, DerefMut};

use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use tonic::transport::Channel;

use crate::process::ServerProcess;

/// A running `fenced-kv` binary and its data directory.
pub struct TestKv(ServerProcess);

impl TestKv {
    /// Starts `fenced-kv` on a fresh data directory and a free port.
    pub fn start() -> TestKv {
        Self::start_with(&[])
    }

    /// Starts `fenced-kv` with extra flags (e.g. `--unfenced`, `--max-value-bytes 1024`).
    pub fn start_with(extra_args: &[&str]) -> TestKv {
        TestKv(ServerProcess::start(
            "fenced-kv",
            "fenced-kv listening on ",
            extra_args,
        ))
    }

    /// Starts `fenced-kv` on the data directory `data_dir` (e.g. on a
    /// [`crate::power_cut::ScratchFs`]), with extra flags.
    pub fn start_in(data_dir: std::path::PathBuf, extra_args: &[&str]) -> TestKv {
        TestKv(ServerProcess::start_in(
            "fenced-kv",
            "fenced-kv listening on ",
            data_dir,
            extra_args,
        ))
    }

    /// A connected client.
    pub async fn client(&self) -> GatedKvClient<Channel> {
        GatedKvClient::connect(self.endpoint())
            .await
            .expect("fenced-kv accepts connections")
    }
}

impl Deref for TestKv {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl DerefMut for TestKv {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.0
    }
}
