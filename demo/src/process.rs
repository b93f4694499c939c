//! Child processes whose stdout lines are events: spawn, wait for a line, signal, kill.
//! Shared by the demo and the torture harness.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;

/// Why a step of the demo could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A process could not be started.
    #[error("cannot start {what}: {reason}")]
    Spawn {
        /// Which process.
        what: String,
        /// What the OS said.
        reason: String,
    },
    /// A process did not say what was expected in time.
    #[error("{what} did not report {expected:?} within {waited:?} (last line: {last:?})")]
    Timeout {
        /// Which process.
        what: String,
        /// The report awaited.
        expected: String,
        /// How long we waited.
        waited: Duration,
        /// The last line it printed.
        last: Option<String>,
    },
    /// A process ended while we waited for it.
    #[error("{what} exited while we waited for {expected:?}")]
    Exited {
        /// Which process.
        what: String,
        /// The report awaited.
        expected: String,
    },
    /// Talking to a process or a service failed.
    #[error("{what}: {reason}")]
    Io {
        /// What we were doing.
        what: String,
        /// What failed.
        reason: String,
    },
}

/// A running child: its stdin, its stdout lines, and its pid for signals. Killed on drop.
pub struct Child {
    /// A name for messages.
    name: String,
    /// The process.
    child: tokio::process::Child,
    /// Its stdin, for commands.
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line.
    lines: mpsc::UnboundedReceiver<String>,
    /// The last line seen.
    last: Option<String>,
}

impl Child {
    /// Starts `program` with `args`; stderr goes to ours only when `show_stderr`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        show_stderr: bool,
    ) -> Result<Child, DemoError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if show_stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DemoError::Spawn {
                what: format!("{name} ({})", program.display()),
                reason: e.to_string(),
            })?;
        let stdout = child.stdout.take().ok_or_else(|| DemoError::Spawn {
            what: name.to_string(),
            reason: "no stdout pipe".to_string(),
        })?;
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Child {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            last: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends one command line.
    pub async fn send(&mut self, line: &str) -> Result<(), DemoError> {
        let io = |e: std::io::Error| DemoError::Io {
            what: format!("writing to {}", self.name),
            reason: e.to_string(),
        };
        let stdin = self.stdin.as_mut().ok_or_else(|| DemoError::Io {
            what: format!("writing to {}", self.name),
            reason: "stdin closed".to_string(),
        })?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io)?;
        stdin.flush().await.map_err(io)
    }

    /// The next line, whatever it is.
    pub async fn next_line(
        &mut self,
        timeout: Duration,
        expected: &str,
    ) -> Result<String, DemoError> {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.last = Some(line.clone());
                Ok(line)
            }
            Ok(None) => Err(DemoError::Exited {
                what: self.name.clone(),
                expected: expected.to_string(),
            }),
            Err(_) => Err(DemoError::Timeout {
                what: self.name.clone(),
                expected: expected.to_string(),
                waited: timeout,
                last: self.last.clone(),
            }),
        }
    }

    /// The next line if one has arrived, without waiting.
    pub fn try_next_line(&mut self) -> Option<String> {
        let line = self.lines.try_recv().ok()?;
        self.last = Some(line.clone());
        Some(line)
    }

    /// Sends `SIGSTOP`: the process stops running, sockets and all, until `SIGCONT`.
    pub fn stop(&self) -> Result<(), DemoError> {
        self.signal("-STOP")
    }

    /// Sends `SIGCONT`.
    pub fn resume(&self) -> Result<(), DemoError> {
        self.signal("-CONT")
    }

    /// Kills the process with `SIGKILL` (`kill -9`: no shutdown code runs, stopped or not)
    /// and waits until it is gone.
    pub async fn kill(&mut self) -> Result<(), DemoError> {
        self.child.kill().await.map_err(|e| DemoError::Io {
            what: format!("killing {}", self.name),
            reason: e.to_string(),
        })
    }

    /// Waits up to `within` for the process to exit by itself: its exit status, or `None`
    /// if it still runs.
    pub async fn wait_for_exit(
        &mut self,
        within: Duration,
    ) -> Result<Option<std::process::ExitStatus>, DemoError> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ok(Some(status)),
            Ok(Err(e)) => Err(DemoError::Io {
                what: format!("waiting for {}", self.name),
                reason: e.to_string(),
            }),
            Err(_) => Ok(None),
        }
    }

    fn signal(&self, signal: &str) -> Result<(), DemoError> {
        let pid = self.pid().ok_or_else(|| DemoError::Io {
            what: format!("signalling {}", self.name),
            reason: "the process has exited".to_string(),
        })?;
        // The `kill` command keeps this crate free of unsafe code.
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| DemoError::Io {
                what: format!("kill {signal} {pid}"),
                reason: e.to_string(),
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(DemoError::Io {
                what: format!("kill {signal} {pid}"),
                reason: format!("exit status {status}"),
            })
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A stopped process cannot die of SIGKILL until continued on some systems' views;
        // continue it first so kill_on_drop always works.
        let _ = self.resume();
    }
}

/// Starts a server binary and waits for its `<prefix> listening on <addr>` line.
pub async fn start_server(
    name: &str,
    program: &Path,
    args: &[String],
    prefix: &str,
    show_stderr: bool,
) -> Result<(Child, String), DemoError> {
    let mut child = Child::spawn(name, program, args, show_stderr)?;
    let expected = format!("{prefix} listening on ");
    loop {
        let line = child.next_line(Duration::from_secs(60), &expected).await?;
        if let Some(addr) = line.strip_prefix(&expected) {
            let addr = addr.trim().to_string();
            return Ok((child, addr));
        }
    }
}
