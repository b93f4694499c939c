//! [`Members`]: the three server processes of one cluster under test, started from command
//! lines the system's module builds, killed with SIGKILL and restarted on the same data
//! directory and ports.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use rand::Rng;
use tokio::process::{Child, Command};

use crate::error::BenchError;

/// How many members a cluster under test has.
pub const CLUSTER_SIZE: usize = 3;

/// Loopback ports for the members, picked once and kept across restarts.
#[derive(Debug, Default)]
pub struct PortPicker {
    /// Every port handed out so far.
    taken: BTreeSet<u16>,
}

impl PortPicker {
    /// A loopback port nothing listens on now, below the kernel's ephemeral range (so no
    /// client connection takes it while its member is down), not handed out before.
    pub fn pick(&mut self) -> Result<u16, BenchError> {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let port = rng.random_range(20_000..32_000);
            if !self.taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                self.taken.insert(port);
                return Ok(port);
            }
        }
        Err(BenchError::Config(
            "no free loopback port found between 20000 and 32000".to_string(),
        ))
    }
}

/// One member's command: the program, its arguments, its log file.
#[derive(Clone, Debug)]
pub struct MemberCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (the same at every start: a restart reuses the data directory).
    pub args: Vec<String>,
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
    /// Where its standard output and error are appended.
    pub log: PathBuf,
}

/// The processes of one cluster.
pub struct Members {
    /// The system's name, for errors.
    system: &'static str,
    /// Each member's command, by index (member `i` is index `i`).
    commands: Vec<MemberCommand>,
    /// The running process of each member, `None` while it is killed.
    children: Vec<Option<Child>>,
}

impl Members {
    /// Starts every member of `commands`.
    pub fn start(
        system: &'static str,
        commands: Vec<MemberCommand>,
    ) -> Result<Members, BenchError> {
        let mut members = Members {
            system,
            children: commands.iter().map(|_| None).collect(),
            commands,
        };
        for index in 0..members.commands.len() {
            members.restart(index)?;
        }
        Ok(members)
    }

    /// Member `index`'s process id, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children.get(index)?.as_ref()?.id()
    }

    /// Every running member's process id.
    pub fn pids(&self) -> Vec<u32> {
        (0..self.children.len())
            .filter_map(|i| self.pid(i))
            .collect()
    }

    /// Starts member `index` (again) with its command; it must not be running.
    pub fn restart(&mut self, index: usize) -> Result<(), BenchError> {
        let command = &self.commands[index];
        let io_error = |what: String| {
            move |source: std::io::Error| BenchError::Io {
                what: format!("{what} ({:?})", command.program),
                source,
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&command.log)
            .map_err(io_error(format!(
                "{}: opening the log {:?}",
                self.system, command.log
            )))?;
        let stderr = log
            .try_clone()
            .map_err(io_error(format!("{}: sharing the log", self.system)))?;
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true);
        // No FENCED_* variable reaches a member (FENCED_NO_FDATASYNC would turn its sync off).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FENCED_") {
                process.env_remove(name);
            }
        }
        for (name, value) in &command.env {
            process.env(name, value);
        }
        let child = process.spawn().map_err(io_error(format!(
            "{}: starting member {}",
            self.system,
            index + 1
        )))?;
        self.children[index] = Some(child);
        Ok(())
    }

    /// Kills member `index` with SIGKILL and waits until it is gone; answers when the
    /// signal was sent.
    pub async fn kill(&mut self, index: usize) -> Result<Instant, BenchError> {
        let Some(mut child) = self.children[index].take() else {
            return Err(BenchError::Config(format!(
                "{}: member {} is not running",
                self.system,
                index + 1
            )));
        };
        let sent = Instant::now();
        let reaped = async {
            child.start_kill()?;
            child.wait().await
        };
        reaped.await.map_err(|source| BenchError::Io {
            what: format!("{}: killing member {}", self.system, index + 1),
            source,
        })?;
        Ok(sent)
    }

    /// Whether every member still runs (none exited by itself).
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        for (index, child) in self.children.iter_mut().enumerate() {
            if let Some(child) = child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError::Unexpected {
                        system: self.system,
                        op: "member process",
                        detail: format!(
                            "member {} exited by itself ({status}); see {:?}",
                            index + 1,
                            self.commands[index].log
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops every member (SIGKILL) and waits for them.
    pub async fn stop(&mut self) {
        for index in 0..self.children.len() {
            if self.children[index].is_some() {
                // A member that cannot be killed is gone already.
                let _ = self.kill(index).await;
            }
        }
    }
}

/// Member `index`'s data directory under `dir`.
pub fn data_dir(dir: &Path, system: &str, index: usize) -> PathBuf {
    dir.join(format!("{system}-{}", index + 1))
}
