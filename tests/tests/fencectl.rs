//! `fencectl` as a real process against a real server: a command run under a lock sees its
//! token and is listed while it runs; exit codes; signals reach the command; a command
//! whose lease is cut off is killed before the server grants the lock to anyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use fenced_client::{AcquireOptions, Client};
use fenced_tests::binaries::binary;
use fenced_tests::proxy::Proxy;
use fenced_tests::server::{signal, TestServer};

/// `fencectl` with its endpoint set.
fn fencectl(endpoint: &str) -> Command {
    let mut command = Command::new(binary("fencectl"));
    command.env("FENCED_ENDPOINTS", endpoint);
    command
}

/// Runs `fencectl ARGS` to completion.
fn fencectl_output(endpoint: &str, args: &[&str]) -> Output {
    fencectl(endpoint)
        .args(args)
        .output()
        .expect("fencectl runs")
}

/// Stdout as text.
fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits for `child` to exit, up to `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("fencectl did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a file to hold a line, and returns it.
fn wait_line(path: &Path, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < limit,
            "{} not written in {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the processes a test started when it ends, even by a failed assertion: a
/// fencectl whose command ignores SIGTERM would otherwise outlive the test.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

// checks: S1, L1
#[tokio::test]
async fn lock_runs_the_command_with_its_token_and_list_shows_the_lock_while_it_runs() {
    let server = TestServer::start();
    let endpoint = server.endpoint();

    // Phase 1: the command prints its token; the lock is listed while it runs.
    let mut child = fencectl(&endpoint)
        .args([
            "lock",
            "demo",
            "--",
            "sh",
            "-c",
            "echo $FENCED_TOKEN $FENCED_LOCK; sleep 2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let (token, lock) = first.trim().split_once(' ').expect("token and lock");
    let token: u64 = token.parse().expect("a numeric token");
    assert!(token > 0);
    assert_eq!(lock, "demo");

    let table = stdout(&fencectl_output(&endpoint, &["list"]));
    let row = table
        .lines()
        .find(|line| line.starts_with("demo "))
        .unwrap_or_else(|| panic!("demo not listed:\n{table}"));
    assert!(row.contains(&format!(" {token} ")), "{row}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&fencectl_output(&endpoint, &["list", "--json"]))).unwrap();
    assert_eq!(json[0]["lock"], "demo");
    assert_eq!(json[0]["token"], token);
    assert_eq!(json[0]["held"], true);

    // Phase 2: it exits 0, and the lock is released at once (not after its TTL).
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let client = Client::connect(endpoint.clone()).await.unwrap();
    let lease = client.try_acquire("demo").await.expect("released on exit");
    assert!(lease.token().get() > token);
}

// checks: S4, S5
// Multi-threaded: the proxy's tasks run while the test blocks on files and processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_kills_the_command_before_the_server_grants_the_lock_to_anyone_else() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");

    // Phase 1: fencectl holds the lock through the proxy; its command ignores SIGTERM, so
    // only the SIGKILL can end it.
    let script = format!(
        "trap '' TERM; echo $$ > {}; exec sleep 1000",
        pid_file.display()
    );
    let mut holder = fencectl(&proxy.endpoint())
        .args(["lock", "ordered", "--ttl", "3s", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![holder.id()]);
    let pid: u32 = wait_line(&pid_file, Duration::from_secs(30))
        .parse()
        .unwrap();
    reaper.0.push(pid);
    assert!(!is_dead(pid));

    // Phase 2: fencectl is cut off from the server, so its renewals fail; a second client
    // queues for the lock, and a watcher notes when the command died.
    let rival = Client::connect(server.endpoint()).await.unwrap();
    proxy.black_hole();
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if is_dead(pid) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });
    let lease = rival
        .acquire("ordered", AcquireOptions::wait(Duration::from_secs(30)))
        .await
        .expect("the rival gets the lock once the cut-off lease expires");
    let granted_at = Instant::now();

    // Phase 3: the command was dead before the grant reached the rival.
    let died_at = watcher
        .join()
        .unwrap()
        .expect("the command died within a minute");
    assert!(
        died_at < granted_at,
        "the command was still alive {:?} after the rival got the lock",
        died_at - granted_at
    );
    assert!(lease.token().get() > 1);
    let status = wait_exit(&mut holder, Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut holder.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.code(),
        Some(fencectl::exit::LOCK_LOST),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("SIGKILL"), "stderr: {stderr}");
}

// checks: L1
#[tokio::test]
async fn lock_exit_codes_say_not_acquired_and_pass_the_command_status_through() {
    let server = TestServer::start();
    let endpoint = server.endpoint();
    let client = Client::connect(endpoint.clone()).await.unwrap();

    // The command's own status comes back; the lock is free again afterwards.
    let output = fencectl_output(&endpoint, &["lock", "codes", "--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7));
    let output = fencectl_output(
        &endpoint,
        &["lock", "codes", "--", "sh", "-c", "kill -9 $$"],
    );
    assert_eq!(output.status.code(), Some(128 + 9));

    // Held by someone else: not acquired, at once or after --wait.
    let lease = client.try_acquire("codes").await.unwrap();
    let output = fencectl_output(&endpoint, &["lock", "codes", "--", "true"]);
    assert_eq!(output.status.code(), Some(fencectl::exit::NOT_ACQUIRED));
    let output = fencectl_output(
        &endpoint,
        &["lock", "codes", "--wait", "300ms", "--", "true"],
    );
    assert_eq!(output.status.code(), Some(fencectl::exit::NOT_ACQUIRED));
    lease.release().await.unwrap();

    // A command that does not exist.
    let output = fencectl_output(&endpoint, &["lock", "codes", "--", "/nonexistent/command"]);
    assert_eq!(output.status.code(), Some(fencectl::exit::NOT_FOUND));

    // No server.
    let output = fencectl_output("http://127.0.0.1:1", &["lock", "codes", "--", "true"]);
    assert_eq!(output.status.code(), Some(fencectl::exit::UNAVAILABLE));
}

// checks: L1
#[tokio::test]
async fn signals_to_fencectl_reach_the_command_and_the_lock_is_released() {
    let server = TestServer::start();
    let endpoint = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let got = dir.path().join("got");

    let script = format!(
        "trap 'echo TERM > {got}; exit 3' TERM; echo ready > {ready}; while :; do sleep 0.05; done",
        got = got.display(),
        ready = ready.display()
    );
    let mut child = fencectl(&endpoint)
        .args(["lock", "signalled", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_line(&ready, Duration::from_secs(30));
    signal(child.id(), "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(3),
        "the command's own exit after its trap"
    );
    assert_eq!(wait_line(&got, Duration::from_secs(5)), "TERM");
    let client = Client::connect(endpoint).await.unwrap();
    client
        .try_acquire("signalled")
        .await
        .expect("released when the command exited");
}
