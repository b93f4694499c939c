//! Spawning a workspace binary that announces its address on stdout, shared by the
//! harnesses ([`crate::server::TestServer`], [`crate::kv_server::TestKv`]).
//!
//! Each binary prints a line `<banner><addr>` once it serves (any lines before it are kept:
//! other addresses it listens on); the harness waits for that line, so tests synchronise
//! on readiness instead of sleeping.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::binary;

/// What a started binary said on stdout up to its "listening" line.
pub struct Started {
    /// The process.
    pub child: Child,
    /// The address of its "listening" line.
    pub addr: SocketAddr,
    /// The lines it printed before that one (e.g. `fenced sessions on <addr>`).
    pub earlier_lines: Vec<String>,
}

/// Spawns workspace binary `name` with `args` and waits (up to a generous minute) for its
/// stdout line `<banner><addr>`. Keeps draining stdout afterwards so the child never
/// blocks on a full pipe. Panics if the line never comes.
pub fn spawn_listening(name: &str, banner: &str, args: &[OsString]) -> Started {
    spawn_listening_with_env(name, banner, args, &[])
}

/// [`spawn_listening`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
pub fn spawn_listening_with_env(
    name: &str,
    banner: &str,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> Started {
    try_spawn_listening_with_env(name, banner, args, env).unwrap_or_else(|why| panic!("{why}"))
}

/// As [`spawn_listening_with_env`], saying why the binary did not come up (it exited, or
/// did not report listening within 60 s) instead of panicking.
pub fn try_spawn_listening_with_env(
    name: &str,
    banner: &str,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<Started, String> {
    let mut child = Command::new(binary(name))
        .args(args)
        // Only a test that asks for it gets a systemd notification socket, never the one
        // the test run itself may have inherited.
        .env_remove("NOTIFY_SOCKET")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // After the default log filter, so that a caller's own filter wins.
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    let banner = banner.to_string();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut earlier_lines = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(&banner) {
                let _ = sender.send((addr.trim().to_string(), earlier_lines));
                break;
            }
            earlier_lines.push(line);
        }
        for _ in lines {}
    });
    let (addr, earlier_lines) = match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(announced) => announced,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(format!(
                "{name} did not report listening within 60 s (exit: {status:?})"
            ));
        }
    };
    Ok(Started {
        child,
        addr: addr.parse().expect("a socket address"),
        earlier_lines,
    })
}

