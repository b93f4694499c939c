//! [`System`]: the processes under test in one run: the lock server (one process, or the
//! members of a cluster with a TCP proxy in front of each member's raft port), the store,
//! a TCP proxy per worker between it and a single lock server, and the workers. Every
//! process is started through the shared process harness (`fenced_demo::process`), and
//! killed when the system is dropped, on success and on error alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fenced_demo::process::{start_server, Child, DemoError};
use fenced_tests::power_cut::ScratchFs;
use fenced_tests::proxy::Proxy;

use crate::history::{now, Event, HistoryError, Recorder, ServerChange};

/// Why the harness could not go on (not a finding about fenced: those are violations).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be started, signalled or killed.
    #[error(transparent)]
    Process(#[from] DemoError),
    /// The history could not be written or read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Something else on this machine failed (a directory, a file).
    #[error("{what}: {reason}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// What failed.
        reason: String,
    },
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The lock server.
    pub fenced: PathBuf,
    /// The store.
    pub kv: PathBuf,
    /// This binary, which is also the worker (`fenced-torture worker`).
    pub torture: PathBuf,
}

/// A server process (the lock server or the store) on a fixed data directory and port,
/// which a nemesis can kill, restart, stop and continue.
pub struct Server {
    /// Its target name in the history (`fenced`, `fenced-kv`).
    pub target: String,
    /// The program.
    program: PathBuf,
    /// What its "listening" line starts with (`fenced`, `fenced-kv`).
    banner: &'static str,
    /// Its flags besides `--listen` and `--data-dir`.
    flags: Vec<String>,
    /// Its data directory, kept across restarts.
    data_dir: PathBuf,
    /// Where it listens (`127.0.0.1:<port>`), the same across restarts.
    addr: String,
    /// The process, `None` while it is down.
    child: Option<Child>,
    /// Whether its stderr (logs) goes to ours.
    show_logs: bool,
}

impl Server {
    /// Starts a server on a free port and records it coming up.
    pub async fn start(
        target: &str,
        program: &Path,
        banner: &'static str,
        data_dir: PathBuf,
        flags: Vec<String>,
        show_logs: bool,
        recorder: &Recorder,
    ) -> Result<Server, HarnessError> {
        let mut server = Server {
            target: target.to_string(),
            program: program.to_path_buf(),
            banner,
            flags,
            data_dir,
            addr: "127.0.0.1:0".to_string(),
            child: None,
            show_logs,
        };
        server.spawn(recorder).await?;
        Ok(server)
    }

    /// A lock server that listens on `addr`, chosen before it starts (a cluster member,
    /// whose address the members list names), not yet started: [`Server::restart`]
    /// starts it.
    pub fn on_addr(
        target: &str,
        program: &Path,
        data_dir: PathBuf,
        addr: String,
        flags: Vec<String>,
        show_logs: bool,
    ) -> Server {
        Server {
            target: target.to_string(),
            program: program.to_path_buf(),
            banner: "fenced",
            flags,
            data_dir,
            addr,
            child: None,
            show_logs,
        }
    }

