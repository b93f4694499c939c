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
use fenced_tests::member::{FakeMember, Role};
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

/// Kills the processes a test started when it fails: a fencectl whose command ignores
/// SIGTERM would otherwise outlive the test. A process is killed only while its command
/// line still names what the test started (`fencectl` or `sleep`), so a pid reused since
/// is left alone.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for pid in &self.0 {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("fencectl") || cmdline.contains("sleep")
            });
            if ours && !is_dead(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
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
    // only the SIGKILL can end it. With a 6 s TTL (5.89 s usable), the SIGKILL is due
    // about 1 s before fencectl's local deadline, which is itself before the server's
    // expiry: a wide margin for a loaded machine.
    let script = format!(
        "trap '' TERM; echo $$ > {}; exec sleep 1000",
        pid_file.display()
    );
    let mut holder = fencectl(&proxy.endpoint())
        .args(["lock", "ordered", "--ttl", "6s", "--", "sh", "-c", &script])
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

// checks: L3 (anyone may see who holds a lock, with which token)
#[tokio::test]
async fn list_pages_through_every_lock_and_describe_and_check_show_one() {
    // Pages of two locks, so that five need three pages.
    let server = TestServer::start_with(&["--max-list-page", "2"]);
    let endpoint = server.endpoint();
    let client = Client::connect(endpoint.clone()).await.unwrap();
    let mut leases = Vec::new();
    for name in ["page/a", "page/b", "page/c", "page/d", "page/e", "other/x"] {
        leases.push(client.try_acquire(name).await.unwrap());
    }

    // list: every page, in name order, under the prefix only.
    let output = fencectl_output(&endpoint, &["list", "page/", "--json"]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["lock"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["page/a", "page/b", "page/c", "page/d", "page/e"]);
    let table = stdout(&fencectl_output(&endpoint, &["list"]));
    assert_eq!(table.lines().count(), 1 + 6, "{table}");
    assert!(table.starts_with("LOCK"), "{table}");

    // describe: a held lock and a free one.
    let token = leases[0].token().get();
    let output = fencectl_output(&endpoint, &["describe", "page/a", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["held"], true);
    assert_eq!(json["token"], token);
    assert!(json["remaining_ms"].as_u64().unwrap() > 0);
    let output = fencectl_output(&endpoint, &["describe", "page/free"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("page/free"), "{}", stdout(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&fencectl_output(
        &endpoint,
        &["describe", "page/free", "--json"],
    )))
    .unwrap();
    assert_eq!(json["held"], false);

    // check: the holder's token is current (exit 0), any other is not (exit 1).
    let output = fencectl_output(&endpoint, &["check", "page/a", &token.to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let stale = (token - 1).max(1);
    let other = if stale == token { token + 100 } else { stale };
    let output = fencectl_output(
        &endpoint,
        &["check", "page/a", &other.to_string(), "--json"],
    );
    assert_eq!(output.status.code(), Some(fencectl::exit::NOT_CURRENT));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["current"], false);
    assert_eq!(json["current_token"], token);
}

// checks: L3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events_as_json_and_counts_time_left_down_in_its_table() {
    let server = TestServer::start();
    let endpoint = server.endpoint();
    let client = Client::connect(endpoint.clone()).await.unwrap();

    // Phase 1: --json, one event per line.
    let mut watcher = fencectl(&endpoint)
        .args(["watch", "w/", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![watcher.id()]);
    let lines = lines_of(watcher.stdout.take().unwrap());
    // The stream may open after the first changes: change the lock until one is seen.
    let start = Instant::now();
    let first = loop {
        let lease = client.try_acquire("w/x").await.unwrap();
        lease.release().await.unwrap();
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            break line;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no event");
    };
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["lock"], "w/x");
    let lease = client.try_acquire("w/x").await.unwrap();
    let token = lease.token().get();
    let seen = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an event");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["token"] == token {
            break event;
        }
    };
    assert_eq!(seen["kind"], "acquired");
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Phase 2: the table, redrawn every second, counts the holder's time left down.
    let mut table = fencectl(&endpoint)
        .args(["watch", "w/"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _reaper_table = Reaper(vec![table.id()]);
    let lines = lines_of(table.stdout.take().unwrap());
    let mut left = Vec::new();
    while left.len() < 2 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a table");
        if line.starts_with("w/x ") {
            let time_left = line.split_whitespace().nth(3).unwrap().to_string();
            left.push(fencectl::duration::parse(&time_left).unwrap());
        }
    }
    assert!(left[1] < left[0], "time left did not go down: {left:?}");
    let _ = table.kill();
    let _ = table.wait();
    drop(lease);
}

// checks: S1 (each leader's token, its term, is higher than the last)
#[tokio::test]
async fn elect_runs_each_candidate_as_leader_in_turn_with_a_higher_term() {
    let server = TestServer::start();
    let endpoint = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let terms = dir.path().join("terms");
    let script = format!("echo $FENCED_TOKEN >> {}; sleep 1", terms.display());
    let mut first = fencectl(&endpoint)
        .args(["elect", "e/leader", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let mut second = fencectl(&endpoint)
        .args(["elect", "e/leader", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![first.id(), second.id()]);
    assert!(wait_exit(&mut first, Duration::from_secs(60)).success());
    assert!(wait_exit(&mut second, Duration::from_secs(60)).success());
    let text = std::fs::read_to_string(&terms).unwrap();
    let terms: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(terms.len(), 2, "{text}");
    assert!(terms[1] > terms[0], "{terms:?}");
    // Both resigned: the lock is free.
    let client = Client::connect(endpoint).await.unwrap();
    client.try_acquire("e/leader").await.expect("resigned");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = fencectl_output("http://127.0.0.1:1", &["completions", shell]);
        assert!(output.status.success(), "{shell}");
        let script = stdout(&output);
        assert!(script.contains("fencectl"), "{shell}");
        assert!(script.contains("describe"), "{shell}");
    }
}

/// The lines a process prints, on a channel (read on a thread of their own).
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

// checks: L3 (the same commands over TLS)
#[tokio::test]
async fn tls_flags_reach_a_tls_server_and_host_port_means_https_with_a_ca() {
    let pki = fenced_tests::pki::TestPki::new();
    let files = tempfile::tempdir().unwrap();
    let cert = files.path().join("server.pem");
    let key = files.path().join("server.key");
    let ca = files.path().join("ca.pem");
    std::fs::write(&cert, &pki.server_cert).unwrap();
    std::fs::write(&key, &pki.server_key).unwrap();
    std::fs::write(&ca, &pki.ca).unwrap();
    let server = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let endpoint = format!("localhost:{}", server.addr().port());
    let ca = ca.to_str().unwrap();

    let output = fencectl(&endpoint)
        .args([
            "--tls-ca",
            ca,
            "lock",
            "tls/demo",
            "--",
            "sh",
            "-c",
            "echo $FENCED_TOKEN",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).trim().parse::<u64>().unwrap() > 0);
    let output = fencectl(&endpoint)
        .args(["--tls-ca", ca, "list", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // Without the CA, host:port is plaintext, which a TLS server does not speak.
    let output = fencectl(&endpoint).args(["list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(fencectl::exit::UNAVAILABLE));
}

// checks: S4, S7
#[tokio::test]
async fn a_fencectl_frozen_past_its_lease_kills_the_command_as_soon_as_it_wakes() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pid_file.display());
    let mut holder = fencectl(&server.endpoint())
        .args(["lock", "frozen", "--ttl", "2s", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![holder.id()]);
    let pid: u32 = wait_line(&pid_file, Duration::from_secs(30))
        .parse()
        .unwrap();
    reaper.0.push(pid);

    // Phase 1: fencectl is frozen for twice the TTL; its command runs on (nothing can stop
    // it meanwhile: that is what the token and the gate are for, S5).
    signal(holder.id(), "-STOP");
    std::thread::sleep(Duration::from_secs(4));
    assert!(!is_dead(pid), "the command runs while fencectl is frozen");

    // Phase 2: fencectl wakes past its deadline and kills the command at once.
    signal(holder.id(), "-CONT");
    let status = wait_exit(&mut holder, Duration::from_secs(30));
    assert!(is_dead(pid));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut holder.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.code(),
        Some(fencectl::exit::LOCK_LOST),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("SIGKILL"), "stderr: {stderr}");
}

// checks: L3 (fencectl given a cluster's members reaches the leader past a member where
// nothing listens and one that is not the leader, at an address it was never given)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_are_a_cluster_whose_leader_every_command_follows() {
    let server = TestServer::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    let lease = client.try_acquire("cluster/held").await.unwrap();
    let follower = FakeMember::start(Role::NotLeader(Some(server.addr().to_string()))).await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    // Comma-separated, `host:port` without a scheme for one of them.
    let endpoints = format!("{closed},{}", follower.endpoint());
    let output = tokio::task::spawn_blocking(move || {
        fencectl_output(&endpoints, &["describe", "cluster/held", "--json"])
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["token"], lease.token().get());
    assert!(follower.refused() >= 1);

    // The flag, repeated, works as the list does.
    let follower_endpoint = follower.endpoint();
    let token = lease.token().get().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary("fencectl"))
            .env_remove("FENCED_ENDPOINTS")
            .args(["--endpoints", &format!("http://{closed}")])
            .args(["--endpoints", &follower_endpoint])
            .args(["check", "cluster/held", &token, "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["current"], true);
}