/// Runs workspace binary `name` on a free port and a fresh data directory with `args`,
/// expecting it to refuse to start: asserts it exits with a failure and returns what it
/// wrote on stderr (the reason it gives).
pub fn refused_start(name: &str, args: &[&str]) -> String {
    let data = tempfile::tempdir().expect("a temporary data directory");
    let output = Command::new(binary(name))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "{name} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Sends a signal with the `kill` command, so the harness needs no unsafe code.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A running workspace server binary (`--listen`, `--data-dir`, a `<banner><addr>` line on
/// stdout) and its data directory: the lifecycle shared by
/// [`TestServer`](crate::server::TestServer) and [`TestKv`](crate::kv_server::TestKv).
/// The process is continued and killed when this is dropped.
pub struct ServerProcess {
    /// The workspace binary's name.
    binary: &'static str,
    /// What its "listening" line starts with.
    banner: &'static str,
    /// The child process; `None` after [`ServerProcess::kill`] or [`ServerProcess::stop`].
    child: Option<Child>,
    /// Where it listens.
    addr: SocketAddr,
    /// What it printed on stdout before its "listening" line, at its latest start.
    earlier_lines: Vec<String>,
    /// The data directory, kept across restarts, removed when this is dropped.
    data_dir: PathBuf,
    /// Owns the temporary directory behind `data_dir`, when the harness made it.
    _temp: Option<tempfile::TempDir>,
    /// Extra flags passed on every start.
    extra_args: Vec<String>,
    /// Extra environment variables set on every start.
    env: Vec<(OsString, OsString)>,
}

impl ServerProcess {
    /// Starts `binary` on a fresh data directory and a free port, with extra flags.
    pub fn start(binary: &'static str, banner: &'static str, extra_args: &[&str]) -> Self {
        Self::start_with_env(binary, banner, extra_args, &[])
    }

    /// Starts `binary` on a fresh data directory and a free port, with extra flags and
    /// extra environment variables (kept for restarts).
    pub fn start_with_env(
        binary: &'static str,
        banner: &'static str,
        extra_args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let data_dir = temp.path().join("data");
        let env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(key, value)| (OsString::from(key), value.to_os_string()))
            .collect();
        let mut process = Self::spawn(binary, banner, data_dir, extra_args, env);
        process._temp = Some(temp);
        process
    }

    /// Starts `binary` on the data directory `data_dir` (which the caller owns and cleans
    /// up) and a free port, with extra flags.
    pub fn start_in(
        binary: &'static str,
        banner: &'static str,
        data_dir: PathBuf,
        extra_args: &[&str],
    ) -> Self {
        Self::spawn(binary, banner, data_dir, extra_args, Vec::new())
    }

    /// Starts `binary` on a fresh data directory, listening on `listen` (an address the
    /// caller chose beforehand, e.g. to name it in a cluster's members list), with extra
    /// flags and environment variables (kept for restarts).
    pub fn start_listening(
        binary: &'static str,
        banner: &'static str,
        listen: SocketAddr,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let data_dir = temp.path().join("data");
        let mut process =
            Self::start_listening_in(binary, banner, listen, data_dir, extra_args, env);
        process._temp = Some(temp);
        process
    }

    /// As [`ServerProcess::start_listening`], on the data directory `data_dir` (which the
    /// caller owns and cleans up).
    pub fn start_listening_in(
        binary: &'static str,
        banner: &'static str,
        listen: SocketAddr,
        data_dir: PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let listen = listen.to_string();
        let env = env
            .iter()
            .map(|(key, value)| (OsString::from(key), OsString::from(value)))
            .collect();
        Self::spawn_on(binary, banner, data_dir, &listen, extra_args, env)
    }

    fn spawn(
        binary: &'static str,
        banner: &'static str,
        data_dir: PathBuf,
        extra_args: &[&str],
        env: Vec<(OsString, OsString)>,
    ) -> Self {
        Self::spawn_on(binary, banner, data_dir, "127.0.0.1:0", extra_args, env)
    }

    fn spawn_on(
        binary: &'static str,
        banner: &'static str,
        data_dir: PathBuf,
        listen: &str,
        extra_args: &[&str],
        env: Vec<(OsString, OsString)>,
    ) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let started = spawn_server(binary, banner, &data_dir, listen, &extra_args, &env)
            .unwrap_or_else(|why| panic!("{why}"));
        ServerProcess {
            binary,
            banner,
            child: Some(started.child),
            addr: started.addr,
            earlier_lines: started.earlier_lines,
            data_dir,
            _temp: None,
            extra_args,
            env,
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

    /// The address on the stdout line starting with `prefix` that it printed before its
    /// "listening" line, at its latest start (e.g. `fenced sessions on `).
    pub fn announced(&self, prefix: &str) -> Option<SocketAddr> {
        self.earlier_lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|addr| addr.trim().parse().ok())
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills it with SIGKILL (`kill -9`): no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks it to shut down with SIGTERM and waits up to a minute for it to exit (then
    /// kills it); returns its exit status, `None` if it was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        signal(pid, "-TERM");
        match self.wait_for_exit(Duration::from_secs(60)) {
            Some(status) => Some(status),
            None => {
                let mut child = self.child.take()?;
                let _ = child.kill();
                child.wait().ok()
            }
        }
    }

    /// Waits up to `within` for it to exit by itself; its exit status, or `None` if it is
    /// still running (or was not).
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("wait works") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (if it runs) and starts it again on the same data directory and, where it
    /// is still free, the same port.
    pub fn restart(&mut self) {
        if let Err(why) = self.try_restart() {
            panic!("{why}");
        }
    }

    /// As [`ServerProcess::restart`], saying why it did not come up (it refused to start,
    /// say) instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        let listen = self.addr.to_string();
        let started = spawn_server(
            self.binary,
            self.banner,
            &self.data_dir,
            &listen,
            &self.extra_args,
            &self.env,
        )?;
        self.child = Some(started.child);
        self.addr = started.addr;
        self.earlier_lines = started.earlier_lines;
        Ok(())
    }

    /// Stops the process with SIGSTOP: it keeps its sockets but runs no code.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-STOP");
        }
    }

    /// Continues a process stopped with [`ServerProcess::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-CONT");
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Spawns a server binary on `listen` with its data directory and extra flags.
fn spawn_server(
    binary: &str,
    banner: &str,
    data_dir: &Path,
    listen: &str,
    extra_args: &[String],
    env: &[(OsString, OsString)],
) -> Result<Started, String> {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        listen.into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    args.extend(extra_args.iter().map(OsString::from));
    try_spawn_listening_with_env(binary, banner, &args, env)
}