    /// The `http://` endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Spawns the process (recording `starting` before and `up` after), on the same port
    /// as before; a port taken in between is retried for a while.
    async fn spawn(&mut self, recorder: &Recorder) -> Result<(), HarnessError> {
        let mut attempts = 0;
        loop {
            recorder.record(&Event::Server {
                t: now(),
                target: self.target.clone(),
                change: ServerChange::Starting,
            })?;
            let mut args = vec![
                "--listen".to_string(),
                self.addr.clone(),
                "--data-dir".to_string(),
                self.data_dir.display().to_string(),
            ];
            args.extend(self.flags.iter().cloned());
            match start_server(
                &self.target,
                &self.program,
                &args,
                self.banner,
                self.show_logs,
            )
            .await
            {
                Ok((child, addr)) => {
                    recorder.record(&Event::Server {
                        t: now(),
                        target: self.target.clone(),
                        change: ServerChange::Up,
                    })?;
                    self.child = Some(child);
                    self.addr = addr;
                    return Ok(());
                }
                Err(DemoError::Exited { .. }) if attempts < 50 => {
                    // The port may still be held by the old process's last connections.
                    attempts += 1;
                    recorder.record(&Event::Server {
                        t: now(),
                        target: self.target.clone(),
                        change: ServerChange::Down,
                    })?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// `kill -9`, reaped, and recorded as down.
    pub async fn kill(&mut self, recorder: &Recorder) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        recorder.record(&Event::Server {
            t: now(),
            target: self.target.clone(),
            change: ServerChange::Down,
        })?;
        Ok(())
    }

    /// Starts it again on the same data directory and port.
    pub async fn restart(&mut self, recorder: &Recorder) -> Result<(), HarnessError> {
        self.spawn(recorder).await
    }

    /// `SIGSTOP`.
    pub fn pause(&self) -> Result<(), HarnessError> {
        if let Some(child) = &self.child {
            child.stop()?;
        }
        Ok(())
    }

    /// `SIGCONT`.
    pub fn resume(&self) -> Result<(), HarnessError> {
        if let Some(child) = &self.child {
            child.resume()?;
        }
        Ok(())
    }

    /// Whether the process runs (or is stopped), as far as the harness knows.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A worker process and the proxy its lock-server traffic goes through (a single lock
/// server's only: a cluster's members name each other's client addresses to the SDK,
/// which would bypass a proxy).
pub struct WorkerProcess {
    /// Its name (`w1`).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its history file.
    pub history: PathBuf,
    /// The proxy between it and a single lock server.
    pub proxy: Option<Proxy>,
    /// Until when it said it holds a token before its write (see
    /// [`crate::worker::HOLDING`]).
    pub holding_until: crate::history::Nanos,
}

/// Everything running in one run.
pub struct System {
    /// The lock server: one process (target `fenced`), or a cluster's members in id order
    /// (targets `fenced-1`, `fenced-2`, ...).
    pub lock_servers: Vec<Server>,
    /// In a cluster, the proxy in front of each member's raft port (in member order): the
    /// members list names these, so every raft message to a member passes its proxy.
    pub raft_proxies: Vec<Proxy>,
    /// The store.
    pub store: Server,
    /// The workers.
    pub workers: Vec<WorkerProcess>,
    /// The harness's own events (faults, servers, final reads).
    pub recorder: Arc<Recorder>,
    /// The filesystem under the lock server's data, when the run cuts its power.
    pub scratch: Option<ScratchFs>,
}

impl System {
    /// The proxy of the worker named `name`.
    pub fn proxy(&self, worker: usize) -> Option<&Proxy> {
        self.workers.get(worker).and_then(|w| w.proxy.as_ref())
    }

    /// Whether the lock server is a cluster.
    pub fn is_cluster(&self) -> bool {
        !self.raft_proxies.is_empty()
    }

    /// The workers holding a token before their write right now, from the lines they
    /// printed.
    pub fn holding(&mut self) -> Vec<usize> {
        let now = now();
        let mut holding = Vec::new();
        for (index, worker) in self.workers.iter_mut().enumerate() {
            while let Some(line) = worker.child.try_next_line() {
                if let Some(until) = line
                    .strip_prefix(crate::worker::HOLDING)
                    .and_then(|rest| rest.trim().parse().ok())
                {
                    worker.holding_until = until;
                }
            }
            if worker.holding_until > now {
                holding.push(index);
            }
        }
        holding
    }

    /// Points every worker's proxy at the single lock server's current address.
    pub fn retarget(&self) -> Result<(), HarnessError> {
        let Some(server) = self.lock_servers.first() else {
            return Ok(());
        };
        let addr = server.addr().parse().map_err(|e| HarnessError::Io {
            what: format!("lock server address {}", server.addr()),
            reason: format!("{e}"),
        })?;
        for worker in &self.workers {
            if let Some(proxy) = &worker.proxy {
                proxy.set_target(addr);
            }
        }
        Ok(())
    }
}
